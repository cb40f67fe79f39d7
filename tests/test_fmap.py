"""FileMap: file offsets to device ranges, for simple and interleaved fmaps."""

from __future__ import annotations

import random

import pytest

from famfs_py import omf
from famfs_py.fs.fmap import FileMap, _interleaved_pieces

pytestmark = pytest.mark.model  # the model tier: no FUSE, in this process

AU = omf.ALLOC_UNIT


def _flat(filemap: FileMap, offset: int, length: int) -> list[tuple[int, int]]:
    """Byte-exact expansion of ranges() into (device offset, 1-byte) runs merged again."""
    out: list[tuple[int, int]] = []
    for dev, n in filemap.ranges(offset, length):
        if out and out[-1][0] + out[-1][1] == dev:
            out[-1] = (out[-1][0], out[-1][1] + n)
        else:
            out.append((dev, n))
    return out


def test_interleaved_ranges_by_arithmetic_equal_the_flattened_pieces():
    rng = random.Random(10)
    for _ in range(300):
        nstrips = rng.randint(1, 5)
        chunk = rng.choice([4096, 8192, AU])
        lengths = [chunk * rng.randint(0, 6) for _ in range(nstrips)]
        if rng.random() < 0.7:
            lengths = [lengths[0]] * nstrips
        strips = tuple(
            omf.Extent((k + 1) * (1 << 30) + rng.choice([0, 4096 * k]), n)
            for k, n in enumerate(lengths)
        )
        fmap = omf.InterleavedFmap(nstrips, chunk, strips)
        size = rng.randint(1, chunk * 7 * nstrips)
        lazy = FileMap(fmap, size)
        flat = FileMap(fmap, size)
        flat.pieces  # noqa: B018 (flatten it: ranges then walk the pieces)
        assert lazy.size == flat.size == sum(n for _, n in _interleaved_pieces(fmap, size))
        if lazy.contiguous_start is not None:  # the read hot path trusts it
            assert len(flat.pieces) == 1 and flat.pieces[0].dev_offset == lazy.contiguous_start
        for _ in range(5):
            offset = rng.randrange(0, max(1, lazy.size))
            length = rng.randint(1, 3 * chunk)
            assert _flat(lazy, offset, length) == _flat(flat, offset, length)


def test_a_crafted_million_chunk_file_costs_nothing_until_its_pieces_are_asked_for():
    strips = tuple(omf.Extent((1 << 30) + k * (128 << 20), 128 << 20) for k in range(16))
    fmap = omf.InterleavedFmap(16, 4096, strips)  # 4 KiB chunks: 524288 pieces
    filemap = FileMap(fmap, 2 << 30)
    assert filemap.size == 2 << 30
    assert next(filemap.ranges(4096 * 17, 1)) == (strips[1].offset + 4096, 1)
    assert list(filemap.ranges(4096 * 16 - 10, 20)) == [
        (strips[15].offset + 4096 - 10, 10),
        (strips[0].offset + 4096, 10),
    ]
    assert filemap._pieces is None  # answered by arithmetic: nothing was flattened


def test_a_zero_chunk_or_missing_strips_back_no_bytes():
    strips = (omf.Extent(AU, AU),)
    assert FileMap(omf.InterleavedFmap(1, 0, strips), 4096).size == 0
    assert FileMap(omf.InterleavedFmap(3, AU, strips), 3 * AU).size == AU


def test_an_absurd_size_is_no_space_not_a_memory_error():
    from famfs_py.fs.alloc import Bitmap, NoSpace

    bitmap = Bitmap(4 << 30, AU, 10 << 20)
    for size in (2**62, 2**70, 5 << 30):
        with pytest.raises(NoSpace):
            bitmap.allocate(size)
    assert bitmap.allocate(AU).offset == 10 << 20
