"""Device memory: every mapping famfs-py makes of a dax device, and the kernel copies in and out.

Mapping. Device dax refuses a mapping whose device offset, length or fixed address is not a
multiple of the device's `align` (2 MiB, or 1 GiB); `map_range` and `reserve` apply that rule
to every device, emulated ones included, so a wrong mapping fails with the same EINVAL on a
laptop as on a real device. Mappings are held by `Region`s (famfs_py.dax._region), which can
be closed while views are alive (unmapped when the last view goes) and revoked at once.

Copying. Python cannot survive a SIGBUS inside its own memory copy, so every copy to or from
device memory is made by the kernel: `copy_out`/`copy_in` go through /proc/self/mem at the
mapping's address (a bad page becomes EIO), and views are only ever handed to the kernel (a
FUSE reply, os.preadv/os.write), where a fault becomes EFAULT.
"""

from __future__ import annotations

import errno
import mmap
import os
import threading
from typing import TYPE_CHECKING

from famfs_py.dax import _region
from famfs_py.dax._region import Region

if TYPE_CHECKING:
    from famfs_py.dax.device import DaxDevice

__all__ = [
    "DeviceMemory",
    "MemoryFault",
    "MemoryRevoked",
    "Region",
    "align_down",
    "align_up",
    "check_aligned",
    "copy_in",
    "copy_out",
    "map_range",
    "reserve",
    "unmap",
]

_MADV_HUGEPAGE = 14


class MemoryFault(OSError):
    """Device memory at [offset, offset+length) could not be copied (bad page, gone device)."""

    def __init__(self, offset: int, length: int, cause: OSError | None = None) -> None:
        super().__init__(errno.EIO, f"memory fault in device range {offset:#x}+{length:#x}")
        self.offset = offset
        self.length = length
        self.cause = cause


class MemoryRevoked(OSError):
    """The mapping was withdrawn (the device is being removed)."""

    def __init__(self) -> None:
        super().__init__(errno.EIO, "device memory was unmapped (device removed)")


def align_down(value: int, align: int) -> int:
    return value - value % align


