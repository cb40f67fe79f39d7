"""Files as memory: `open_mapped(path)` maps a famfs file's device memory into this process.

The result is an `mmap.mmap` (buffer protocol, context manager, `numpy.frombuffer` works)
whose bytes *are* the file's bytes in device memory: no page cache, no copy, and writes are
seen by every host that maps the same memory. Every file is one contiguous view: a file of
several extents, or an interleaved file, is stitched together in this process's address
space chunk by chunk (each piece mapped over a placeholder with MAP_FIXED).

What it trusts: the daemon of the mount holding `path` checks the caller's uid and groups
against the file's mode and owner and hands out a descriptor of the *device* (read-only for
mode "r"). A process that holds that descriptor could map the whole device, so give
`open_mapped` only to users you would let read (or, for "r+", write) the device.

Removal: when the device announces removal, the daemon tells every holder; the mapping is
then replaced by inaccessible memory (touching it raises SIGSEGV, as touching a removed
device's pages does) and the methods here raise OSError(EIO).
"""

from __future__ import annotations

import ctypes
import errno
import json
import mmap
import os
import threading
from typing import Any

from famfs_py import channel
from famfs_py.dax import cache
from famfs_py.dax.memory import _MAP_FIXED, _PROT_NONE, _mmap
from famfs_py.fs.fmap import FileMap
from famfs_py.mapping import fmap_from_reply

PAGE = mmap.PAGESIZE
MODES = ("r", "r+")


class _PyBuffer(ctypes.Structure):
    _fields_ = [
        ("buf", ctypes.c_void_p),
        ("obj", ctypes.py_object),
        ("len", ctypes.c_ssize_t),
        ("itemsize", ctypes.c_ssize_t),
        ("readonly", ctypes.c_int),
        ("ndim", ctypes.c_int),
        ("format", ctypes.c_char_p),
        ("shape", ctypes.c_void_p),
        ("strides", ctypes.c_void_p),
        ("suboffsets", ctypes.c_void_p),
        ("internal", ctypes.c_void_p),
    ]


_get_buffer = ctypes.pythonapi.PyObject_GetBuffer
_get_buffer.argtypes = [ctypes.py_object, ctypes.POINTER(_PyBuffer), ctypes.c_int]
_release_buffer = ctypes.pythonapi.PyBuffer_Release
_release_buffer.argtypes = [ctypes.POINTER(_PyBuffer)]


def _address(obj: object) -> int:
    view = _PyBuffer()
    if _get_buffer(obj, ctypes.byref(view), 0) != 0:
        raise OSError(errno.EINVAL, "cannot find the mapping's address")
    try:
        return int(view.buf)
    finally:
        _release_buffer(ctypes.byref(view))


