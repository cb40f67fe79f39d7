"""Arrow tables in famfs files, zero-copy on every host (the `arrow` extra: pyarrow).

- `read_table(path)`: a `pyarrow.Table` read from an Arrow IPC file (or stream) whose buffers
  are the file's device memory itself: no copy, nothing in the page cache. The mapping stays
  alive, and watched for device removal, as long as any buffer of the table (or of a slice,
  a column, a batch taken from it) is alive, and is unmapped when the last one goes.
- `write_table(table, path)`: a new famfs file holding `table` as an Arrow IPC file of exactly
  the size it needs, published for other hosts once complete (famfs_py.publish).
- `FamfsFileSystem()`: a `pyarrow.fs` filesystem over famfs-py mounts. Files opened through it
  are read from device memory (`pyarrow.BufferReader` over the mapping), so
  `pyarrow.dataset.dataset(dir, filesystem=FamfsFileSystem(), format="ipc")` scans a
  directory of tables zero-copy and `pyarrow.parquet.read_table(path, filesystem=...)` reads
  a Parquet file's bytes from device memory (decoding them makes the table, as always), with
  nothing in the page cache. Listing and stat go through the mount; files it writes are
  created through the master's mount (so `pyarrow.parquet.write_table(table, path,
  filesystem=...)` works there).

A caller who may read a file but not map the device (famfs_py.lease) gets the same results
read through the mount, a copy, with one CopyWarning. A file that is not Arrow IPC raises
WrongFormat naming what it is; a poisoned file raises OSError(EIO) when it is opened.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence

import pyarrow
import pyarrow.fs
import pyarrow.ipc

from famfs_py.lease import Lease, WrongFormat, check_magic, open_lease
from famfs_py.publish import write_new

IPC_FILE_MAGIC = b"ARROW1"
IPC_STREAM_MAGIC = b"\xff\xff\xff\xff"  # a stream's first message starts with a continuation
HEAD = 8  # bytes read to tell the format


def open_buffer(path: str | os.PathLike[str], *, what: str) -> tuple[pyarrow.Buffer, bytes]:
    """File `path` as one Arrow buffer: its device memory (the buffer's base keeps the mapping
    alive), or, for a caller without device access, a copy read through the mount; and the
    file's first bytes, read by a kernel copy (a bad page there raises EIO, not SIGBUS)."""
    name = os.fspath(path)
    lease = open_lease(name, "r", what=what)
    if lease is None:
        with pyarrow.OSFile(name) as f:
            buffer = f.read_buffer()
        return buffer, buffer.slice(0, min(HEAD, buffer.size)).to_pybytes()
    return buffer_of(lease), lease.read(0, HEAD)


def buffer_of(lease: Lease) -> pyarrow.Buffer:
    """An Arrow buffer over a lease's memory, keeping the lease as its base."""
    return pyarrow.foreign_buffer(lease.address, len(lease), base=lease)


def _ipc_reader(
    buffer: pyarrow.Buffer, head: bytes, name: str
) -> pyarrow.ipc.RecordBatchFileReader | pyarrow.ipc.RecordBatchStreamReader:
    check_magic(
        name,
        head,
        expected=(IPC_FILE_MAGIC, IPC_STREAM_MAGIC),
        format_name="an Arrow IPC file",
        hint="famfs_py.arrow.read_table reads Arrow IPC files and streams "
        "(Parquet: pyarrow.parquet.read_table(path, filesystem=famfs_py.arrow.FamfsFileSystem()))",
    )
    try:
        if head.startswith(IPC_FILE_MAGIC):
            return pyarrow.ipc.open_file(buffer)
        return pyarrow.ipc.open_stream(buffer)
    except pyarrow.ArrowInvalid as exc:
        raise WrongFormat(f"{name} is not a complete Arrow IPC file: {exc}") from None


def read_table(
    path: str | os.PathLike[str], *, columns: Sequence[str] | None = None
) -> pyarrow.Table:
    """The table in Arrow IPC file (or stream) `path`, its buffers the file's device memory.
    `columns`: only these (by name). Raises WrongFormat for a file that is not Arrow IPC,
    OSError(EIO) for a poisoned file or a removed device, PermissionError where the file's
    mode does not allow reading it."""
    name = os.fspath(path)
    buffer, head = open_buffer(name, what="famfs_py.arrow.read_table")
    table = _ipc_reader(buffer, head, name).read_all()
    return table.select(list(columns)) if columns is not None else table


def ipc_size(table: pyarrow.Table) -> int:
    """The size of `table` as an Arrow IPC file (counted, not written)."""
    counter = pyarrow.MockOutputStream()
    with pyarrow.ipc.new_file(counter, table.schema) as writer:
        writer.write_table(table)
    return int(counter.size())


