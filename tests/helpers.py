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
