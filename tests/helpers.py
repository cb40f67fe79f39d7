"""Small test helpers shared by several test modules."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_BLOCK = 1 << 20
_ZERO = bytes(_BLOCK)


def fingerprint(path: Path) -> str:
    """A hash of a (sparse) file's content: equal iff no byte changed. Reads only the data
    segments, so a mostly empty 4 GiB device is quick."""
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        digest.update(str(size).encode())
        offset = 0
        while offset < size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            pos = start - start % _BLOCK
            while pos < end:
                chunk = os.pread(fd, _BLOCK, pos)
                if chunk.strip(b"\0"):
                    digest.update(f"@{pos}".encode())
                    digest.update(chunk)
                pos += len(chunk)
            offset = max(end, pos)
    finally:
        os.close(fd)
    return digest.hexdigest()


def as_user(uid: int, action) -> str:
    """Run `action()` in a forked child whose uid and gid are `uid` (no supplementary
    groups). Returns "ok <result>" or "error <errno> <message>"."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        try:
            os.close(read_fd)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            try:
                text = f"ok {action()}"
            except Exception as exc:
                text = f"error {getattr(exc, 'errno', None)} {exc}"
            os.write(write_fd, text.encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as f:
        text = f.read()
    os.waitpid(pid, 0)
    return text
