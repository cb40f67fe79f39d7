"""Types of the _fcc extension (famfs_py/dax/_fcc.c): cache flush/invalidate over ranges."""

from typing import Any

OP_FLUSH: int
OP_INVALIDATE: int
LINE_SIZE: int
MINCORE_MIN_BYTES: int
ARCH: str

class Fault(OSError):
    address: int

def range(
    op: int, insn: int, buffer: Any, offset: int, length: int, resident_only: bool, /
) -> int: ...
def address_range(op: int, insn: int, address: int, length: int, resident_only: bool, /) -> int: ...
def features() -> tuple[str | None, ...]: ...
def counters() -> list[tuple[int, int, int, int, int]]: ...
def watch(
    buffer: Any,
    offset: int,
    length: int,
    snapshot: bytes,
    insn: int,
    interval_us: int,
    timeout_us: int,
    /,
) -> bool: ...
