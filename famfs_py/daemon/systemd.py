"""Talking to systemd: the sd_notify datagram protocol, the watchdog interval systemd asks for,
and log lines the journal files at the right priority (readiness itself, READY=1 and the
watchdog pings, is famfs_py.daemon.readiness.SystemdReadiness).

No library: a notification is one datagram of `KEY=value` lines sent to $NOTIFY_SOCKET (a path,
or an abstract name written `@name`); the watchdog interval comes from $WATCHDOG_USEC (for the
process named by $WATCHDOG_PID, when set).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Mapping

log = logging.getLogger(__name__)

NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"
WATCHDOG_USEC_ENV = "WATCHDOG_USEC"
WATCHDOG_PID_ENV = "WATCHDOG_PID"
JOURNAL_STREAM_ENV = "JOURNAL_STREAM"

# syslog priorities (sd-daemon.h SD_ERR, SD_WARNING, ...) by logging level, highest first
_PRIORITIES = (
    (logging.CRITICAL, 2),
    (logging.ERROR, 3),
    (logging.WARNING, 4),
    (logging.INFO, 6),
)
_DEBUG_PRIORITY = 7


def syslog_priority(levelno: int) -> int:
    for level, priority in _PRIORITIES:
        if levelno >= level:
            return priority
    return _DEBUG_PRIORITY


class JournalFormatter(logging.Formatter):
    """`<priority>logger: message` on every line (a traceback too): journald reads the prefix
    as the line's priority and adds the timestamp and pid itself."""

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        lines = super().format(record).splitlines() or [""]
        return "\n".join(prefix + line for line in lines)


def stderr_is_journal() -> bool:
    """True when stderr is the journal stream systemd gave us ($JOURNAL_STREAM is the
    `device:inode` of that stream; a child whose stderr was redirected must not match)."""
    value = os.environ.get(JOURNAL_STREAM_ENV, "")
    device, _, inode = value.partition(":")
    try:
        st = os.fstat(sys.stderr.fileno())
        return (st.st_dev, st.st_ino) == (int(device), int(inode))
    except (ValueError, OSError, AttributeError):
        return False


def _notify_address(value: str) -> str | None:
    if value.startswith("@"):
        return "\0" + value[1:]  # an abstract socket
    if value.startswith("/"):
        return value
    return None  # e.g. vsock: not for a local daemon


class Notifier:
    """Sends sd_notify messages; does nothing when not started by a service manager."""

    def __init__(self, socket_path: str | None) -> None:
        self.address = _notify_address(socket_path) if socket_path else None
        if socket_path and self.address is None:
            log.warning("%s=%s: unsupported address, not notifying", NOTIFY_SOCKET_ENV, socket_path)
        self._sock: socket.socket | None = None
        self._last_errno: int | None = None  # warn once per kind of failure, not per ping

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *lines: str) -> bool:
        """Send one message (a datagram of newline-separated `KEY=value` lines). Never blocks:
        if systemd cannot take it now, it is dropped and logged."""
        if self.address is None:
            return False
        message = "\n".join(lines).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(message, socket.MSG_DONTWAIT, self.address)
        except OSError as exc:
            if exc.errno != self._last_errno:
                log.warning("could not notify systemd (%s): %s", lines[0], exc.strerror or exc)
            self._last_errno = exc.errno
            return False
        self._last_errno = None
        return True


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """The watchdog interval in seconds systemd asked this process for, or None."""
    env = os.environ if environ is None else environ
    usec = env.get(WATCHDOG_USEC_ENV, "")
    pid = env.get(WATCHDOG_PID_ENV, "")
    try:
        interval = int(usec)
        if pid and int(pid) != os.getpid():
            return None  # meant for another process (we were started by the service's main)
    except ValueError:
        return None
    return interval / 1e6 if interval > 0 else None


def forget_environment() -> None:
    """Like sd_notify(unset_environment=1): nothing this process starts may talk for it."""
    for name in (NOTIFY_SOCKET_ENV, WATCHDOG_USEC_ENV, WATCHDOG_PID_ENV):
        os.environ.pop(name, None)
