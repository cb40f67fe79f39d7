"""The allocation bitmap: one entry per allocation unit (AU) over the device.

Built from the log at replay (superblock and log pre-set, every file's extents marked,
double claims counted as collisions); the master allocates first-fit from it. AUs are never
freed (famfs has no delete).
"""

from __future__ import annotations

from dataclasses import dataclass

from famfs_py.omf import Extent

FREE = 0
USED = 1


class NoSpace(Exception):
    """Not enough free allocation units."""


@dataclass
class MarkResult:
    collisions: int = 0
    outside: bool = False


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

    def is_used(self, au: int) -> bool:
        return self._bits[au] != FREE

    def mark(self, extent: Extent) -> MarkResult:
        """Mark an extent's AUs used; report AUs that were already used (collisions)."""
        first = extent.offset // self.alloc_unit
        count = -(-extent.length // self.alloc_unit)
        result = MarkResult(outside=first + count > self.nbits)
        last = min(first + count, self.nbits)
        if first >= last:
            return result
        already = (last - first) - self._bits.count(FREE, first, last)
        result.collisions = already
        self._bits[first:last] = b"\1" * (last - first)
        self.used += (last - first) - already
        self.collisions += already
        return result

    def find_free(self, count: int, start: int = 0, end: int | None = None) -> int | None:
        """First index of `count` consecutive free AUs within [start, end), or None."""
        end = self.nbits if end is None else end
        start = max(start, self._hint)
        found = self._bits.find(b"\0" * count, start, end)
        return None if found < 0 else found

    def allocate(self, length: int) -> Extent:
        """First-fit contiguous allocation of `length` bytes rounded up to whole AUs."""
        count = max(1, -(-length // self.alloc_unit))
        first = self.find_free(count)
        if first is None:
            raise NoSpace(
                f"no {count} contiguous free allocation units ({self.free} of {self.nbits} free)"
            )
        extent = Extent(first * self.alloc_unit, count * self.alloc_unit)
        self.mark(extent)
        self._advance_hint()
        return extent

    def _advance_hint(self) -> None:
        found = self._bits.find(b"\0", self._hint)
        self._hint = self.nbits if found < 0 else found

    def release(self, extent: Extent) -> None:
        """Undo an allocation that was never logged (a failed multi-strip allocation)."""
        first = extent.offset // self.alloc_unit
        count = extent.length // self.alloc_unit
        self._bits[first : first + count] = b"\0" * count
        self.used -= count
        self._hint = min(self._hint, first)
