"""The fsspec protocol `famfs://` (the `fsspec` extra), registered through the package's entry
points (`fsspec.specs`), so that `fsspec.open("famfs:///mnt/famfs/x.parquet")`,
`pandas.read_parquet("famfs:///mnt/famfs/x.parquet")` and `dask.dataframe.read_parquet(
"famfs:///mnt/famfs/dataset/")` read famfs files from device memory.

A URL's path is the file's absolute path on this machine, under a famfs-py mount. Files
opened for reading are `MappedReader`s: reads copy from the file's device memory by kernel
copies (a poisoned page raises OSError(EIO)), nothing goes through the page cache. Listing
and stat go through the mount. Writing ("wb", "xb") creates the file through the master's
mount, logged once it is closed complete (where the mount creates files: issue 24); famfs
files are never removed, moved or appended to. A caller who may read a file but not map the
device reads it through the mount instead (one CopyWarning, famfs_py.lease).
"""

from __future__ import annotations

import errno
import io
import os
import stat
from typing import Any

from fsspec.spec import AbstractFileSystem

from famfs_py.lease import Lease, open_lease

SCHEME = "famfs://"


class MappedReader(io.RawIOBase):
    """A read-only, seekable binary file over a famfs file's device memory."""

    def __init__(self, lease: Lease) -> None:
        super().__init__()
        self._lease: Lease | None = lease
        self.size = len(lease)
        self.position = 0
        self.name = lease.path

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def _held(self) -> Lease:
        if self._lease is None:
            raise ValueError(f"{self.name}: I/O on a closed file")
        return self._lease

    def read(self, size: int | None = -1) -> bytes:
        lease = self._held()
        n = self.size - self.position if size is None or size < 0 else size
        data = lease.read(self.position, n)
        self.position += len(data)
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: Any) -> int:
        target = memoryview(buffer).cast("B")
        data = self.read(len(target))
        target[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._held()
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise OSError(errno.EINVAL, f"{self.name}: seek to {base + offset}")
        self.position = base + offset
        return self.position

    def tell(self) -> int:
        return self.position

    def close(self) -> None:
        self._lease = None  # the mapping goes when nothing else holds it
        super().close()


class FamfsSpecFileSystem(AbstractFileSystem):
    """fsspec's view of famfs-py mounts: paths are this machine's absolute paths."""

    protocol = "famfs"
    root_marker = "/"

    @classmethod
    def _strip_protocol(cls, path: Any) -> str:
        text = os.fspath(path) if not isinstance(path, str) else path
        if text.startswith(SCHEME):
            text = text[len(SCHEME) :]
        text = text.rstrip("/") or "/"
        return text if text.startswith("/") else os.path.abspath(text)

    def unstrip_protocol(self, name: str) -> str:
        return SCHEME + self._strip_protocol(name)

    def info(self, path: Any, **kwargs: Any) -> dict[str, Any]:
        name = self._strip_protocol(path)
        st = os.stat(name)
        kind = "directory" if stat.S_ISDIR(st.st_mode) else "file"
        return {
            "name": name,
            "size": st.st_size if kind == "file" else 0,
            "type": kind,
            "mode": st.st_mode,
            "uid": st.st_uid,
            "gid": st.st_gid,
            "mtime": st.st_mtime,
            "created": st.st_ctime,
        }

    def ls(self, path: Any, detail: bool = True, **kwargs: Any) -> list[Any]:
        name = self._strip_protocol(path)
        top = self.info(name)
        if top["type"] != "directory":
            return [top] if detail else [name]
        with os.scandir(name) as entries:
            paths = sorted(entry.path for entry in entries)
        return [self.info(p) for p in paths] if detail else paths

    def mkdir(self, path: Any, create_parents: bool = True, **kwargs: Any) -> None:
        name = self._strip_protocol(path)
        if create_parents:
            os.makedirs(name, exist_ok=True)
        else:
            os.mkdir(name)

    def makedirs(self, path: Any, exist_ok: bool = False) -> None:
        os.makedirs(self._strip_protocol(path), exist_ok=exist_ok)

    def created(self, path: Any) -> Any:
        import datetime

        return datetime.datetime.fromtimestamp(self.info(path)["created"], datetime.UTC)

    def modified(self, path: Any) -> Any:
        import datetime

        return datetime.datetime.fromtimestamp(self.info(path)["mtime"], datetime.UTC)

    def _open(self, path: Any, mode: str = "rb", **kwargs: Any) -> Any:
        name = self._strip_protocol(path)
        if mode == "rb":
            lease = open_lease(name, "r", what="famfs_py.fsspec")
            return MappedReader(lease) if lease is not None else open(name, "rb")
        if mode in ("wb", "xb"):
            return open(name, "xb")
        raise OSError(
            errno.EPERM, f"{name}: mode {mode!r}: famfs files are read, or written once whole"
        )
