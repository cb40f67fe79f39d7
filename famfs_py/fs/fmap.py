"""File offsets to device ranges: a file's fmap as contiguous pieces.

Simple extents map in order; an interleaved fmap maps chunk c to strip c % nstrips, row
c // nstrips (shared/spec/omf.md). Pieces adjacent on the device are merged, so most files
are a single piece and a read is one slice.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass

from famfs_py.omf import Fmap, InterleavedFmap, SimpleFmap


@dataclass(frozen=True)
class Piece:
    file_offset: int
    dev_offset: int
    length: int


def _simple_pieces(fmap: SimpleFmap, size: int) -> Iterator[tuple[int, int]]:
    remaining = size
    for ext in fmap.extents:
        if remaining <= 0:
            return
        take = min(ext.length, remaining)
        yield ext.offset, take
        remaining -= take


def _interleaved_pieces(fmap: InterleavedFmap, size: int) -> Iterator[tuple[int, int]]:
    chunk = fmap.chunk_size
    nstrips = fmap.nstrips
    offset = 0
    index = 0
    while offset < size:
        strip = fmap.strips[index % nstrips]
        row = index // nstrips
        if (row + 1) * chunk > strip.length:
            return  # the strips hold less than the size claims; fsck reports it
        take = min(chunk, size - offset)
        yield strip.offset + row * chunk, take
        offset += take
        index += 1


class FileMap:
    """The device ranges of one file, in file order.

    A simple fmap (at most 16 extents) is flattened at once. An interleaved one is mapped by
    arithmetic and flattened only when `pieces` is asked for: replaying a log must not cost
    a piece per chunk (a crafted entry with 4 KiB chunks over a whole device would be a
    million of them).
    """

    __slots__ = ("_fmap", "_pieces", "_starts", "contiguous_start", "size")

    def __init__(self, fmap: Fmap, size: int) -> None:
        self._fmap = fmap
        self._pieces: tuple[Piece, ...] | None = None
        self._starts: list[int] = []
        # contiguous_start: device offset of byte 0 when the whole file is one piece (the
        # common case, read by one slice of the device view)
        if isinstance(fmap, InterleavedFmap):
            self.size = min(size, _interleaved_capacity(fmap))  # bytes backed by the fmap
            one_run = fmap.nstrips == 1 or self.size <= fmap.chunk_size
            self.contiguous_start = fmap.strips[0].offset if one_run and self.size else None
        elif isinstance(fmap, SimpleFmap) and len(fmap.extents) == 1 and size > 0:
            # one extent (most files; replay makes one per file): what _flatten would make
            ext = fmap.extents[0]
            self.size = min(ext.length, size)
            self._pieces = (Piece(0, ext.offset, self.size),)
            self._starts = [0]
            self.contiguous_start = ext.offset
        else:
            pieces = self._flatten(size)
            self.size = pieces[-1].file_offset + pieces[-1].length if pieces else 0
            self.contiguous_start = pieces[0].dev_offset if len(pieces) == 1 else None

    def _flatten(self, size: int) -> tuple[Piece, ...]:
        fmap = self._fmap
        if isinstance(fmap, SimpleFmap):
            raw = _simple_pieces(fmap, size)
        elif isinstance(fmap, InterleavedFmap):
            raw = _interleaved_pieces(fmap, size)
        else:
            raw = iter(())
        pieces: list[Piece] = []
        file_offset = 0
        for dev_offset, length in raw:
            last = pieces[-1] if pieces else None
            if last and last.dev_offset + last.length == dev_offset:
                pieces[-1] = Piece(last.file_offset, last.dev_offset, last.length + length)
            else:
                pieces.append(Piece(file_offset, dev_offset, length))
            file_offset += length
        self._pieces = tuple(pieces)
        self._starts = [p.file_offset for p in pieces]
        return self._pieces

    @property
    def pieces(self) -> tuple[Piece, ...]:
        if self._pieces is None:
            return self._flatten(self.size)
        return self._pieces

    def ranges(self, offset: int, length: int) -> Iterator[tuple[int, int]]:
        """(device offset, length) ranges for file bytes [offset, offset+length), clipped to
        the file size."""
        if self._pieces is None and isinstance(self._fmap, InterleavedFmap):
            yield from self._interleaved_ranges(offset, length)
            return
        end = min(offset + length, self.size)
        pieces = self.pieces
        i = bisect.bisect_right(self._starts, offset) - 1
        while offset < end and i < len(pieces):
            piece = pieces[i]
            within = offset - piece.file_offset
            take = min(piece.length - within, end - offset)
            yield piece.dev_offset + within, take
            offset += take
            i += 1

    def _interleaved_ranges(self, offset: int, length: int) -> Iterator[tuple[int, int]]:
        fmap = self._fmap
        assert isinstance(fmap, InterleavedFmap)
        chunk, nstrips = fmap.chunk_size, fmap.nstrips
        end = min(offset + length, self.size)
        pending: tuple[int, int] | None = None
        while offset < end:
            index, within = divmod(offset, chunk)
            dev = fmap.strips[index % nstrips].offset + (index // nstrips) * chunk + within
            take = min(chunk - within, end - offset)
            if pending and pending[0] + pending[1] == dev:
                pending = (pending[0], pending[1] + take)  # adjacent on the device: one range
            else:
                if pending:
                    yield pending
                pending = (dev, take)
            offset += take
        if pending:
            yield pending


def _interleaved_capacity(fmap: InterleavedFmap) -> int:
    """Bytes the strips back, counted as _interleaved_pieces walks them: up to the first
    chunk whose strip is too short."""
    chunk, nstrips = fmap.chunk_size, fmap.nstrips
    if chunk <= 0 or nstrips <= 0:
        return 0
    lengths = [s.length for s in fmap.strips[:nstrips]]
    lengths += [0] * (nstrips - len(lengths))
    return min(s + (n // chunk) * nstrips for s, n in enumerate(lengths)) * chunk