def align_up(value: int, align: int) -> int:
    return -(-value // align) * align


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n:#x} bytes"


def check_aligned(align: int, *, offset: int, length: int, address: int | None = None) -> None:
    """OSError(EINVAL) unless a device mapping of [offset, offset+length) (at `address`)
    satisfies device dax's rule: offset, length and address multiples of `align`."""
    if align <= 0 or align & (align - 1):
        raise OSError(errno.EINVAL, f"device alignment {align} is not a power of two")
    bad = [
        f"{name} {value:#x}"
        for name, value in (("offset", offset), ("length", length), ("address", address))
        if value is not None and value % align
    ]
    if bad or length <= 0:
        what = ", ".join(bad) if bad else f"length {length:#x}"
        raise OSError(
            errno.EINVAL,
            f"device mapping refused: {what} is not a multiple of the device's alignment "
            f"({_size(align)}), as device dax requires",
        )


def map_range(
    fd: int,
    length: int,
    *,
    offset: int,
    writable: bool,
    align: int,
    address: int | None = None,
) -> int:
    """MAP_SHARED mapping of device bytes [offset, offset+length) from descriptor `fd`, at a
    fixed `address` (replacing what is there, e.g. a `reserve`d range) or where the kernel
    chooses. Returns its address. OSError(EINVAL) when not aligned as devdax requires."""
    check_aligned(align, offset=offset, length=length, address=address)
    prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
    reserved = address is None
    if address is None:  # where devdax would put it: an address that is a multiple of align
        address = reserve(length, align)
    try:
        base = _region.mmap(address, length, prot, mmap.MAP_SHARED | _region.MAP_FIXED, fd, offset)
    except OSError as exc:
        if reserved:
            _region.munmap(address, length)
        raise OSError(
            exc.errno,
            f"mmap of {_size(length)} at device offset {offset:#x} failed: {exc.strerror}",
        ) from None
    try:
        _region.madvise(base, length, _MADV_HUGEPAGE)  # honoured where THP allows it
    except OSError:
        pass
    return base


def reserve(length: int, align: int) -> int:
    """An inaccessible range of `length` bytes at an address that is a multiple of `align`,
    to map device pieces over (MAP_FIXED) so that they sit side by side."""
    length = align_up(length, mmap.PAGESIZE)
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _region.MAP_NORESERVE
    raw = _region.mmap(0, length + align, _region.PROT_NONE, flags, -1, 0)
    start = align_up(raw, align)
    if start > raw:
        _region.munmap(raw, start - raw)
    tail = raw + length + align - (start + length)
    if tail:
        _region.munmap(start + length, tail)
    return start


def unmap(address: int, length: int) -> None:
    """Unmap a range `map_range` or `reserve` made (one that no Region owns)."""
    _region.munmap(address, length)


# -- kernel copies ----------------------------------------------------------------------------
_proc_mem: tuple[int, int] | None = None  # (pid, fd): /proc/self/mem is bound to one process
_proc_mem_lock = threading.Lock()


def _mem_fd() -> int:
    global _proc_mem
    pid = os.getpid()
    current = _proc_mem
    if current is not None and current[0] == pid:
        return current[1]
    with _proc_mem_lock:
        if _proc_mem is None or _proc_mem[0] != pid:
            _proc_mem = (pid, os.open("/proc/self/mem", os.O_RDWR | os.O_CLOEXEC))
        return _proc_mem[1]


def copy_out(address: int, target: bytearray | memoryview) -> None:
    """Copy len(target) bytes of this process's memory at `address` into `target`, by the
    kernel: a bad page raises MemoryFault (offsets relative to `address`), never SIGBUS."""
    view = memoryview(target).cast("B")
    fd = _mem_fd()
    done = 0
    while done < len(view):
        try:
            n = os.preadv(fd, [view[done:]], address + done)
        except OSError as exc:
            raise MemoryFault(done, len(view) - done, exc) from exc
        if n <= 0:
            raise MemoryFault(done, len(view) - done)
        done += n


def copy_in(address: int, source: bytes | bytearray | memoryview) -> None:
    """Copy `source` into this process's memory at `address`, by the kernel (see copy_out)."""
    view = memoryview(source).cast("B")
    fd = _mem_fd()
    done = 0
    while done < len(view):
        try:
            n = os.pwrite(fd, view[done:], address + done)
        except OSError as exc:
            raise MemoryFault(done, len(view) - done, exc) from exc
        if n <= 0:
            raise MemoryFault(done, len(view) - done)
        done += n


def _shifted(exc: MemoryFault, offset: int) -> MemoryFault:
    return MemoryFault(offset + exc.offset, exc.length, exc.cause)


class DeviceMemory:
    """A MAP_SHARED mapping of a device (or of `size` bytes of it from `offset`), copied to
    and from by the kernel only. Offsets given to its methods are relative to the start of
    the mapping."""

    def __init__(
        self,
        node: str | os.PathLike[str] | int,
        size: int,
        *,
        writable: bool,
        align: int,
        offset: int = 0,
    ) -> None:
        self.size = size
        self.writable = writable
        self.align = align
        flags = (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC
        self._fd = os.dup(node) if isinstance(node, int) else os.open(node, flags)
        try:
            base = map_range(self._fd, size, offset=offset, writable=writable, align=align)
        except BaseException:
            os.close(self._fd)
            raise
        self.base = base
        self.region = Region(base, size, readonly=not writable)
        self._view = memoryview(self.region)
        self._revoked = False
        self._lock = threading.Lock()

    @classmethod
    def of_device(
        cls, device: DaxDevice, *, writable: bool, length: int | None = None
    ) -> DeviceMemory:
        """The device's memory from byte 0: all of it, or the first `length` bytes rounded up
        to the device's alignment (what a probe of the superblock may map)."""
        align = device.align
        size = device.size
        if length is not None:
            size = min(size, align_up(length, align))
        size = align_down(size, align)
        if size <= 0:
            raise OSError(
                errno.EINVAL,
                f"{device.path} holds {device.size} bytes, less than its alignment "
                f"({_size(align)}): nothing of it can be mapped",
            )
        try:
            return cls(device.node, size, writable=writable, align=align)
        except PermissionError:
            access = "read/write" if writable else "read"
            raise PermissionError(
                errno.EACCES,
                f"no {access} access to {device.node}: run as root, or give this user access "
                "to the device (its owner or group)",
            ) from None

    # -- kernel copies -----------------------------------------------------------------------
    def _check(self, offset: int, length: int) -> None:
        if self._revoked:
            raise MemoryRevoked()
        if offset < 0 or length < 0 or offset + length > self.size:
            raise ValueError(f"range {offset:#x}+{length:#x} outside device of {self.size:#x}")

    def read(self, offset: int, length: int) -> bytes:
        """Copy device bytes out (EIO-safe)."""
        buf = bytearray(length)
        self.readinto(offset, buf)
        return bytes(buf)

    def readinto(self, offset: int, buf: bytearray | memoryview) -> None:
        target = memoryview(buf).cast("B")
        self._check(offset, len(target))
        try:
            copy_out(self.base + offset, target)
        except MemoryFault as exc:
            raise _shifted(exc, offset) from exc.cause

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Copy bytes into device memory (EIO-safe)."""
        if not self.writable:
            raise OSError(errno.EROFS, "device memory is mapped read-only")
        source = memoryview(data).cast("B")
        self._check(offset, len(source))
        try:
            copy_in(self.base + offset, source)
        except MemoryFault as exc:
            raise _shifted(exc, offset) from exc.cause

    def view(self, offset: int, length: int) -> memoryview:
        """A view of device memory for the kernel to copy (FUSE replies, readv/write).

        Never index or copy it in Python: a bad page would kill the process.
        """
        self._check(offset, length)
        return self._view[offset : offset + length]

    def dup_fd(self, writable: bool | None = None) -> int:
        """A new descriptor of the mapped node to hand to another process: read-only unless
        `writable` (reopened through /proc, never by its path: the node could be out of
        reach, and a read-only caller must not get a writable descriptor)."""
        if self._revoked:
            raise MemoryRevoked()
        if writable is None:
            return os.dup(self._fd)
        if writable and not self.writable:
            raise OSError(errno.EROFS, "device memory is mapped read-only here")
        flags = (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC
        return os.open(f"/proc/self/fd/{self._fd}", flags)

    @property
    def revoked(self) -> bool:
        return self._revoked

    # -- lifecycle ---------------------------------------------------------------------------
    def revoke(self) -> None:
        """Withdraw the mapping: the range becomes inaccessible for good, so views still held
        by anyone fault (EFAULT in the kernel) instead of reading memory that a later
        mapping could reuse."""
        with self._lock:
            if self._revoked:
                return
            self._revoked = True
            self.region.revoke()
            os.close(self._fd)

    def close(self) -> None:
        """Revoke, then unmap (at once, or when the last view handed out is released)."""
        self.revoke()
        with self._lock:
            try:
                self._view.release()
            except BufferError:
                pass  # something still exports it; the Region unmaps when it lets go
            self.region.close()

    def __enter__(self) -> DeviceMemory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
