"""A famfs file's device memory in this process: the client side of the `map` op, and the
kernel-copy loops every command uses to fill, read and compare files.

`layout_file` maps a file's pieces (extents, or interleaved chunks) side by side in one
reserved, aligned range of this process's address space, so that the file is one run of
memory; famfs_py.api builds the public zero-copy view on it, and `FileMemory` (used by
`creat -r`, `verify`, `chkread`) copies through it. Every mapping respects the device's
alignment (dax.memory). `Segment`s are runs of file bytes in memory; `fill_from`,
`first_difference`, `read_segments` and `write_segments` move bytes through them by kernel
copies only, for FileMemory and for cp's whole-device mapping alike.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from famfs_py import channel, omf, protocol
from famfs_py.dax import cache
from famfs_py.dax.memory import (
    DeviceMemory,
    Region,
    align_down,
    align_up,
    copy_in,
    copy_out,
    map_range,
    reserve,
    unmap,
)
from famfs_py.errors import ProtocolError
from famfs_py.fs.fmap import FileMap, Piece
from famfs_py.replies import FileMapReply

COMPARE_CHUNK = 4 << 20


class CannotLayOut(OSError):
    """The device's alignment keeps the file's pieces from sitting side by side."""


@dataclass(frozen=True)
class Layout:
    """A file mapped into this process: the reserved range (what unmapping releases), and
    where file byte 0 sits in it."""

    map_address: int
    map_length: int
    offset: int
    size: int

    @property
    def address(self) -> int:
        return self.map_address + self.offset


def layout_file(fd: int, filemap: FileMap, *, writable: bool, align: int) -> Layout:
    """Map every piece of `filemap` from device descriptor `fd` so that file byte i sits at
    `address + i`. Each piece's mapping is widened to whole multiples of `align`, as device
    dax requires: on a filesystem of 4 KiB allocation units (mkfs --4k) that range holds
    neighbouring files too (whoever may map the device may map them anyway); the Region
    built on the layout exposes the file's bytes only. CannotLayOut: pieces that do not
    line up alike within `align` (chunks smaller than the alignment) cannot sit side by
    side."""
    pieces = filemap.pieces
    if not pieces:
        raise OSError(errno.EINVAL, "the file has no memory to map")
    lead = pieces[0].dev_offset % align  # file byte 0 sits this far into the range
    spans: list[tuple[int, int, int]] = []  # (offset in the range, device offset, length)
    for piece in pieces:
        dev_start = align_down(piece.dev_offset, align)
        dev_end = align_up(piece.dev_offset + piece.length, align)
        start = lead + piece.file_offset - (piece.dev_offset - dev_start)
        if start % align or (spans and start < spans[-1][0] + spans[-1][2]):
            raise CannotLayOut(
                errno.EINVAL,
                f"the device maps memory in {_size_text(align)} units, and the file's pieces "
                f"do not line up alike within them (file offset {piece.file_offset:#x} is at "
                f"device offset {piece.dev_offset:#x}), so the file cannot be one run of "
                f"memory: use a device aligned to {_size_text(_fitting_align(pieces))}"
                f", or read the file through the mount",
            )
        spans.append((start, dev_start, dev_end - dev_start))
    total = spans[-1][0] + spans[-1][2]
    base = reserve(total, align)
    try:
        for start, dev, length in spans:
            map_range(fd, length, offset=dev, writable=writable, align=align, address=base + start)
    except BaseException:
        unmap(base, total)
        raise
    return Layout(base, total, lead, filemap.size)


def _fitting_align(pieces: Sequence[Piece]) -> int:
    """The largest alignment under which every piece lines up as the first does."""
    deltas = [p.dev_offset - p.file_offset - pieces[0].dev_offset for p in pieces]
    return min((d & -d for d in deltas if d), default=1 << 30)


def _size_text(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 else f"{n >> 10} KiB"


@dataclass(frozen=True)
class Segment:
    """File bytes [file_offset, file_offset + len(view)) at `address` in this process.
    Hand `view` to the kernel only (os.preadv, os.write); never copy it in Python."""

    file_offset: int
    address: int
    view: memoryview


def device_segments(mem: DeviceMemory, filemap: FileMap) -> list[Segment]:
    """A file's segments in a mapping of the whole device."""
    out = []
    position = 0
    for dev, n in filemap.ranges(0, filemap.size):
        out.append(Segment(position, mem.base + dev, mem.view(dev, n)))
        position += n
    return out


