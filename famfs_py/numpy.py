"""numpy arrays in famfs files, in the `.npy` format, the array's data being device memory.

- `load(path, mmap_mode="r"|"r+")`: the array stored in `.npy` file `path`, whose data is the
  file's device memory itself: no copy, nothing in the page cache. With "r+" the array is
  writable and its stores are stores to the shared memory: call `flush(array)` after
  storing, and another host's array loaded from the same file sees them after
  `invalidate(array)` there (memory that hosts share is not kept coherent with their CPU
  caches: README, "When to flush and invalidate"). The mapping stays alive, and watched for
  device removal, as long as the array or any view of it is.
- `save(path, array)`: a new famfs file in the `.npy` format holding `array` (written and
  published by famfs_py.publish: the master only), so that plain `numpy.load` reads it
  through the mount too.

A caller who may read a file but not map the device (famfs_py.lease) gets `numpy.load`
through the mount instead, with one CopyWarning. A file that is not `.npy` raises WrongFormat
naming what it is; a poisoned file raises OSError(EIO) when it is loaded.
"""

from __future__ import annotations

import io
import os
from typing import Any

import numpy
import numpy.lib.format as npy_format

from famfs_py.lease import Lease, WrongFormat, check_magic, open_lease
from famfs_py.publish import write_new

MODES = ("r", "r+")
HEADER_MAX = 1 << 20  # bytes read to parse the header (numpy writes far less)


class _Memory:
    """A lease's bytes as a numpy array interface: every array loaded from it has one of
    these as its (ultimate) base, which keeps the lease, and so the mapping, alive."""

    def __init__(self, lease: Lease) -> None:
        self.lease = lease
        self.__array_interface__ = {
            "version": 3,
            "shape": (len(lease),),
            "typestr": "|u1",
            "data": (lease.address, not lease.writable),
        }


class _LeaseReader(io.RawIOBase):
    """A lease's first bytes as a file, for numpy's header parser (kernel copies: EIO-safe)."""

    def __init__(self, lease: Lease) -> None:
        super().__init__()
        self._head = lease.read(0, HEADER_MAX)
        self.position = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        end = len(self._head) if size < 0 else min(self.position + size, len(self._head))
        data = self._head[self.position : end]
        self.position = end
        return data


def _header(name: str, lease: Lease) -> tuple[tuple[int, ...], bool, numpy.dtype[Any], int]:
    reader = _LeaseReader(lease)
    check_magic(
        name,
        reader.read(6),
        expected=(npy_format.MAGIC_PREFIX,),
        format_name="a numpy .npy file",
        hint="famfs_py.numpy.load reads .npy files (numpy.save's format)",
    )
    reader.position = 0
    try:
        version = npy_format.read_magic(reader)
        if version == (1, 0):
            shape, fortran, dtype = npy_format.read_array_header_1_0(reader)
        else:
            shape, fortran, dtype = npy_format.read_array_header_2_0(reader)
    except ValueError as exc:
        raise WrongFormat(f"{name} has a bad .npy header: {exc}") from None
    if dtype.hasobject:
        raise WrongFormat(
            f"{name} holds Python objects (pickled), which cannot be mapped; "
            "numpy.load(path, allow_pickle=True) reads it, if you trust it"
        )
    return tuple(shape), bool(fortran), dtype, reader.position


def load(path: str | os.PathLike[str], mmap_mode: str = "r") -> numpy.ndarray[Any, Any]:
    """The array in `.npy` file `path`, its data the file's device memory ("r": read-only,
    "r+": writable). Raises WrongFormat for a file that is not `.npy` (or holds Python
    objects), OSError(EIO) for a poisoned file or a removed device, OSError(EROFS) for "r+"
    on a client mounted without --rw, PermissionError where the file's mode does not allow
    it."""
    if mmap_mode not in MODES:
        raise ValueError(f"mmap_mode must be 'r' or 'r+', not {mmap_mode!r}")
    name = os.fspath(path)
    lease = open_lease(name, mmap_mode, what="famfs_py.numpy.load")
    if lease is None:  # through the mount: a copy ("r"), or the page cache's mapping ("r+")
        loaded: numpy.ndarray[Any, Any] = (
            numpy.load(name) if mmap_mode == "r" else numpy.load(name, mmap_mode="r+")
        )
        return loaded
    shape, fortran, dtype, offset = _header(name, lease)
    count = int(numpy.prod(shape, dtype=numpy.int64))
    end = offset + count * dtype.itemsize
    if end > len(lease):
        raise WrongFormat(
            f"{name} is a truncated .npy file: its header says {end} bytes, it has {len(lease)}"
        )
    raw = numpy.asarray(_Memory(lease))[offset:end]
    return raw.view(dtype).reshape(shape, order="F" if fortran else "C")


def flush(array: numpy.ndarray[Any, Any]) -> None:
    """Make this host's stores to `array` (loaded with "r+") visible to other hosts."""
    _lease_of(array).mapped.flush(*_span(array))


def invalidate(array: numpy.ndarray[Any, Any]) -> None:
    """Drop this CPU's cached copy of `array`'s memory, so that its next loads read what other
    hosts stored (and flushed) since."""
    _lease_of(array).mapped.invalidate(*_span(array))


def _lease_of(array: numpy.ndarray[Any, Any]) -> Lease:
    base: object = array
    while isinstance(base, numpy.ndarray):
        base = base.base
    if not isinstance(base, _Memory):
        raise ValueError("the array is not famfs device memory (load it with famfs_py.numpy)")
    return base.lease


def _span(array: numpy.ndarray[Any, Any]) -> tuple[int, int]:
    """(offset in the file, length) of the bytes `array` spans."""
    start = int(array.__array_interface__["data"][0])
    low = high = start
    for n, stride in zip(array.shape, array.strides, strict=True):
        if n == 0:
            return start - _lease_of(array).address, 0
        if stride < 0:
            low += (n - 1) * stride
        else:
            high += (n - 1) * stride
    return low - _lease_of(array).address, high + array.itemsize - low


def _npy_header(array: numpy.ndarray[Any, Any]) -> bytes:
    fields = npy_format.header_data_from_array_1_0(array)
    out = io.BytesIO()
    try:
        npy_format.write_array_header_1_0(out, fields)
    except ValueError:  # a header too long for version 1.0
        out = io.BytesIO()
        npy_format.write_array_header_2_0(out, fields)
    return out.getvalue()


def save(path: str | os.PathLike[str], array: Any, *, mode: int = 0o644) -> None:
    """Write `array` into new famfs file `path` in the `.npy` format (plain `numpy.load` reads
    it through the mount; `load` maps it). FileExistsError if `path` exists; the master only.
    Published as famfs_py.publish says."""
    data = numpy.asanyarray(array)
    if data.dtype.hasobject:
        raise ValueError("arrays of Python objects cannot be shared as device memory")
    header = _npy_header(data)
    fortran = data.flags.f_contiguous and not data.flags.c_contiguous
    body = numpy.ascontiguousarray(data.T if fortran else data)

    def fill(f: Any) -> None:
        f.write(header)
        if body.nbytes:
            f.write(body.reshape(-1).view(numpy.uint8).data)

    write_new(path, len(header) + body.nbytes, fill, mode=mode)
