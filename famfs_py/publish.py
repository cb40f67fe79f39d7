"""Writing a new famfs file whole, for famfs_py.arrow.write_table and famfs_py.numpy.save:
`write_new(path, size, fill)` creates `path`, hands `fill` a binary file object to write
exactly `size` bytes into, and publishes the file for other hosts.

The file is created through the master's mount (`open(O_CREAT|O_EXCL)`, writes, `fsync`):
the daemon logs a file created this way only once it is complete, its data flushed first,
so no other host ever sees a part of it (the commit of creating through the master's mount).
An existing file is refused (FileExistsError): famfs files are never rewritten whole. Only
the master creates files (a client's mount answers EROFS). If `fill` fails, the file is
removed before its commit: nothing is published.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import BinaryIO

Fill = Callable[[BinaryIO], None]


def write_new(path: str | os.PathLike[str], size: int, fill: Fill, *, mode: int = 0o644) -> None:
    """Create famfs file `path` of exactly `size` bytes written by `fill(file)`, published
    whole as the module's docstring says. `mode` is masked by the umask."""
    name = os.fspath(path)
    if size <= 0:
        raise ValueError(f"{name}: famfs files hold at least one byte")
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    with open(fd, "wb") as f:
        try:
            fill(f)
            written = f.tell()
            if written != size:
                raise OSError(errno.EIO, f"{name}: wrote {written} bytes, expected {size}")
            f.flush()
        except BaseException:
            _drop(name)  # a file not yet logged can go: nothing of it is published
            raise
        os.fsync(f.fileno())  # the commit: logged now, complete


def _drop(name: str) -> None:
    try:
        os.unlink(name)
    except OSError:
        pass  # the daemon drops a pending file that failed; nothing more to do here
