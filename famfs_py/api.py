"""Files as memory: `open_mapped(path)` maps a famfs file's device memory into this process.

The result is a `MappedFile`: a buffer (memoryview, `numpy.frombuffer`, slicing) whose bytes
*are* the file's bytes in device memory: no page cache, no copy, and stores are seen by every
host that maps the same memory. Every file is one contiguous run: a file of several extents,
or an interleaved file, is laid out piece by piece in this process's address space
(famfs_py.mapping), every mapping aligned as device dax requires.

Closing (or leaving the `with` block) while views such as numpy arrays are still alive
succeeds: the memory is unmapped when the last of them is released.

Who gets it: a caller the file's mode and owner allow (and the directories above it), who
could also open the device itself (root, or the device node's owner or group): a mapping is
made from a descriptor of the device, and whoever holds one could map any file. Anyone else
gets PermissionError naming the group to join, and can use the file through the mount (read
and write it, or mmap it there).

Removal: when the device announces removal, the daemon tells every holder; the mapping is
then replaced by inaccessible memory (touching it faults, as touching a removed device's
pages does) and the methods here raise OSError(EIO).
"""

from __future__ import annotations

import errno
import os
import socket
import threading
from typing import overload

from famfs_py import channel, protocol, wire
from famfs_py.dax import cache
from famfs_py.dax.memory import MemoryFault, Region, copy_out
from famfs_py.errors import FamfsError
from famfs_py.fs.fmap import FileMap
from famfs_py.mapping import layout_file, request_map

MODES = ("r", "r+")


class MappedFile(Region):
    """A famfs file's device memory, mapped. Use `open_mapped` to make one; `len()` is the
    file's size."""

    path: str
    filemap: FileMap
    cache_policy: cache.Policy  # whether flush()/invalidate() run the cache instructions
    _channel: channel.Channel | None
    _lock: threading.Lock

    @property
    def pieces(self) -> list[tuple[int, int, int]]:
        """(file offset, length, device offset) of each contiguous piece, in file order."""
        return [(p.file_offset, p.length, p.dev_offset) for p in self.filemap.pieces]

    @overload
    def __getitem__(self, key: int) -> int: ...
    @overload
    def __getitem__(self, key: slice) -> bytes: ...
    def __getitem__(self, key: int | slice) -> int | bytes:
        """Like mmap: an int for an index, bytes for a slice (a Python copy: a bad page
        kills the process; `read_range` is the safe copy)."""
        with memoryview(self) as view:
            item = view[key]
            return item if isinstance(item, int) else bytes(item)

    def __setitem__(self, key: int | slice, value: int | bytes | bytearray | memoryview) -> None:
        with memoryview(self) as view:
            view[key] = value  # type: ignore[index,assignment]

    def read_range(self, offset: int, length: int) -> bytes:
        """Copy file bytes out with a kernel copy: a bad page raises OSError(EIO) here
        instead of SIGBUS."""
        self._check_range(offset, length)
        buf = bytearray(length)
        try:
            copy_out(self.address + offset, buf)
        except MemoryFault as exc:
            raise OSError(errno.EIO, f"{self.path}: memory error at {offset + exc.offset}") from exc
        return bytes(buf)

    def flush(self, offset: int = 0, size: int | None = None) -> None:
        """Make this host's stores to [offset, offset+size) visible to other hosts: write this
        CPU's cache lines of the range back to memory (CLWB/CLFLUSHOPT/CLFLUSH, then a fence;
        see famfs_py.dax.cache). Call it after storing data another host will read.

        Does nothing where the mount says memory is coherent (`famfs-py status` shows which
        is in force)."""
        end = self._check_range(offset, size)
        self.cache_policy.flush(self, offset, end - offset)

    def invalidate(self, offset: int = 0, size: int | None = None) -> None:
        """Drop this CPU's cached copy of [offset, offset+size) (written back first if dirty),
        so that the next loads read what other hosts stored. Call it before reading data
        another host wrote (and flushed). A no-op where memory is coherent (see `flush`)."""
        end = self._check_range(offset, size)
        self.cache_policy.invalidate(self, offset, end - offset)

    def _check_range(self, offset: int, size: int | None) -> int:
        if self.revoked:
            raise OSError(errno.EIO, f"{self.path}: the device was removed")
        if self.closed:
            raise ValueError(f"{self.path}: the mapping is closed")
        end = len(self) if size is None else offset + size
        if offset < 0 or end > len(self) or end < offset:
            raise ValueError(f"range {offset}..{end} is outside {self.path} ({len(self)})")
        return end

    def _watch(self, chan: channel.Channel) -> None:
        """Runs on a thread of its own: withdraw the mapping when the daemon says so."""
        while True:
            try:
                data = chan.sock.recv(4096)
            except OSError:
                return
            if not data:
                return
            if wire.decode_event(data) == wire.EVENT_REVOKE:
                with self._lock:
                    self.revoke()

    def close(self) -> bool:
        """Stop watching and unmap (at once, or when the last view is released)."""
        chan, self._channel = self._channel, None
        if chan is not None:
            try:  # wakes the watch thread's recv (a close alone leaves it blocked for good)
                chan.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            chan.close()
        with self._lock:
            return super().close()

    def __enter__(self) -> MappedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "revoked" if self.revoked else ("closed" if self.closed else "open")
        return f"<MappedFile {self.path!r} {len(self)} bytes {state}>"


