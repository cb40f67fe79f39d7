"""The cache flush/invalidate primitives (famfs_py.dax.cache over the _fcc extension): every
instruction this CPU offers, forced one at a time, over real mappings."""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import platform
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from famfs_py.dax import cache

PAGE = mmap.PAGESIZE
LINE = cache.line_size()
X86 = platform.machine() == "x86_64"
_libc = ctypes.CDLL(None, use_errno=True)


def _cpu_flags() -> set[str]:
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


def _address(buf) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(buf))


def _resident(buf, npages: int) -> list[int]:
    vec = (ctypes.c_ubyte * npages)()
    assert _libc.mincore(ctypes.c_void_p(_address(buf)), npages * PAGE, vec) == 0
    return [v & 1 for v in vec]


FLUSHERS = cache.choices(cache.FLUSH)
INVALIDATORS = cache.choices(cache.INVALIDATE)
ALL_X86 = ("clwb", "clflushopt", "clflush")


@pytest.mark.skipif(not X86, reason="CPUID flags are x86 only")
def test_the_instructions_found_are_those_the_cpu_reports():
    flags = _cpu_flags()
    have = set(cache.available())
    assert have == {i for i in ALL_X86 if i in flags}
    # the choice: CLWB > CLFLUSHOPT > CLFLUSH to flush, CLFLUSHOPT > CLFLUSH to invalidate
    best = cache.chosen()
    assert best.flush == next(i for i in ALL_X86 if i in flags)
    assert best.invalidate == next(i for i in ("clflushopt", "clflush") if i in flags)
    print(f"CPU has {sorted(have)}; flush: {best.flush}, invalidate: {best.invalidate}")


def _forced() -> list:
    """(operation, instruction) for every instruction that can do it; a skip where this CPU
    lacks it."""
    params = []
    for op in (cache.FLUSH, cache.INVALIDATE):
        names = cache.choices(op)
        if X86:
            names = ALL_X86 if op == cache.FLUSH else ("clflushopt", "clflush")
        have = cache.choices(op)
        for n in names:
            skip = pytest.mark.skipif(n not in have, reason=f"this CPU has no {n}")
            params.append(pytest.param(op, n, id=f"{op}-{n}", marks=skip))
    return params


