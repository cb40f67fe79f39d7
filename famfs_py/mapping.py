"""A famfs file's device memory mapped into this process, through the mount's daemon.

The daemon answers a `map` request with the file's fmap and a descriptor of the device; each
extent (or strip) is mapped on its own. Bytes move only by kernel copies (readv into a view,
/proc/self/mem for reads), so a bad page is an error, never a SIGBUS in this process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from famfs_py import omf
from famfs_py.dax.memory import DeviceMemory
from famfs_py.fs.fmap import FileMap


def fmap_from_reply(reply: dict[str, Any]) -> omf.Fmap:
    if reply["kind"] == "interleaved":
        strips = tuple(omf.Extent(s["offset"], s["length"]) for s in reply["strips"])
        return omf.InterleavedFmap(reply["nstrips"], reply["chunk_size"], strips)
    return omf.SimpleFmap(tuple(omf.Extent(e["offset"], e["length"]) for e in reply["extents"]))


class MappedFile:
    """Per-extent mappings of one file, addressed by file offset."""

    def __init__(self, reply: dict[str, Any], device_fd: int, *, writable: bool) -> None:
        self.path = reply["path"]
        self.size = int(reply["size"])
        self.fmap = fmap_from_reply(reply)
        self.filemap = FileMap(self.fmap, self.size)
        self.writable = writable
        self._maps: list[tuple[int, DeviceMemory]] = []  # (device offset, mapping)
        try:
            for ext in omf.fmap_extents(self.fmap):
                memory = DeviceMemory(device_fd, ext.length, writable=writable, offset=ext.offset)
                self._maps.append((ext.offset, memory))
        except BaseException:
            self.close()
            raise
        finally:
            os.close(device_fd)

    def _locate(self, dev_offset: int, length: int) -> tuple[DeviceMemory, int]:
        for start, memory in self._maps:
            if start <= dev_offset and dev_offset + length <= start + memory.size:
                return memory, dev_offset - start
        raise ValueError(f"device range {dev_offset:#x}+{length:#x} is not mapped")

    def pieces(
        self, offset: int = 0, length: int | None = None
    ) -> Iterator[tuple[int, memoryview]]:
        """(file offset, view) for file bytes [offset, offset+length), in file order.
        Hand the views to the kernel (os.readv, os.write); never copy them in Python."""
        length = self.size - offset if length is None else length
        position = offset
        for dev, n in self.filemap.ranges(offset, length):
            memory, within = self._locate(dev, n)
            yield position, memory.view(within, n)
            position += n

    def readinto(self, offset: int, buf: bytearray | memoryview) -> None:
        """Copy file bytes [offset, offset+len(buf)) out (a kernel copy; EIO on a bad page)."""
        target = memoryview(buf).cast("B")
        pos = 0
        for dev, n in self.filemap.ranges(offset, len(target)):
            memory, within = self._locate(dev, n)
            memory.readinto(within, target[pos : pos + n])
            pos += n

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Copy bytes into the file at `offset` (a kernel copy)."""
        source = memoryview(data).cast("B")
        pos = 0
        for dev, n in self.filemap.ranges(offset, len(source)):
            memory, within = self._locate(dev, n)
            memory.write(within, source[pos : pos + n])
            pos += n

    def close(self) -> None:
        for _, memory in self._maps:
            memory.close()
        self._maps = []

    def __enter__(self) -> MappedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_file(path: str, *, write: bool) -> MappedFile:
    """Map the famfs file at `path`, asking the daemon of the mount that holds it."""
    from famfs_py import channel

    where = channel.locate(path)
    with channel.Channel(where.mountpoint) as chan:
        reply, fds = chan.call_fds("map", path=where.relpath, write=write)
    return MappedFile(reply, fds[0], writable=write)


def copy_into(mapped: MappedFile, src_fd: int) -> int:
    """Fill the file from `src_fd` (from its offset 0) by kernel copies into device memory."""
    done = 0
    for file_offset, view in mapped.pieces():
        filled = 0
        while filled < len(view):
            n = os.preadv(src_fd, [view[filled:]], file_offset + filled)
            if n <= 0:
                raise EOFError(f"source ended at byte {file_offset + filled} of {mapped.size}")
            filled += n
        done += filled
    return done


def first_difference(mapped: MappedFile, src_fd: int, chunk: int = 4 << 20) -> int | None:
    """File offset of the first byte that differs from `src_fd`, or None if equal."""
    ours = bytearray(chunk)
    offset = 0
    while offset < mapped.size:
        n = min(chunk, mapped.size - offset)
        mapped.readinto(offset, memoryview(ours)[:n])
        theirs = os.pread(src_fd, n, offset)
        if len(theirs) != n or theirs != ours[:n]:
            for i in range(min(len(theirs), n)):
                if theirs[i] != ours[i]:
                    return offset + i
            return offset + min(len(theirs), n)
        offset += n
    return None