def write_table(table: pyarrow.Table, path: str | os.PathLike[str], *, mode: int = 0o644) -> None:
    """Write `table` as an Arrow IPC file into new famfs file `path`, of exactly the size it
    needs, flushed for other hosts and published as famfs_py.publish says (through the
    master's mount: only once complete). FileExistsError if `path` exists; the master only.
    Any host then reads it with `read_table`, zero-copy."""
    size = ipc_size(table)

    def fill(f: object) -> None:
        sink = pyarrow.PythonFile(f, mode="w")
        with pyarrow.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)

    write_new(path, size, fill, mode=mode)


# -- pyarrow.fs ---------------------------------------------------------------------------------
def _file_info(path: str, st: os.stat_result | None) -> pyarrow.fs.FileInfo:
    if st is None:
        return pyarrow.fs.FileInfo(path, pyarrow.fs.FileType.NotFound)
    if stat.S_ISDIR(st.st_mode):
        return pyarrow.fs.FileInfo(path, pyarrow.fs.FileType.Directory, mtime=st.st_mtime)
    return pyarrow.fs.FileInfo(path, pyarrow.fs.FileType.File, size=st.st_size, mtime=st.st_mtime)


def _stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None


def _refused(path: str, what: str) -> OSError:
    return OSError(
        errno.EPERM,
        f"{path}: famfs files are never {what} (famfs-py's log records creation only)",
    )


class FamfsHandler(pyarrow.fs.FileSystemHandler):
    """The `pyarrow.fs.FileSystemHandler` behind FamfsFileSystem: paths are this machine's
    absolute paths (under a famfs-py mount); reads come from device memory."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FamfsHandler)

    def __ne__(self, other: object) -> bool:
        return not isinstance(other, FamfsHandler)

    def __hash__(self) -> int:
        return hash(FamfsHandler)

    def get_type_name(self) -> str:
        return "famfs"

    def normalize_path(self, path: str) -> str:
        return _strip_scheme(path)

    def get_file_info(self, paths: list[str]) -> list[pyarrow.fs.FileInfo]:
        return [_file_info(p, _stat(_strip_scheme(p))) for p in paths]

    def get_file_info_selector(
        self, selector: pyarrow.fs.FileSelector
    ) -> list[pyarrow.fs.FileInfo]:
        base = _strip_scheme(selector.base_dir)
        base_stat = _stat(base)
        if base_stat is None:
            if selector.allow_not_found:
                return []
            raise FileNotFoundError(errno.ENOENT, f"{base}: no such directory")
        if not stat.S_ISDIR(base_stat.st_mode):
            raise NotADirectoryError(errno.ENOTDIR, f"{base}: not a directory")
        found: list[pyarrow.fs.FileInfo] = []
        pending = [base]
        while pending:
            directory = pending.pop()
            with os.scandir(directory) as entries:
                for entry in entries:
                    found.append(_file_info(entry.path, entry.stat()))
                    if selector.recursive and entry.is_dir():
                        pending.append(entry.path)
        return found

    def create_dir(self, path: str, recursive: bool) -> None:
        path = _strip_scheme(path)
        if recursive:
            os.makedirs(path, exist_ok=True)
        elif not os.path.isdir(path):
            os.mkdir(path)

    def delete_dir(self, path: str) -> None:
        raise _refused(path, "deleted")

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        raise _refused(path, "deleted")

    def delete_root_dir_contents(self) -> None:
        raise _refused("/", "deleted")

    def delete_file(self, path: str) -> None:
        raise _refused(path, "deleted")

    def move(self, src: str, dest: str) -> None:
        raise _refused(src, "moved")

    def copy_file(self, src: str, dest: str) -> None:
        with self.open_input_stream(src) as source, self.open_output_stream(dest, None) as out:
            out.write(source.read_buffer())

    def open_input_stream(self, path: str) -> pyarrow.NativeFile:
        return self.open_input_file(path)

    def open_input_file(self, path: str) -> pyarrow.NativeFile:
        """The file's device memory as a random-access Arrow file: reads are slices of it."""
        buffer, _head = open_buffer(_strip_scheme(path), what="famfs_py.arrow.FamfsFileSystem")
        return pyarrow.BufferReader(buffer)

    def open_output_stream(self, path: str, metadata: dict[str, str] | None) -> pyarrow.NativeFile:
        """A new file written through the master's mount, logged once closed complete;
        an existing file is refused."""
        return pyarrow.PythonFile(open(_strip_scheme(path), "xb"), mode="w")

    def open_append_stream(self, path: str, metadata: dict[str, str] | None) -> pyarrow.NativeFile:
        raise OSError(errno.EPERM, f"{path}: famfs files never grow")


def _strip_scheme(path: str) -> str:
    return path[len("famfs://") :] if path.startswith("famfs://") else path


class FamfsFileSystem(pyarrow.fs.PyFileSystem):
    """A pyarrow filesystem whose files are read from famfs device memory (see the module's
    docstring). Paths are absolute paths on this machine, e.g. /mnt/famfs/data/t.arrow."""

    def __init__(self) -> None:
        super().__init__(FamfsHandler())
