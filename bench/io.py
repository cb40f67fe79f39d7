"""The measuring loops: sequential and random I/O with os.readv/os.preadv/os.write into
reused page-aligned buffers (what dd bs=1M does), stat and open+close loops, and in-process
copies of mapped memory (the physical limit). Each returns elapsed seconds.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import random
import re
import time
from pathlib import Path

CHUNK = 1 << 20  # dd bs=1M
PAGE = 4096
MADV_POPULATE_READ = 22  # Linux 5.14+
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02

_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]


def punch_hole(path: Path, offset: int, length: int) -> None:
    """Give [offset, offset+length) of a memory file back (the next touch allocates and
    zeroes pages again; mappings of the range stay valid)."""
    fd = os.open(path, os.O_RDWR)
    try:
        flags = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
        if _libc.fallocate(fd, flags, offset, length) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"punching a hole in {path}: {os.strerror(err)}")
    finally:
        os.close(fd)


def aligned_buffer(size: int) -> mmap.mmap:
    """A page-aligned anonymous buffer (O_DIRECT needs alignment), touched once."""
    buf = mmap.mmap(-1, size)
    buf.write(b"\1" * size)
    buf.seek(0)
    return buf


def seq_read(path: Path, size: int, *, direct: bool = False, buf: mmap.mmap | None = None) -> float:
    """Read `size` bytes from the start of `path` in 1 MiB reads."""
    buf = buf if buf is not None else aligned_buffer(CHUNK)
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECT if direct else 0))
    try:
        done = 0
        start = time.perf_counter()
        while done < size:
            n = os.readv(fd, [buf])
            if n <= 0:
                raise OSError(f"{path}: short read at {done} of {size}")
            done += n
        return time.perf_counter() - start
    finally:
        os.close(fd)


def seq_write(path: Path, size: int, *, buf: mmap.mmap | None = None) -> float:
    """Overwrite the first `size` bytes of `path` in 1 MiB writes (no truncation)."""
    buf = buf if buf is not None else aligned_buffer(CHUNK)
    view = memoryview(buf)
    fd = os.open(path, os.O_WRONLY)
    try:
        done = 0
        start = time.perf_counter()
        while done < size:
            done += os.write(fd, view[: min(CHUNK, size - done)])
        return time.perf_counter() - start
    finally:
        view.release()
        os.close(fd)


def random_offsets(size: int, count: int, seed: int = 8) -> list[int]:
    rng = random.Random(seed)
    pages = size // PAGE
    return [rng.randrange(pages) * PAGE for _ in range(count)]


def rand_read(path: Path, offsets: list[int], *, direct: bool, limit: float = 10.0) -> float:
    """4 KiB preadv at each offset (page aligned) into one aligned buffer; returns the
    operations per second. Stops after `limit` seconds (a stalled machine must not hold
    the whole run)."""
    buf = aligned_buffer(PAGE)
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECT if direct else 0))
    try:
        preadv = os.preadv
        bufs = [buf]
        done = 0
        start = time.perf_counter()
        deadline = start + limit
        for first in range(0, len(offsets), 512):
            for off in offsets[first : first + 512]:
                preadv(fd, bufs, off)
            done = min(first + 512, len(offsets))
            if time.perf_counter() > deadline:
                break
        return done / (time.perf_counter() - start)
    finally:
        os.close(fd)


def stat_all(paths: list[str]) -> float:
    stat = os.stat
    start = time.perf_counter()
    for p in paths:
        stat(p)
    return time.perf_counter() - start


def open_close_all(paths: list[str]) -> float:
    open_, close, flags = os.open, os.close, os.O_RDONLY
    start = time.perf_counter()
    for p in paths:
        close(open_(p, flags))
    return time.perf_counter() - start


# -- in-process copies of mapped memory (the limit) -------------------------------------------
class MappedRegion:
    """[offset, offset+size) of a memory file, mapped MAP_SHARED afresh by each `map()`."""

    def __init__(self, path: Path, offset: int, size: int) -> None:
        self.path = path
        self.offset = offset
        self.size = size

    def map(self, *, writable: bool = False, advice: int | None = None) -> mmap.mmap:
        fd = os.open(self.path, os.O_RDWR if writable else os.O_RDONLY)
        try:
            prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
            mapping = mmap.mmap(fd, self.size, mmap.MAP_SHARED, prot, offset=self.offset)
        finally:
            os.close(fd)
        if advice is not None:
            mapping.madvise(advice)
        return mapping


def copy_out(mapping: mmap.mmap | bytearray, size: int, dest: bytearray | None = None) -> float:
    """Copy mapped bytes (or process memory) out: into one reused 1 MiB buffer, or all into
    `dest` (large)."""
    source = memoryview(mapping)
    try:
        start = time.perf_counter()
        if dest is not None:
            memoryview(dest)[:size] = source[:size]
        else:
            target = memoryview(bytearray(CHUNK))
            for off in range(0, size, CHUNK):
                n = min(CHUNK, size - off)
                target[:n] = source[off : off + n]
        return time.perf_counter() - start
    finally:
        source.release()


def copy_in(mapping: mmap.mmap, size: int, src: bytes | bytearray | mmap.mmap) -> float:
    """Copy into mapped memory: a 1 MiB source repeated, or a large source once."""
    target = memoryview(mapping)
    source = memoryview(src)
    try:
        start = time.perf_counter()
        if len(source) >= size:
            target[:size] = source[:size]
        else:
            for off in range(0, size, CHUNK):
                n = min(CHUNK, size - off)
                target[off : off + n] = source[:n]
        return time.perf_counter() - start
    finally:
        target.release()
        source.release()


_SMAPS_HEADER = re.compile(r"^[0-9a-f]+-[0-9a-f]+ \S+ [0-9a-f]+ ([0-9a-f]+):([0-9a-f]+) (\d+)")


def huge_mapped(path: Path) -> int:
    """Bytes of file `path` this process maps with 2 MiB (PMD) pages, from /proc/self/smaps
    (ShmemPmdMapped/FilePmdMapped of every mapping of its inode)."""
    st = os.stat(path)
    total = 0
    mine = False
    with open("/proc/self/smaps") as f:
        for line in f:
            header = _SMAPS_HEADER.match(line)
            if header:
                major, minor, inode = int(header[1], 16), int(header[2], 16), int(header[3])
                mine = inode == st.st_ino and os.makedev(major, minor) == st.st_dev
            elif mine and line.startswith(("ShmemPmdMapped:", "FilePmdMapped:")):
                total += int(line.split()[1]) * 1024
    return total


def populate_then_copy(region: MappedRegion) -> float:
    """A fresh mapping prefaulted with MADV_POPULATE_READ, then copied (both timed)."""
    start = time.perf_counter()
    mapping = region.map()
    try:
        mapping.madvise(MADV_POPULATE_READ)
        copy_out(mapping, region.size)
        return time.perf_counter() - start
    finally:
        mapping.close()


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


_libc.process_vm_readv.argtypes = [
    ctypes.c_int,
    ctypes.POINTER(_IoVec),
    ctypes.c_ulong,
    ctypes.POINTER(_IoVec),
    ctypes.c_ulong,
    ctypes.c_ulong,
]
_libc.process_vm_readv.restype = ctypes.c_ssize_t


def kernel_copy_out(address: int, size: int, how: str) -> float:
    """Copy [address, address+size) of this process out in 1 MiB pieces by a kernel copy
    (a bad page is an error, not a SIGBUS): `how` is "proc_mem" (preadv on /proc/self/mem,
    what famfs_py.mapping does) or "vm_readv" (process_vm_readv on ourselves)."""
    target = bytearray(CHUNK)
    view = memoryview(target)
    local = (_IoVec * 1)(
        _IoVec(ctypes.addressof((ctypes.c_char * CHUNK).from_buffer(target)), CHUNK)
    )
    pid = os.getpid()
    mem = os.open("/proc/self/mem", os.O_RDONLY)
    try:
        start = time.perf_counter()
        for off in range(0, size, CHUNK):
            n = min(CHUNK, size - off)
            if how == "proc_mem":
                got = os.preadv(mem, [view[:n]], address + off)
            else:
                remote = (_IoVec * 1)(_IoVec(address + off, n))
                local[0].len = n
                got = _libc.process_vm_readv(pid, local, 1, remote, 1, 0)
            if got != n:
                raise OSError(ctypes.get_errno(), f"{how}: copied {got} of {n} bytes")
        return time.perf_counter() - start
    finally:
        os.close(mem)
        view.release()


def rand_copy(mapping: mmap.mmap, offsets: list[int]) -> float:
    """4 KiB in-process copies at each offset (a Python loop: the IOPS limit here)."""
    source = memoryview(mapping)
    target = memoryview(bytearray(PAGE))
    try:
        start = time.perf_counter()
        for off in offsets:
            target[:] = source[off : off + PAGE]
        return time.perf_counter() - start
    finally:
        source.release()
