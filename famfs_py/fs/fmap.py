"""File offsets to device ranges: a file's fmap flattened once into contiguous pieces.

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
    """The device ranges of one file, in file order."""

    __slots__ = ("_starts", "contiguous_start", "pieces", "size")

    def __init__(self, fmap: Fmap, size: int) -> None:
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
        self.pieces = tuple(pieces)
        self.size = min(size, file_offset)  # bytes actually backed by the fmap
        self._starts = [p.file_offset for p in pieces]
        # device offset of byte 0 when the whole file is one piece (the common case)
        self.contiguous_start = pieces[0].dev_offset if len(pieces) == 1 else None

    @property
    def contiguous(self) -> bool:
        return len(self.pieces) == 1

    def ranges(self, offset: int, length: int) -> Iterator[tuple[int, int]]:
        """(device offset, length) ranges for file bytes [offset, offset+length), clipped to
        the file size."""
        end = min(offset + length, self.size)
        i = bisect.bisect_right(self._starts, offset) - 1
        while offset < end and i < len(self.pieces):
            piece = self.pieces[i]
            within = offset - piece.file_offset
            take = min(piece.length - within, end - offset)
            yield piece.dev_offset + within, take
            offset += take
            i += 1

    def device_offset(self, offset: int) -> int:
        """Device offset of file byte `offset` (which must be inside the file)."""
        dev, _ = next(self.ranges(offset, 1))
        return dev
