"""Talking to systemd: the sd_notify datagram protocol, the daemon's readiness and watchdog as
systemd sees them, and log lines the journal files at the right priority.

No library: a notification is one datagram of `KEY=value` lines sent to $NOTIFY_SOCKET (a path,
or an abstract name written `@name`); the watchdog interval comes from $WATCHDOG_USEC (for the
process named by $WATCHDOG_PID, when set).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Callable, Mapping

import trio

log = logging.getLogger(__name__)

NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"
WATCHDOG_USEC_ENV = "WATCHDOG_USEC"
WATCHDOG_PID_ENV = "WATCHDOG_PID"
JOURNAL_STREAM_ENV = "JOURNAL_STREAM"
STATUS_INTERVAL = 2.0  # seconds between checks whether STATUS= needs refreshing

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


def _one_line(text: str) -> str:
    return " ".join(text.split())  # a newline would start another KEY= line


def status_text(summary: str) -> str:
    return f"STATUS=mounted: {_one_line(summary)}"


class SystemdReadiness:
    """`Readiness` for `famfs-py mount --systemd` (Type=notify): READY=1 once the mount answers,
    STATUS= lines a person can read, STOPPING=1, and - through `supervise`, a task in the
    daemon's nursery - STATUS= refreshes and WATCHDOG=1 pings. The pings come from the event
    loop itself, so a stuck loop stops them and systemd's watchdog fires."""

    def __init__(self, status_interval: float = STATUS_INTERVAL) -> None:
        self.notifier = Notifier(os.environ.get(NOTIFY_SOCKET_ENV))
        self.watchdog = watchdog_interval()
        self.status_interval = status_interval
        # like sd_notify(unset_environment=1): nothing we start may talk for us
        for name in (NOTIFY_SOCKET_ENV, WATCHDOG_USEC_ENV, WATCHDOG_PID_ENV):
            os.environ.pop(name, None)
        self._status: str | None = None
        self._ready = False
        self._stopping = False
        if not self.notifier.enabled:
            log.info("--systemd: %s is not set; not notifying anyone", NOTIFY_SOCKET_ENV)

    # -- Readiness -----------------------------------------------------------------------
    def ready(self, summary: str) -> None:
        self._ready = True
        self._status = status_text(summary)
        self.notifier.send("READY=1", self._status)
        log.info("ready: %s", summary)

    def failed(self, message: str, exit_code: int) -> None:
        # the one line a user acts on, at error priority; systemd shows STATUS= next to it
        sys.stderr.write(f"<3>famfs-py mount: {message}\n")
        sys.stderr.flush()
        self.notifier.send(f"STATUS=failed: {_one_line(message)}")

    def stopping(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        self.notifier.send("STOPPING=1", "STATUS=unmounting")

    # -- tasks in the daemon's nursery ---------------------------------------------------
    async def supervise(self, summary: Callable[[], str]) -> None:
        """Run while the mount serves: refresh STATUS= and ping the watchdog."""
        if not self.notifier.enabled:
            return
        async with trio.open_nursery() as nursery:
            if self.watchdog is not None:
                log.info("watchdog: pinging every %.3gs", self.watchdog / 2)
                nursery.start_soon(self._ping_watchdog, self.watchdog / 2)
            nursery.start_soon(self._refresh_status, summary)

    async def _ping_watchdog(self, period: float) -> None:
        while True:
            self.notifier.send("WATCHDOG=1")
            await trio.sleep(period)

    async def _refresh_status(self, summary: Callable[[], str]) -> None:
        while True:
            await trio.sleep(self.status_interval)
            if not self._ready or self._stopping:
                continue
            text = status_text(summary())
            if text != self._status:
                self._status = text
                self.notifier.send(text)