def _ranges():
    # (offset, length, lines): aligned, unaligned at both ends, within one line, empty
    return [
        (0, 4 * PAGE, 4 * PAGE // LINE),
        (1, LINE, 2),
        (LINE - 1, 2, 2),
        (5, 3, 1),
        (3 * LINE, 0, 0),
        (PAGE - 1, PAGE + 2, PAGE // LINE + 2),
    ]


@pytest.mark.parametrize("op", [cache.FLUSH, cache.INVALIDATE])
def test_each_instruction_touches_every_line_of_the_range_and_is_counted(op):
    run = cache.flush if op == cache.FLUSH else cache.invalidate
    for insn in cache.choices(op):
        buf = mmap.mmap(-1, 8 * PAGE)
        buf.write(os.urandom(8 * PAGE))
        before = bytes(buf)
        for offset, length, lines in _ranges():
            start = cache.counters()[op].get(insn, {"calls": 0, "bytes": 0, "lines": 0})
            assert run(buf, offset, length, instruction=insn) == lines, (insn, offset, length)
            now = cache.counters()[op][insn]
            assert now["calls"] == start["calls"] + 1
            assert now["bytes"] == start["bytes"] + length
            assert now["lines"] == start["lines"] + lines
        # by address, too
        assert run(_address(buf), 0, 2 * LINE, instruction=insn) == 2
        assert bytes(buf) == before  # a flush or invalidate never changes data
        buf.close()


def _guarded_pages():
    """Two pages; the second one inaccessible. Returns (mapping, address)."""
    buf = mmap.mmap(-1, 2 * PAGE)
    buf[0] = 1
    addr = _address(buf)
    assert _libc.mprotect(ctypes.c_void_p(addr + PAGE), PAGE, 0) == 0
    return buf, addr


@pytest.mark.parametrize("op,insn", _forced())
def test_the_instruction_really_runs_on_each_line_up_to_the_end_of_the_range(op, insn):
    """The instruction executes on the memory: a range reaching one byte into an
    inaccessible page faults there (as a load would), and the fault is an error naming the
    address, not a dead process; a range that ends one byte earlier touches nothing more."""
    run = cache.flush if op == cache.FLUSH else cache.invalidate
    buf, addr = _guarded_pages()
    assert run(addr, PAGE - 1, 1, instruction=insn) == 1  # page 0's last byte only
    for _ in range(2):  # and again: the fault left this thread able to fault
        with pytest.raises(cache.CacheFault) as info:
            run(addr, PAGE - 1, 2, instruction=insn)
        assert info.value.address == addr + PAGE
        assert info.value.errno == errno.EFAULT and "SIGSEGV" in str(info.value)
    assert run(addr, 0, LINE, instruction=insn) == 1


def test_a_page_that_is_gone_is_an_error_not_a_sigbus(tmp_path):
    """A page whose memory is gone (SIGBUS, as a poisoned page gives) inside the range."""
    path = Path("/dev/shm") / f"famfs-py-test-sigbus-{os.getpid()}"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, 2 * PAGE)
        buf = mmap.mmap(fd, 2 * PAGE)
        buf[PAGE] = 1
        os.ftruncate(fd, PAGE)  # page 1 is beyond the end of its file now
        with pytest.raises(cache.CacheFault) as info:
            cache.invalidate(buf)
        assert info.value.address == _address(buf) + PAGE and "SIGBUS" in str(info.value)
        assert cache.flush(buf, 0, PAGE) == PAGE // LINE
    finally:
        os.close(fd)
        path.unlink()


_CRASH_CHILD = """
import ctypes, faulthandler, mmap, sys
from famfs_py.dax import cache
if sys.argv[1] == "faulthandler":
    faulthandler.enable()
buf = mmap.mmap(-1, 4096)
cache.flush(buf)                     # the fault handlers are installed now
print("flushed", flush=True)
ctypes.string_at(16)                 # a fault outside any flush
print("survived", flush=True)
"""


@pytest.mark.parametrize("first", ["none", "faulthandler"])
def test_a_fault_outside_a_flush_still_kills_the_process(first):
    proc = subprocess.run(
        [sys.executable, "-c", _CRASH_CHILD, first], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == -signal.SIGSEGV, (proc.returncode, proc.stderr)
    assert "flushed" in proc.stdout and "survived" not in proc.stdout
    if first == "faulthandler":
        assert "Segmentation fault" in proc.stderr  # the earlier handler ran, as it would have


def test_pages_that_are_not_resident_are_skipped_when_asked(tmp_path):
    """Page-cache-backed memory (an emulated device's file): flushing must not allocate the
    pages nobody wrote; without resident_only the instruction faults them in."""
    path = Path("/dev/shm") / f"famfs-py-test-cache-{os.getpid()}"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        npages = 64
        assert npages * PAGE > cache.MINCORE_MIN_BYTES  # ranges this long are checked
        os.ftruncate(fd, npages * PAGE)
        assert cache.page_cache_backed(fd) and not cache.page_cache_backed("/dev/null")
        buf = mmap.mmap(fd, npages * PAGE)
        buf[0] = 1
        buf[5 * PAGE] = 2
        expected = [1 if i in (0, 5) else 0 for i in range(npages)]
        assert _resident(buf, npages) == expected
        for insn in cache.choices(cache.FLUSH):
            assert cache.flush(buf, instruction=insn, resident_only=True) == 2 * PAGE // LINE
        for insn in cache.choices(cache.INVALIDATE):
            assert cache.invalidate(buf, 1, None, instruction=insn, resident_only=True) == (
                2 * PAGE // LINE
            )
        assert _resident(buf, npages) == expected
        # a short range is not checked (the system call would cost more than the flush)
        assert cache.flush(buf, 8 * PAGE, PAGE, resident_only=True) == PAGE // LINE
        assert _resident(buf, npages)[8] == 1
        assert cache.flush(buf) == npages * PAGE // LINE
        assert _resident(buf, npages) == [1] * npages
        buf.close()
    finally:
        os.close(fd)
        path.unlink()


def test_read_only_mappings_can_be_flushed_and_invalidated():
    fd = os.open("/proc/self/exe", os.O_RDONLY)
    try:
        buf = mmap.mmap(fd, PAGE, prot=mmap.PROT_READ)
        assert cache.invalidate(buf) == PAGE // LINE
        assert cache.flush(memoryview(buf)[LINE:]) == (PAGE - LINE) // LINE
        buf.close()
    finally:
        os.close(fd)


def test_bad_requests_are_clear_errors():
    buf = bytearray(PAGE)
    with pytest.raises(ValueError, match="outside a buffer"):
        cache.flush(buf, PAGE - 1, 2)
    with pytest.raises(ValueError, match="outside a buffer"):
        cache.flush(buf, -1, 1)
    with pytest.raises(ValueError, match="cannot invalidate"):
        cache.invalidate(buf, instruction="clwb")
    with pytest.raises(ValueError, match="cannot flush"):
        cache.flush(buf, instruction="wbinvd")
    with pytest.raises(ValueError, match="needs a length"):
        cache.flush(_address(buf))


def test_policy_flushes_only_when_on_and_says_why():
    buf = mmap.mmap(-1, PAGE)  # line-aligned
    off = cache.decide("auto", coherent=True, page_cache=True, where="emulated device")
    assert not off.enabled and "coherent" in off.reason
    assert not cache.decide("off", coherent=False, page_cache=False).enabled
    on = cache.decide("auto", coherent=False, page_cache=False)
    forced = cache.decide("on", coherent=True, page_cache=True)
    assert on.enabled and forced.enabled and forced.resident_only and not on.resident_only
    before = cache.totals()
    off.flush(buf)
    off.invalidate(buf)
    assert cache.totals() == before
    on.flush(buf, 0, 100)
    on.invalidate(buf, 0, 64)
    after = cache.totals()
    assert after["flush"]["calls"] == before["flush"]["calls"] + 1
    assert after["flush"]["lines"] == before["flush"]["lines"] + 2
    assert after["invalidate"]["lines"] == before["invalidate"]["lines"] + 1
    info = on.describe()
    assert info["enabled"] and info["flush_instruction"] == cache.chosen().flush
    with pytest.raises(ValueError, match="flush mode"):
        cache.decide("sometimes", coherent=False, page_cache=False)