def _overlaps(
    segments: Sequence[Segment], offset: int, length: int
) -> Iterator[tuple[Segment, int, int, int]]:
    """(segment, offset within it, offset within the caller's buffer, length) for file bytes
    [offset, offset+length)."""
    end = offset + length
    for seg in segments:
        seg_end = seg.file_offset + len(seg.view)
        lo, hi = max(offset, seg.file_offset), min(end, seg_end)
        if lo < hi:
            yield seg, lo - seg.file_offset, lo - offset, hi - lo


def read_segments(segments: Sequence[Segment], offset: int, buf: bytearray | memoryview) -> None:
    """Copy file bytes [offset, offset+len(buf)) out (kernel copies; MemoryFault on a bad
    page, with offsets relative to the copy)."""
    target = memoryview(buf).cast("B")
    for seg, within, at, n in _overlaps(segments, offset, len(target)):
        copy_out(seg.address + within, target[at : at + n])


def write_segments(
    segments: Sequence[Segment], offset: int, data: bytes | bytearray | memoryview
) -> None:
    """Copy `data` into the file at `offset` (kernel copies)."""
    source = memoryview(data).cast("B")
    for seg, within, at, n in _overlaps(segments, offset, len(source)):
        copy_in(seg.address + within, source[at : at + n])


def fill_from(
    segments: Iterable[Segment],
    src_fd: int,
    on_copied: Callable[[int], None] | None = None,
    coherency: cache.Policy = cache.OFF,
) -> int:
    """Fill the file from `src_fd` (its byte i into file byte i) by kernel copies straight
    into memory, each copy flushed from this CPU's caches as `coherency` says. Returns the
    bytes copied; EOFError if the source is shorter."""
    done = 0
    for seg in segments:
        view = seg.view
        filled = 0
        while filled < len(view):
            n = os.preadv(src_fd, [view[filled:]], seg.file_offset + filled)
            if n <= 0:
                raise EOFError(f"the source ended at byte {seg.file_offset + filled}")
            coherency.flush(view, filled, n)
            filled += n
            if on_copied is not None:
                on_copied(n)
        done += filled
    return done


def first_difference(
    read_into: Callable[[int, memoryview], None],
    size: int,
    src_fd: int,
    on_compared: Callable[[int], None] | None = None,
) -> int | None:
    """File offset of the first byte of a file (read by `read_into(offset, buf)`: memory
    segments, FileMemory or MountedFile) that differs from `src_fd`, or None if equal."""
    ours = bytearray(min(COMPARE_CHUNK, max(size, 1)))
    offset = 0
    while offset < size:
        n = min(len(ours), size - offset)
        read_into(offset, memoryview(ours)[:n])
        theirs = os.pread(src_fd, n, offset)
        if len(theirs) != n or theirs != ours[:n]:
            for i in range(min(len(theirs), n)):
                if theirs[i] != ours[i]:
                    return offset + i
            return offset + min(len(theirs), n)
        if on_compared is not None:
            on_compared(n)
        offset += n
    return None


# -- asking the daemon ------------------------------------------------------------------------
def request_map(
    path: str, *, write: bool, watch: bool = False
) -> tuple[channel.Channel, FileMapReply, int]:
    """Ask the daemon of the mount holding `path` for its map and a descriptor. Returns the
    open channel (the caller closes it), the map, and the descriptor (the caller closes it)."""
    where = channel.locate(path)
    chan = channel.Channel(where.mountpoint)
    try:
        reply, fds = chan.call_fds(protocol.Map(where.relpath, write=write, watch=watch))
        if len(fds) != 1:
            for fd in fds:
                os.close(fd)
            raise ProtocolError("the daemon sent no descriptor with the map", errno.EIO)
        return chan, reply, fds[0]
    except BaseException:
        chan.close()
        raise


