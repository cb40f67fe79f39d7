"""Writing a new famfs file whole, for famfs_py.arrow.write_table and famfs_py.numpy.save:
`write_new(path, size, fill)` creates `path`, hands `fill` a binary file object to write
exactly `size` bytes into, and publishes the file for other hosts.

How the file is made depends on what the master's mount offers:

- **created through the mount** (`open(O_CREAT|O_EXCL)`, writes, `fsync`): the daemon logs a
  file created this way only once it is complete, its data flushed first, so no other host
  ever sees a part of it (the commit of creating through the master's mount, issue 24);
- **a mount that refuses creation** (EPERM: a famfs-py whose daemon does not create through
  the mount) gets the `creat` op instead: the file is allocated and logged at its final size
  first, then its bytes are stored straight into its device memory and flushed. Publication
  is then **not atomic**: another host can see the file, still zeros or partly written,
  before `write_new` returns. Readers that must not see that wait for `write_new` to
  return on the master (e.g. a marker file written after it).

Either way an existing file is refused (FileExistsError): famfs files are never rewritten
whole. Only the master creates files. If `fill` fails, a file created through the mount is
removed before its commit (nothing published); one made by the creat op stays, logged, with
what was written of it.
"""

from __future__ import annotations

import errno
import io
import os
from collections.abc import Callable
from typing import BinaryIO

from famfs_py import channel, protocol
from famfs_py.api import open_mapped
from famfs_py.errors import FamfsError

Fill = Callable[[BinaryIO], None]


class MemoryWriter(io.RawIOBase):
    """A write-only binary file over a writable buffer (a mapped file's memory)."""

    def __init__(self, memory: memoryview) -> None:
        super().__init__()
        self._memory = memory
        self.position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: object) -> int:
        source = memoryview(data).cast("B")  # type: ignore[arg-type]
        end = self.position + len(source)
        if end > len(self._memory):
            raise OSError(
                errno.EFBIG, f"writing past the file's end ({end} > {len(self._memory)} bytes)"
            )
        self._memory[self.position : end] = source
        self.position = end
        return len(source)

    def tell(self) -> int:
        return self.position


def write_new(path: str | os.PathLike[str], size: int, fill: Fill, *, mode: int = 0o644) -> str:
    """Create famfs file `path` of exactly `size` bytes written by `fill(file)`, published as
    the module's docstring says. Returns how: "created" (through the mount, atomic) or
    "creat-op" (not atomic). `mode` is masked by the umask."""
    name = os.fspath(path)
    if size <= 0:
        raise ValueError(f"{name}: famfs files hold at least one byte")
    umask = os.umask(0)
    os.umask(umask)
    try:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    except PermissionError as exc:
        if exc.errno != errno.EPERM:
            raise
        _write_by_creat_op(name, size, fill, mode & ~umask)
        return "creat-op"
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
    return "created"


def _drop(name: str) -> None:
    try:
        os.unlink(name)
    except OSError:
        pass  # the daemon drops a pending file that failed; nothing more to do here


def _write_by_creat_op(name: str, size: int, fill: Fill, mode: int) -> None:
    if os.path.lexists(name):
        raise FileExistsError(errno.EEXIST, f"{name} exists (famfs files are never rewritten)")
    where = channel.locate(name)
    try:
        with channel.Channel(where.mountpoint) as chan:
            chan.call(protocol.Creat(where.relpath, size, mode))
    except FamfsError as exc:
        raise OSError(exc.errno or errno.EIO, exc.message) from None
    with open_mapped(name, "r+") as mapped, memoryview(mapped) as memory:
        writer = MemoryWriter(memory)
        fill(writer)  # type: ignore[arg-type]
        if writer.position != size:
            raise OSError(errno.EIO, f"{name}: wrote {writer.position} bytes, expected {size}")
        mapped.flush()