def _page_up(n: int) -> int:
    return -(-n // PAGE) * PAGE


class MappedFile(mmap.mmap):
    """A famfs file's device memory, mapped. Use `open_mapped` to make one."""

    path: str
    size: int
    filemap: FileMap
    _channel: channel.Channel | None
    _base: int
    _revoked: bool
    _lock: threading.Lock
    cache_policy: cache.Policy  # whether flush()/invalidate() run the cache instructions

    @property
    def revoked(self) -> bool:
        """True once the device announced removal and the mapping was withdrawn."""
        return self._revoked

    @property
    def pieces(self) -> list[tuple[int, int, int]]:
        """(file offset, length, device offset) of each contiguous piece, in file order."""
        return [(p.file_offset, p.length, p.dev_offset) for p in self.filemap.pieces]

    def read_range(self, offset: int, length: int) -> bytes:
        """Copy file bytes out with a kernel copy: a bad page raises OSError(EIO) here
        instead of SIGBUS."""
        if self._revoked:
            raise OSError(errno.EIO, f"{self.path}: the device was removed")
        if offset < 0 or offset + length > self.size:
            raise ValueError(f"range {offset}+{length} is outside {self.path} ({self.size})")
        buf = bytearray(length)
        fd = os.open("/proc/self/mem", os.O_RDONLY | os.O_CLOEXEC)
        try:
            done = 0
            while done < length:
                n = os.preadv(fd, [memoryview(buf)[done:]], self._base + offset + done)
                if n <= 0:
                    break
                done += n
        except OSError as exc:
            raise OSError(errno.EIO, f"{self.path}: memory error at {offset + done}") from exc
        finally:
            os.close(fd)
        return bytes(buf)

    def flush(self, offset: int = 0, size: int | None = None) -> None:  # type: ignore[override]
        """Make this host's stores to [offset, offset+size) visible to other hosts: write this
        CPU's cache lines of the range back to memory (CLWB/CLFLUSHOPT/CLFLUSH, then a fence;
        see famfs_py.dax.cache). Call it after storing data another host will read.

        Does nothing where the mount says memory is coherent (`status` shows which is in
        force: emulated devices, `-o flush=off`)."""
        end = self._check_range(offset, size)
        self.cache_policy.flush(self, offset, end - offset)

    def invalidate(self, offset: int = 0, size: int | None = None) -> None:
        """Drop this CPU's cached copy of [offset, offset+size) (written back first if dirty),
        so that the next loads read what other hosts stored. Call it before reading data
        another host wrote (and flushed). A no-op where memory is coherent (see `flush`)."""
        end = self._check_range(offset, size)
        self.cache_policy.invalidate(self, offset, end - offset)

    def _check_range(self, offset: int, size: int | None) -> int:
        if self._revoked:
            raise OSError(errno.EIO, f"{self.path}: the device was removed")
        end = self.size if size is None else offset + size
        if offset < 0 or end > self.size or end < offset:
            raise ValueError(f"range {offset}..{end} is outside {self.path} ({self.size})")
        return end

    def _revoke(self) -> None:
        """Replace the device pages with inaccessible memory (the daemon said so)."""
        with self._lock:
            if self._revoked or self.closed:
                return
            self._revoked = True
            anon = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _MAP_FIXED
            _mmap(self._base, _page_up(self.size), _PROT_NONE, anon, -1)

    def _watch(self) -> None:
        chan = self._channel
        assert chan is not None
        while True:
            try:
                data = chan.sock.recv(4096)
            except OSError:
                return
            if not data:
                return
            try:
                event = json.loads(data).get("event")
            except ValueError:
                continue
            if event == "revoke":
                self._revoke()

    def close(self) -> None:
        chan, self._channel = self._channel, None
        if chan is not None:
            chan.close()
        with self._lock:
            super().close()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "revoked" if self._revoked else ("closed" if self.closed else "open")
        return f"<MappedFile {self.path!r} {self.size} bytes {state}>"


def open_mapped(path: str | os.PathLike[str], mode: str = "r") -> MappedFile:
    """Map famfs file `path` ("r": read-only, "r+": read-write) straight onto its device
    memory. Raises PermissionError (EACCES) when the file's mode and owner do not allow it,
    OSError(EROFS) for "r+" where data is read-only (a client mounted without --rw), and
    OSError(EIO) for a poisoned file or a removed device."""
    if mode not in MODES:
        raise ValueError(f"mode must be 'r' or 'r+', not {mode!r}")
    write = mode == "r+"
    where = channel.locate(os.fspath(path))
    chan = channel.Channel(where.mountpoint)
    try:
        reply, fds = _request(chan, where.relpath, write)
        try:
            mapped = _map(reply, fds[0], write)
        finally:
            for fd in fds:
                os.close(fd)
    except BaseException:
        chan.close()
        raise
    mapped.path = os.fspath(path)
    mapped._channel = chan
    threading.Thread(target=mapped._watch, name=f"famfs-map {path}", daemon=True).start()
    return mapped


def _request(chan: channel.Channel, relpath: str, write: bool) -> tuple[dict[str, Any], list]:
    from famfs_py.errors import FamfsError

    try:
        return chan.call_fds("map", path=relpath, write=write, watch=True)
    except FamfsError as exc:
        code = exc.errno or errno.EIO
        kind = PermissionError if code in (errno.EACCES, errno.EPERM) else OSError
        raise kind(code, exc.message) from None


def _map(reply: dict[str, Any], fd: int, write: bool) -> MappedFile:
    size = int(reply["size"])
    filemap = FileMap(fmap_from_reply(reply), size)
    prot = mmap.PROT_READ | (mmap.PROT_WRITE if write else 0)
    pieces = filemap.pieces
    if len(pieces) == 1:
        # one extent: let the kernel place it (a real devdax device aligns it)
        mapped = MappedFile(fd, size, mmap.MAP_SHARED, prot, offset=pieces[0].dev_offset)
        base = _address(mapped)
    else:
        mapped = MappedFile(-1, size, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, prot)
        base = _address(mapped)
        try:
            for piece in pieces:
                length = min(_page_up(piece.length), _page_up(size) - piece.file_offset)
                _mmap(
                    base + piece.file_offset,
                    length,
                    prot,
                    mmap.MAP_SHARED | _MAP_FIXED,
                    fd,
                    piece.dev_offset,
                )
        except BaseException:
            mapped.close()
            raise
    mapped.size = size
    mapped.cache_policy = _cache_policy(reply, fd)
    mapped.filemap = filemap
    mapped._base = base
    mapped._revoked = False
    mapped._lock = threading.Lock()
    mapped._channel = None
    return mapped


def _cache_policy(reply: dict[str, Any], fd: int) -> cache.Policy:
    """The mount's flush policy as its daemon gave it ("flush": true/false); a daemon that
    does not say gets the safe choice, flushing."""
    page_cache = cache.page_cache_backed(fd)
    if reply.get("flush") is False:
        return cache.Policy(False, str(reply.get("flush_reason", "off (the mount says so)")))
    return cache.decide("auto", coherent=False, page_cache=page_cache)