class FileMemory:
    """One famfs file's memory, mapped for kernel copies (creat -r, verify, chkread), and
    flushed from or invalidated in this CPU's caches as the mount says."""

    def __init__(self, grant: FileMapReply, fd: int, *, writable: bool) -> None:
        self.path = grant.path
        self.size = grant.size
        self.coherency = cache.policy_of_grant(grant.flush, fd)
        self.filemap = FileMap(grant.fmap, grant.size)
        self.writable = writable
        self._regions: list[Region] = []
        self.segments: list[Segment] = []
        try:
            try:
                layouts = [layout_file(fd, self.filemap, writable=writable, align=grant.align)]
            except CannotLayOut:  # map piece by piece; copies do not need one run
                layouts = [
                    layout_file(fd, FileMap(piece_fmap, n), writable=writable, align=grant.align)
                    for piece_fmap, n in _piece_fmaps(self.filemap)
                ]
            position = 0
            for layout in layouts:
                region = Region(
                    layout.map_address,
                    layout.map_length,
                    layout.offset,
                    layout.size,
                    readonly=not writable,
                )
                self._regions.append(region)
                self.segments.append(Segment(position, layout.address, memoryview(region)))
                position += layout.size
        except BaseException:
            self.close()
            raise

    def readinto(self, offset: int, buf: bytearray | memoryview) -> None:
        read_segments(self.segments, offset, buf)

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        if not self.writable:
            raise OSError(errno.EROFS, f"{self.path} is mapped read-only")
        write_segments(self.segments, offset, data)

    def flush(self, offset: int = 0, length: int | None = None) -> None:
        """Write this CPU's cache lines of file bytes [offset, offset+length) back."""
        self._cache(self.coherency.flush, offset, length)

    def invalidate(self, offset: int = 0, length: int | None = None) -> None:
        """Drop this CPU's copy of file bytes [offset, offset+length) (before reading)."""
        self._cache(self.coherency.invalidate, offset, length)

    def _cache(self, run: Callable[..., int], offset: int, length: int | None) -> None:
        if not self.coherency.enabled:
            return
        length = self.size - offset if length is None else length
        for seg, within, _at, n in _overlaps(self.segments, offset, length):
            run(seg.view, within, n)

    def close(self) -> None:
        for seg in self.segments:
            seg.view.release()
        self.segments = []
        for region in self._regions:
            region.close()
        self._regions = []

    def __enter__(self) -> FileMemory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _piece_fmaps(filemap: FileMap) -> Iterator[tuple[omf.Fmap, int]]:
    for piece in filemap.pieces:
        yield omf.SimpleFmap((omf.Extent(piece.dev_offset, piece.length),)), piece.length


def open_file_memory(path: str, *, write: bool) -> FileMemory:
    """Map the famfs file at `path`, asking the daemon of the mount that holds it."""
    chan, grant, fd = request_map(path, write=write)
    try:
        return FileMemory(grant, fd, writable=write)
    finally:
        os.close(fd)
        chan.close()


class MountedFile:
    """A famfs file's bytes through the mount (read/write system calls): what a caller who
    may use the file but not the device gets instead of its memory."""

    def __init__(self, path: str, *, writable: bool) -> None:
        self.path = path
        self.writable = writable
        self._fd = os.open(path, (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC)
        self.size = os.fstat(self._fd).st_size

    def readinto(self, offset: int, buf: bytearray | memoryview) -> None:
        target = memoryview(buf).cast("B")
        done = 0
        while done < len(target):
            n = os.preadv(self._fd, [target[done:]], offset + done)
            if n <= 0:
                raise EOFError(f"{self.path} ended at byte {offset + done}")
            done += n

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        source = memoryview(data).cast("B")
        done = 0
        while done < len(source):
            done += os.pwrite(self._fd, source[done:], offset + done)

    def flush(self, offset: int = 0, length: int | None = None) -> None:
        """Nothing to do here: the daemon flushes what it writes for us."""

    def invalidate(self, offset: int = 0, length: int | None = None) -> None:
        """Nothing this process can do: it holds no mapping (reads through the mount do not
        invalidate; `famfs-py flush FILE`, the daemon's flush op, does)."""

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> MountedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_file_bytes(path: str, *, write: bool) -> FileMemory | MountedFile:
    """The file's memory if this caller may have it, else the file through the mount (the
    daemon refuses device memory to those who could not open the device: EACCES)."""
    from famfs_py.errors import FamfsError

    try:
        return open_file_memory(path, write=write)
    except FamfsError as exc:
        if exc.errno != errno.EACCES or not _may_open(path, write):
            raise
    return MountedFile(path, writable=write)


def _may_open(path: str, write: bool) -> bool:
    return os.access(path, os.R_OK | (os.W_OK if write else 0))
