"""Readiness: telling whoever waits for a mount that it answers (or why it never will).

Three listeners, one protocol: the `famfs-py mount` parent waiting on a pipe (`PipeReadiness`
in the daemon, `wait_for_daemon` in the parent), a person at a terminal (`ConsoleReadiness`,
for `mount --foreground`), and systemd (`SystemdReadiness`: READY=1, STATUS=, WATCHDOG=1, STOPPING=1
through famfs_py.daemon.systemd's notifier).
"""

from __future__ import annotations

import json
import logging
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from famfs_py.errors import FamfsError

log = logging.getLogger(__name__)

STATUS_INTERVAL = 2.0  # seconds between checks whether STATUS= needs refreshing


class Readiness(Protocol):
    """Whoever waits for the mount. One that keeps talking while the mount serves (systemd:
    STATUS= and watchdog pings) also has `async def supervise(self, summary)`, run as a task
    of the daemon's nursery, so it stops with the mount and stalls when the event loop does.
    """

    def ready(self, summary: str) -> None: ...
    def failed(self, message: str, exit_code: int) -> None: ...
    def stopping(self) -> None: ...


@dataclass(frozen=True)
class PipeWord:
    """The one line a daemon writes on the readiness pipe: mounted (`summary`), or why not
    (`message`, and the exit code the `famfs-py mount` parent exits with)."""

    ok: bool
    summary: str = ""
    message: str = ""
    exit_code: int = 1

    def encode(self) -> bytes:
        if self.ok:
            body: dict[str, object] = {"ok": True, "summary": self.summary}
        else:
            body = {"ok": False, "message": self.message, "exit_code": self.exit_code}
        return (json.dumps(body) + "\n").encode()

    @classmethod
    def decode(cls, line: bytes) -> PipeWord:
        body = json.loads(line)
        if body.get("ok"):
            return cls(True, summary=str(body.get("summary")))
        return cls(
            False, message=str(body.get("message")), exit_code=int(body.get("exit_code") or 1)
        )


class PipeReadiness:
    """Tells the waiting `famfs-py mount` parent how the mount went, once."""

    def __init__(self, fd: int) -> None:
        self.fd: int | None = fd

    def _send(self, word: PipeWord) -> None:
        if self.fd is None:
            return
        try:
            os.write(self.fd, word.encode())
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None

    def ready(self, summary: str) -> None:
        self._send(PipeWord(True, summary=summary))

    def failed(self, message: str, exit_code: int) -> None:
        print(f"famfs-py mount: {message}", file=sys.stderr, flush=True)
        self._send(PipeWord(False, message=message, exit_code=exit_code))

    def stopping(self) -> None:
        pass


class ConsoleReadiness:
    """Tells the person at the terminal (or the journal, with priority prefixes)."""

    def __init__(self, journal: bool = False) -> None:
        self.info, self.error = ("<6>", "<3>") if journal else ("", "")

    def ready(self, summary: str) -> None:
        print(f"{self.info}famfs-py mount: mounted ({summary})", file=sys.stderr, flush=True)

    def failed(self, message: str, exit_code: int) -> None:
        print(f"{self.error}famfs-py mount: {message}", file=sys.stderr, flush=True)

    def stopping(self) -> None:
        pass


class SystemdReadiness:
    """`Readiness` for `famfs-py mount --systemd` (Type=notify): READY=1 once the mount answers,
    STATUS= lines a person can read, STOPPING=1, and - through `supervise`, a task in the
    daemon's nursery - STATUS= refreshes and WATCHDOG=1 pings. The pings come from the event
    loop itself, so a stuck loop stops them and systemd's watchdog fires."""

    def __init__(self, status_interval: float = STATUS_INTERVAL) -> None:
        from famfs_py.daemon import systemd

        self.notifier = systemd.Notifier(os.environ.get(systemd.NOTIFY_SOCKET_ENV))
        self.watchdog = systemd.watchdog_interval()
        self.status_interval = status_interval
        systemd.forget_environment()  # like sd_notify(unset_environment=1)
        self._status: str | None = None
        self._ready = False
        self._stopping = False
        if not self.notifier.enabled:
            log.info("--systemd: %s is not set; not notifying anyone", systemd.NOTIFY_SOCKET_ENV)

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

    async def supervise(self, summary: Callable[[], str]) -> None:
        """Run while the mount serves: refresh STATUS= and ping the watchdog."""
        import trio

        if not self.notifier.enabled:
            return
        async with trio.open_nursery() as nursery:
            if self.watchdog is not None:
                log.info("watchdog: pinging every %.3gs", self.watchdog / 2)
                nursery.start_soon(self._ping_watchdog, self.watchdog / 2)
            nursery.start_soon(self._refresh_status, summary)

    async def _ping_watchdog(self, period: float) -> None:
        import trio

        while True:
            self.notifier.send("WATCHDOG=1")
            await trio.sleep(period)

    async def _refresh_status(self, summary: Callable[[], str]) -> None:
        import trio

        while True:
            await trio.sleep(self.status_interval)
            if not self._ready or self._stopping:
                continue
            text = status_text(summary())
            if text != self._status:
                self._status = text
                self.notifier.send(text)


def _one_line(text: str) -> str:
    return " ".join(text.split())  # a newline would start another KEY= line


def status_text(summary: str) -> str:
    return f"STATUS=mounted: {_one_line(summary)}"


# -- the parent's side of the pipe ------------------------------------------------------------
@dataclass(frozen=True)
class DaemonLog:
    """The daemon's log file, and where this attempt's lines start in it (the file is
    appended to by every mount of the same mount point)."""

    path: Path
    start: int

    def lines(self, limit: int = 8) -> list[str]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.start)
                text = f.read().decode(errors="replace")
        except OSError:
            return []
        return text.splitlines()[-limit:]


def wait_for_daemon(
    proc: subprocess.Popen[bytes], read_fd: int, daemon_log: DaemonLog, timeout: float
) -> str:
    """Wait for the daemon's word on the pipe: returns the mount's summary, or raises
    FamfsError with the reason (and this attempt's log lines, the reason first)."""
    buffer = b""
    deadline = time.monotonic() + timeout
    try:
        while b"\n" not in buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                proc.terminate()
                raise FamfsError(
                    f"the daemon did not report within {timeout:.0f}s (see {daemon_log.path})"
                )
            readable, _, _ = select.select([read_fd], [], [], left)
            if not readable:
                continue
            chunk = os.read(read_fd, 4096)
            if not chunk:
                break
            buffer += chunk
    finally:
        os.close(read_fd)
    if not buffer:
        code = proc.wait(timeout=10)
        lines = daemon_log.lines()
        reason = next((line for line in reversed(lines) if "famfs-py mount:" in line), None)
        shown = ([reason] if reason else []) + [line for line in lines if line != reason]
        raise FamfsError(
            f"the daemon exited (status {code}) before the mount was ready; "
            f"its log {daemon_log.path} says:\n" + "\n".join(shown)
            if shown
            else f"the daemon exited (status {code}) before the mount was ready and logged "
            f"nothing ({daemon_log.path})"
        )
    word = PipeWord.decode(buffer.splitlines()[0])
    if not word.ok:
        proc.wait(timeout=30)  # failures leave nothing behind: wait for the claim release
        raise FamfsError.relayed(word.message, word.exit_code)
    return word.summary
