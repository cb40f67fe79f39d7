"""DeviceMemory: one mapping of a whole dax device, and the only way famfs-py touches it.

Python cannot survive a SIGBUS inside its own memory copy, so every copy to or from device
memory is made by the kernel: reads and writes go through /proc/self/mem at the mapping's
address (a fault becomes EIO), and `view()` hands out memoryviews that are only ever given to
the kernel (a FUSE reply, os.readv/os.write), where a fault becomes EFAULT.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import threading

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_MAP_FAILED = ctypes.c_void_p(-1).value
_MAP_FIXED = 0x10
_PROT_NONE = 0
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


def _mmap(addr: int | None, length: int, prot: int, flags: int, fd: int, offset: int = 0) -> int:
    ptr = _libc.mmap(addr, length, prot, flags, fd, offset)
    if ptr in (None, _MAP_FAILED):
        err = ctypes.get_errno()
        raise OSError(err, f"mmap of {length:#x} bytes failed: {os.strerror(err)}")
    return int(ptr)


class DeviceMemory:
    """A MAP_SHARED mapping of a device node (or of `size` bytes of it from `offset`),
    copied to and from by the kernel only. Offsets given to its methods are relative to
    the start of the mapping."""

    def __init__(
        self, node: str | os.PathLike[str] | int, size: int, *, writable: bool, offset: int = 0
    ) -> None:
        self.size = size
        self.writable = writable
        flags = (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC
        self._fd = os.dup(node) if isinstance(node, int) else os.open(node, flags)
        try:
            prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
            self.base = _mmap(None, size, prot, mmap.MAP_SHARED, self._fd, offset)
            _libc.madvise(self.base, size, _MADV_HUGEPAGE)  # honoured where THP allows it
            self._mem = os.open("/proc/self/mem", os.O_RDWR | os.O_CLOEXEC)
        except BaseException:
            os.close(self._fd)
            raise
        self._array = (ctypes.c_ubyte * size).from_address(self.base)
        self._view = memoryview(self._array).cast("B")
        if not writable:
            self._view = self._view.toreadonly()
        self._revoked = False
        self._lock = threading.Lock()

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
        done = 0
        while done < len(target):
            try:
                n = os.preadv(self._mem, [target[done:]], self.base + offset + done)
            except OSError as exc:
                raise MemoryFault(offset + done, len(target) - done, exc) from exc
            if n <= 0:
                raise MemoryFault(offset + done, len(target) - done)
            done += n

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Copy bytes into device memory (EIO-safe)."""
        if not self.writable:
            raise OSError(errno.EROFS, "device memory is mapped read-only")
        source = memoryview(data).cast("B")
        self._check(offset, len(source))
        done = 0
        while done < len(source):
            try:
                n = os.pwrite(self._mem, source[done:], self.base + offset + done)
            except OSError as exc:
                raise MemoryFault(offset + done, len(source) - done, exc) from exc
            if n <= 0:
                raise MemoryFault(offset + done, len(source) - done)
            done += n

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
        """Withdraw the mapping: the range becomes inaccessible (PROT_NONE) for good, so
        views still held by anyone fault (EFAULT in the kernel) instead of reading memory
        that a later mapping could reuse."""
        with self._lock:
            if self._revoked:
                return
            self._revoked = True
            anon = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _MAP_FIXED
            _mmap(self.base, self.size, _PROT_NONE, anon, -1)
            os.close(self._fd)

    def close(self) -> None:
        self.revoke()
        with self._lock:
            if self._mem >= 0:
                os.close(self._mem)
                self._mem = -1

    def __enter__(self) -> DeviceMemory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
