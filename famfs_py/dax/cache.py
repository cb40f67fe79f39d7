"""CPU cache flush and invalidate over byte ranges of mapped memory, and the policy that says
whether a mount uses them.

Memory shared between hosts over a fabric is, on most systems shipping today, not kept
coherent with the other hosts' CPU caches. A host that stored data another host will read
must *flush* it (write its dirty cache lines back to memory) first; a host about to read data
another host stored must *invalidate* its own copy of those lines (or it may read a stale
one). Both take a byte range of a mapping in this process: a buffer (an mmap, a memoryview of
device memory) with an offset and length, or an address and length (the caller vouches that
it is mapped). Every line the range touches is written back or evicted, then a fence orders
it (see `_fcc.c`). A page that faults (gone, poisoned) raises `CacheFault` (EFAULT, with the
`address`), never a signal that kills the process.

The instruction is chosen from CPUID, as upstream famfs's fcc does: flush with CLWB >
CLFLUSHOPT > CLFLUSH, invalidate with CLFLUSHOPT > CLFLUSH (aarch64: DC CVAC / DC CIVAC).
Another architecture raises `CacheUnsupported`. Each call can force any instruction the CPU
has (tests run every path). `counters()` counts calls, bytes and lines per operation and
instruction in this process (the daemon reports its own in `status`).

`Policy` is what the filesystem applies: flushing on or off (off where the memory is known to
be coherent: an emulated device on one machine, memory attached to one host's CPUs), and
whether the memory is page-cache backed (an emulated device's file), where pages that are not
resident are skipped rather than faulted in (they hold no data, so no cache line).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Any

from famfs_py.dax.flush_mode import FLUSH_MODES, FlushMode

try:
    from famfs_py.dax import _fcc
except ImportError as exc:  # the extension was not built: say so on first use
    _fcc = None  # type: ignore[assignment]
    _IMPORT_ERROR: str | None = str(exc)
else:
    _IMPORT_ERROR = None

FLUSH = "flush"
INVALIDATE = "invalidate"
OPERATIONS = (FLUSH, INVALIDATE)

# Preference order of each operation's instructions, per architecture (best first).
_PREFERENCE: dict[str, dict[str, tuple[str, ...]]] = {
    "x86_64": {FLUSH: ("clwb", "clflushopt", "clflush"), INVALIDATE: ("clflushopt", "clflush")},
    "aarch64": {FLUSH: ("dc cvac",), INVALIDATE: ("dc civac",)},
}


class CacheUnsupported(OSError):
    """This machine has no cache flush/invalidate instruction famfs-py can run."""


# A page of the range faulted (a revoked mapping, a poisoned page): raised instead of the
# SIGSEGV/SIGBUS the instruction took; `.address` is the faulting address.
CacheFault: type[OSError] = _fcc.Fault if _fcc is not None else OSError


def arch() -> str:
    """The architecture the instruction paths were built for ("unsupported" if none)."""
    return _fcc.ARCH if _fcc is not None else "unsupported"


# resident_only checks only ranges longer than this (the check costs more than the flush)
MINCORE_MIN_BYTES = _fcc.MINCORE_MIN_BYTES if _fcc is not None else 64 << 10


def line_size() -> int:
    """Bytes per cache line as the CPU reports it (64 where unknown)."""
    return _fcc.LINE_SIZE if _fcc is not None else 64


def available() -> tuple[str, ...]:
    """The instructions this CPU has, of those famfs-py knows (empty: not supported)."""
    if _fcc is None:
        return ()
    return tuple(name for name in _fcc.features() if name is not None)


def supported() -> bool:
    return bool(choices(FLUSH)) and bool(choices(INVALIDATE))


def choices(operation: str) -> tuple[str, ...]:
    """The instructions that can do `operation` on this CPU, best first."""
    have = set(available())
    return tuple(i for i in _PREFERENCE.get(arch(), {}).get(operation, ()) if i in have)


@dataclass(frozen=True)
class Choice:
    flush: str
    invalidate: str


def chosen() -> Choice:
    """The instructions used when a call does not force one (CPUID's best)."""
    flush, invalidate = choices(FLUSH), choices(INVALIDATE)
    if not flush or not invalidate:
        raise CacheUnsupported(_unsupported_reason())
    return Choice(flush[0], invalidate[0])


def _unsupported_reason() -> str:
    if _fcc is None:
        return f"the cache-flush extension famfs_py.dax._fcc is not built ({_IMPORT_ERROR})"
    if arch() == "unsupported":
        return "cache flush/invalidate is not supported on this architecture"
    return "this CPU reports no cache flush instruction (CPUID has no CLFLUSH)"


def _insn_ids() -> dict[str, int]:
    assert _fcc is not None
    return {name: i for i, name in enumerate(_fcc.features()) if name is not None}


_ids: dict[str, int] | None = None
_default: dict[str, int] = {}


def _resolve(operation: str, instruction: str | None) -> int:
    global _ids
    if _ids is None:
        if _fcc is None or not supported():
            raise CacheUnsupported(_unsupported_reason())
        _ids = _insn_ids()
        best = chosen()
        _default[FLUSH] = _ids[best.flush]
        _default[INVALIDATE] = _ids[best.invalidate]
    if instruction is None:
        return _default[operation]
    if instruction not in choices(operation):
        can = ", ".join(choices(operation)) or "none"
        raise ValueError(f"{instruction!r} cannot {operation} on this CPU (it can with: {can})")
    return _ids[instruction]


def _run(
    op: int,
    operation: str,
    target: Any,
    offset: int,
    length: int | None,
    instruction: str | None,
    resident_only: bool,
) -> int:
    insn = _resolve(operation, instruction)
    assert _fcc is not None
    if isinstance(target, int):
        if length is None:
            raise ValueError("an address needs a length")
        return _fcc.address_range(op, insn, target + offset, length, resident_only)
    if length is None:
        length = memoryview(target).nbytes - offset
    return _fcc.range(op, insn, target, offset, length, resident_only)


def flush(
    target: Any,
    offset: int = 0,
    length: int | None = None,
    *,
    instruction: str | None = None,
    resident_only: bool = False,
) -> int:
    """Write this CPU's dirty cache lines of bytes [offset, offset+length) of `target` (a
    buffer, or an int address with a length) back to memory, then fence. Returns the number
    of cache lines touched. `resident_only`: skip pages mincore(2) says are not resident
    (page-cache-backed memory only)."""
    return _run(0, FLUSH, target, offset, length, instruction, resident_only)


def invalidate(
    target: Any,
    offset: int = 0,
    length: int | None = None,
    *,
    instruction: str | None = None,
    resident_only: bool = False,
) -> int:
    """Write back and evict this CPU's cache lines of the range, then fence, so that the next
    loads read memory. Returns the number of cache lines touched."""
    return _run(1, INVALIDATE, target, offset, length, instruction, resident_only)


def counters() -> dict[str, dict[str, dict[str, int]]]:
    """{operation: {instruction: {"calls", "bytes", "lines"}}} for this process so far."""
    out: dict[str, dict[str, dict[str, int]]] = {op: {} for op in OPERATIONS}
    if _fcc is None:
        return out
    names = _fcc.features()
    for op, insn, calls, nbytes, lines in _fcc.counters():
        out[OPERATIONS[op]][str(names[insn])] = {"calls": calls, "bytes": nbytes, "lines": lines}
    return out


def totals() -> dict[str, dict[str, int]]:
    """{operation: {"calls", "bytes", "lines"}} summed over instructions."""
    out = {}
    for operation, by_insn in counters().items():
        out[operation] = {
            key: sum(row[key] for row in by_insn.values()) for key in ("calls", "bytes", "lines")
        }
    return out


# -- the policy a mount applies ------------------------------------------------------------


class Policy:
    """Whether to flush and invalidate where data crosses hosts, and why. Its methods are the
    hot path of every caller (a pcq message flushes twice): they go straight to the
    instruction chosen when the policy was made."""

    __slots__ = ("_flush_insn", "_invalidate_insn", "enabled", "reason", "resident_only")

    def __init__(self, enabled: bool, reason: str, resident_only: bool = False) -> None:
        self.enabled = enabled
        self.reason = reason
        self.resident_only = resident_only  # page-cache-backed memory: skip absent pages
        if enabled:
            self._flush_insn = _resolve(FLUSH, None)
            self._invalidate_insn = _resolve(INVALIDATE, None)

    def flush(self, target: Any, offset: int = 0, length: int | None = None) -> int:
        """`flush` of the range if flushing is on; the cache lines touched (0 if off)."""
        if not self.enabled:
            return 0
        if length is None:
            length = memoryview(target).nbytes - offset
        return _fcc.range(0, self._flush_insn, target, offset, length, self.resident_only)

    def invalidate(self, target: Any, offset: int = 0, length: int | None = None) -> int:
        """`invalidate` of the range if flushing is on; the cache lines touched (0 if off)."""
        if not self.enabled:
            return 0
        if length is None:
            length = memoryview(target).nbytes - offset
        return _fcc.range(1, self._invalidate_insn, target, offset, length, self.resident_only)

    def watch(
        self,
        target: Any,
        offset: int,
        length: int,
        snapshot: bytes,
        interval: float,
        timeout: float,
    ) -> bool:
        """Look at bytes [offset, offset+length) of `target` every `interval` seconds
        (invalidating them first if flushing is on) until they differ from `snapshot` (True)
        or `timeout` seconds passed (False). The looks run in C without the GIL: an idle
        watcher costs a timer wake-up per interval and nothing in Python."""
        if _fcc is None:
            raise CacheUnsupported(_unsupported_reason())
        insn = self._invalidate_insn if self.enabled else -1
        return bool(
            _fcc.watch(
                target, offset, length, snapshot, insn, max(1, int(interval * 1e6)),
                int(timeout * 1e6),
            )
        )  # fmt: skip

    def describe(self) -> dict[str, Any]:
        """What `status` shows: on/off, why, the instructions and this process's counters."""
        info: dict[str, Any] = {"enabled": self.enabled, "reason": self.reason}
        if self.enabled:
            best = chosen()
            info["flush_instruction"] = best.flush
            info["invalidate_instruction"] = best.invalidate
        info["available"] = list(available())
        info["counters"] = totals()
        return info

    def __repr__(self) -> str:
        return f"Policy(enabled={self.enabled}, reason={self.reason!r})"


OFF = Policy(False, "flushing is off")


def page_cache_backed(fd_or_path: int | str | os.PathLike[str]) -> bool:
    """True if this memory is a regular file's (an emulated device's backing file), whose
    absent pages hold no data; False for a device node (devdax memory always exists)."""
    st = os.fstat(fd_or_path) if isinstance(fd_or_path, int) else os.stat(fd_or_path)
    return stat.S_ISREG(st.st_mode)


def for_device(device: Any, mode: str = FlushMode.AUTO) -> Policy:
    """The policy for flush mode `mode` on a DaxDevice: its `coherent` property says whether
    "auto" flushes; an emulated device's memory is page-cache backed."""
    return decide(
        mode,
        coherent=device.coherent,
        page_cache=page_cache_backed(device.node),
        where=f"{'emulated ' if device.emulated else ''}device {device.name}",
    )


def decide(mode: str, *, coherent: bool, page_cache: bool, where: str = "device") -> Policy:
    """The policy for flush mode `mode` ("auto": on unless the memory is known coherent;
    "on"; "off") on memory that is (`coherent`) or is not known coherent."""
    if mode not in FLUSH_MODES:
        raise ValueError(f"flush mode must be one of {', '.join(FLUSH_MODES)}, not {mode!r}")
    if mode == FlushMode.OFF:
        return Policy(False, "off (flush=off)")
    if mode == FlushMode.AUTO and coherent:
        return Policy(False, f"off (flush=auto: the {where} is coherent)")
    if not supported():
        if mode == FlushMode.ON:
            raise CacheUnsupported(f"flush=on: {_unsupported_reason()}")
        return Policy(False, f"off ({_unsupported_reason()})")
    why = "flush=on" if mode == FlushMode.ON else f"flush=auto: the {where} is not known coherent"
    return Policy(True, f"on ({why})", resident_only=page_cache)


def policy_of_grant(flush: object, fd: int) -> Policy:
    """The policy a process applies to a file the daemon mapped for it: the mount's say
    (`flush`: True, False, or None for a daemon that does not say: then flush, the safe
    choice), over memory that `fd` tells page-cache backed or not."""
    if flush is False:
        return Policy(False, "off (the mount says memory is coherent)")
    policy = decide(
        FlushMode.ON if flush else FlushMode.AUTO, coherent=False, page_cache=page_cache_backed(fd)
    )
    if flush:
        policy.reason = "on (the mount flushes)"  # not this process's flush=on
    return policy