def open_mapped(path: str | os.PathLike[str], mode: str = "r") -> MappedFile:
    """Map famfs file `path` ("r": read-only, "r+": read-write) straight onto its device
    memory. Raises PermissionError (EACCES) when the file's mode and owner do not allow it,
    or when this process could not open the device itself (see the module's docstring),
    OSError(EROFS) for "r+" where data is read-only (a client mounted without --rw), and
    OSError(EIO) for a poisoned file or a removed device."""
    if mode not in MODES:
        raise ValueError(f"mode must be 'r' or 'r+', not {mode!r}")
    write = mode == "r+"
    name = os.fspath(path)
    try:
        chan, grant, fd = request_map(name, write=write, watch=True)
    except FamfsError as exc:
        code = exc.errno or errno.EIO
        kind = PermissionError if code in (errno.EACCES, errno.EPERM) else OSError
        raise kind(code, exc.message) from None
    try:
        filemap = FileMap(grant.fmap, grant.size)
        policy = cache.policy_of_grant(grant.flush, fd)
        layout = layout_file(fd, filemap, writable=write, align=grant.align)
    except BaseException:
        chan.close()
        raise
    finally:
        os.close(fd)
    mapped = MappedFile(
        layout.map_address, layout.map_length, layout.offset, layout.size, readonly=not write
    )
    mapped.path = name
    mapped.filemap = filemap
    mapped.cache_policy = policy
    mapped._lock = threading.Lock()
    mapped._channel = chan
    threading.Thread(
        target=mapped._watch, args=(chan,), name=f"famfs-map {name}", daemon=True
    ).start()
    return mapped


def flush(path: str | os.PathLike[str], offset: int = 0, length: int | None = None) -> int:
    """`famfs-py flush` from Python, for a file in a famfs-py mount: the mount's daemon
    writes back and evicts this host's CPU cache lines of bytes [offset, offset+length) of
    the file (the rest of it if length is None), then this host's page cache of it (dirty
    pages of shared mappings written back first), and tells the other hosts the file
    changed. Afterwards this host's descriptors and mappings of the file read memory. Needs
    only read permission on the file. Returns the cache lines touched (0 where flushing is
    off); OSError (ENOENT, EACCES, EIO...) naming the file otherwise."""
    name = os.fspath(path)
    try:
        where = channel.locate(name)
        with channel.Channel(where.mountpoint) as chan:
            reply = chan.call(protocol.Flush(where.relpath, offset, length))
    except FamfsError as exc:
        code = exc.errno or errno.EIO
        kind = PermissionError if code in (errno.EACCES, errno.EPERM) else OSError
        raise kind(code, f"{name}: {exc.message}") from None
    return reply.lines
