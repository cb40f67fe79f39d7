"""Small test helpers shared by several test modules."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

PAGE = 4096
ZERO_PAGE = bytes(PAGE)


def fingerprint(path: Path) -> str:
    """A hash of a (sparse) file's content: equal iff no byte changed. Reads only the data
    segments, page by page, and skips zero pages (pages a read allocated do not count), so
    a mostly empty 4 GiB device is quick."""
    digest = hashlib.blake2b()
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
            for pos in range(start - start % PAGE, end, PAGE):
                chunk = os.pread(fd, PAGE, pos)
                if chunk != ZERO_PAGE:
                    digest.update(f"@{pos}".encode())
                    digest.update(chunk)
            offset = end
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
