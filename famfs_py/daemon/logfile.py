"""The daemon's log file, bounded: a background daemon's stderr is its log file (appended to);
once that file passes its bound it is renamed to `<file>.1` (replacing an older one) and a new
file takes its place, so the log never holds more than twice the bound, whatever floods it.
Under systemd the journal bounds the log and none of this applies.
"""

from __future__ import annotations

import logging
import os
import stat
import sys

MAX_BYTES_ENV = "FAMFS_PY_LOG_MAX_BYTES"
DEFAULT_MAX_BYTES = 16 << 20


def max_bytes() -> int:
    try:
        return max(4096, int(os.environ.get(MAX_BYTES_ENV, DEFAULT_MAX_BYTES)))
    except ValueError:
        return DEFAULT_MAX_BYTES


class BoundedStderrLog(logging.StreamHandler):
    """Log records to stderr; when stderr is a file past `limit` bytes, rotate it (stdout
    too, which shares it)."""

    def __init__(self, limit: int | None = None) -> None:
        super().__init__(sys.stderr)
        self.limit = max_bytes() if limit is None else limit

    def emit(self, record: logging.LogRecord) -> None:
        super().emit(record)
        try:
            st = os.fstat(2)
            if stat.S_ISREG(st.st_mode) and st.st_size > self.limit:
                self._rotate()
        except OSError:
            pass  # logging must never take the daemon down

    def _rotate(self) -> None:
        path = os.readlink("/proc/self/fd/2")
        if not path.startswith("/") or path.endswith(" (deleted)"):
            return
        os.replace(path, path + ".1")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        try:
            sys.stderr.flush()
            sys.stdout.flush()
            os.dup2(fd, 2, inheritable=True)
            os.dup2(fd, 1, inheritable=True)
        finally:
            os.close(fd)
