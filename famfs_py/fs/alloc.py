"""The allocation bitmap: one entry per allocation unit (AU) over the device.

Built from the log at replay (superblock and log pre-set, every file's extents marked,
double claims counted as collisions); the master allocates first-fit from it. AUs are never
freed (famfs has no delete).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from famfs_py import omf
from famfs_py.omf import Extent

GiB = 1 << 30

FREE = 0


class NoSpace(Exception):
    """Not enough free allocation units."""


class BadInterleave(ValueError):
    """Interleave parameters that upstream's rules refuse."""


@dataclass(frozen=True)
class Interleave:
    nstrips: int
    nbuckets: int
    chunk_size: int = omf.ALLOC_UNIT

    def validate(self, dev_size: int, alloc_unit: int) -> None:
        """Upstream's rules (famfs_validate_interleave_param), on every device, emulated ones
        too: scripts written for famfs expect its refusals."""
        chunk = self.chunk_size
        if chunk <= 0 or chunk & (chunk - 1):
            raise BadInterleave(f"chunk size {chunk:#x} must be a power of two")
        if chunk % alloc_unit:
            raise BadInterleave(f"chunk size {chunk:#x} must be a multiple of {alloc_unit:#x}")
        if not 1 <= self.nbuckets <= omf.MAX_NBUCKETS:
            raise BadInterleave(f"nbuckets {self.nbuckets} must be 1..{omf.MAX_NBUCKETS}")
        if not 1 <= self.nstrips <= min(self.nbuckets, omf.MAX_SIMPLE_EXTENTS):
            raise BadInterleave(
                f"nstrips {self.nstrips} must be 1..{omf.MAX_SIMPLE_EXTENTS} and at most "
                f"nbuckets ({self.nbuckets})"
            )
        bucket = dev_size // self.nbuckets
        if bucket < GiB:
            raise BadInterleave(
                f"{self.nbuckets} buckets of {bucket} bytes: each bucket needs at least 1 GiB"
            )
        if bucket < chunk:
            raise BadInterleave(f"a bucket ({bucket} bytes) is smaller than a chunk")


class Bitmap:
    def __init__(self, dev_size: int, alloc_unit: int, reserved_bytes: int) -> None:
        self.alloc_unit = alloc_unit
        self.nbits = dev_size // alloc_unit
        self._bits = bytearray(self.nbits)
        reserved = min(self.nbits, -(-reserved_bytes // alloc_unit))
        self._bits[:reserved] = b"\1" * reserved
        self.used = reserved
        self.collisions = 0
        self._hint = reserved  # no free AU below this index

    @property
    def free(self) -> int:
        return self.nbits - self.used

    def mark(self, extent: Extent) -> int:
        """Mark an extent's AUs used (the part inside the device); returns how many were
        used already (collisions, also added to `collisions`)."""
        return self.mark_range(extent.offset, extent.length)

    def mark_range(self, offset: int, length: int) -> int:
        """`mark` for the extent at `offset` of `length` bytes."""
        first = offset // self.alloc_unit
        last = min(first + -(-length // self.alloc_unit), self.nbits)
        if first >= last:
            return 0
        already = (last - first) - self._bits.count(FREE, first, last)
        self._bits[first:last] = b"\1" * (last - first)
        self.used += (last - first) - already
        self.collisions += already
        return already

    def find_free(self, count: int, start: int = 0, end: int | None = None) -> int | None:
        """First index of `count` consecutive free AUs within [start, end), or None."""
        end = self.nbits if end is None else end
        start = max(start, self._hint)
        found = self._bits.find(b"\0" * count, start, end)
        return None if found < 0 else found

    def allocate(self, length: int, start: int = 0, end: int | None = None) -> Extent:
        """First-fit contiguous allocation of `length` bytes rounded up to whole AUs, within
        AUs [start, end) if given."""
        count = max(1, -(-length // self.alloc_unit))
        if count > self.free:  # also keeps an absurd size from building an absurd pattern
            raise NoSpace(f"{count} allocation units asked, {self.free} of {self.nbits} free")
        first = self.find_free(count, start, end)
        if first is None:
            raise NoSpace(
                f"no {count} contiguous free allocation units ({self.free} of {self.nbits} free)"
            )
        extent = Extent(first * self.alloc_unit, count * self.alloc_unit)
        self.mark(extent)
        self._advance_hint()
        return extent

    def allocate_interleaved(
        self, size: int, params: Interleave
    ) -> omf.SimpleFmap | omf.InterleavedFmap:
        """Strided allocation as upstream does it: `nstrips` equal strips, each in a
        different bucket (device / nbuckets), buckets tried in random order; a file smaller
        than one chunk falls back to contiguous. Fewer than nstrips strips: NoSpace, and
        nothing stays allocated."""
        params.validate(self.nbits * self.alloc_unit, self.alloc_unit)
        if size < params.chunk_size:
            return omf.SimpleFmap((self.allocate(size),))
        au = self.alloc_unit
        size_au = -(-size // au)
        chunk_au = params.chunk_size // au
        stripes = -(-size_au // (params.nstrips * chunk_au))
        strip_bytes = stripes * params.chunk_size
        bucket_au = self.nbits // params.nbuckets
        order = list(range(params.nbuckets))
        random.SystemRandom().shuffle(order)
        strips: list[Extent] = []
        for bucket in order:
            try:
                strips.append(
                    self.allocate(strip_bytes, bucket * bucket_au, (bucket + 1) * bucket_au)
                )
            except NoSpace:
                continue
            if len(strips) == params.nstrips:
                return omf.InterleavedFmap(params.nstrips, params.chunk_size, tuple(strips))
        for strip in strips:
            self.release(strip)
        raise NoSpace(
            f"only {len(strips)} of {params.nstrips} strips of {strip_bytes} bytes fit in "
            f"{params.nbuckets} buckets"
        )

    def _advance_hint(self) -> None:
        found = self._bits.find(b"\0", self._hint)
        self._hint = self.nbits if found < 0 else found

    def free_runs(self, start: int, end: int) -> list[int]:
        """Lengths (in AUs) of the runs of free AUs within [start, end)."""
        runs = []
        pos = start
        while pos < end:
            first = self._bits.find(b"\0", pos, end)
            if first < 0:
                break
            stop = self._bits.find(b"\1", first, end)
            stop = end if stop < 0 else stop
            runs.append(stop - first)
            pos = stop
        return runs

    def release(self, extent: Extent) -> None:
        """Undo an allocation that was never logged (a failed multi-strip allocation)."""
        first = extent.offset // self.alloc_unit
        count = extent.length // self.alloc_unit
        self._bits[first : first + count] = b"\0" * count
        self.used -= count
        self._hint = min(self._hint, first)
