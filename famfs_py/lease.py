"""What the data-stack modules (famfs_py.arrow, famfs_py.numpy, famfs_py.fsspec) share.

- `Lease`: a mapped file (famfs_py.api) held open, and watched for device removal, for as
  long as anything built on its memory lives (an Arrow buffer, a numpy array, a reader):
  those objects keep the lease as their base, and the mapping is closed when the last of them
  is released. Closing a `MappedFile` early would stop its removal watch while the memory is
  still used; a lease never does.
- `open_lease`: the lease, or None for a caller who may read the file through the mount but
  may not map the device (not root, not in the device's group): the caller then reads the
  file through the mount, which copies it, and says so once with a `CopyWarning`.
- `WrongFormat`: a file that is not in the format asked for, named in the message.

Removal and poison are the mapped API's: a poisoned file is refused (OSError EIO) when it is
opened; a device removed while its memory is in use withdraws the mapping (touching it then
faults, as touching a removed device's pages does).
"""

from __future__ import annotations

import errno
import os
import warnings
import weakref

from famfs_py.api import MappedFile, open_mapped


class CopyWarning(UserWarning):
    """A famfs file was read through the mount (a copy) instead of mapped."""


class WrongFormat(ValueError):
    """A file is not in the format the reader expects."""


class Lease:
    """Holds `mapped` open while this object lives; it closes the mapping when collected.
    Objects built on the memory keep a reference to their lease (their "base")."""

    __slots__ = ("__weakref__", "mapped")

    def __init__(self, mapped: MappedFile) -> None:
        self.mapped = mapped
        weakref.finalize(self, mapped.close)

    @property
    def path(self) -> str:
        return self.mapped.path

    @property
    def address(self) -> int:
        """The address of the file's byte 0 in this process."""
        return self.mapped.address

    @property
    def writable(self) -> bool:
        return not self.mapped.readonly

    def __len__(self) -> int:
        return len(self.mapped)

    def read(self, offset: int, length: int) -> bytes:
        """File bytes by a kernel copy: a poisoned page raises OSError(EIO), not SIGBUS."""
        offset = max(0, min(offset, len(self)))
        return self.mapped.read_range(offset, min(length, len(self) - offset))

    def __repr__(self) -> str:
        return f"<famfs_py.lease.Lease of {self.mapped!r}>"


def open_lease(path: str | os.PathLike[str], mode: str = "r", *, what: str) -> Lease | None:
    """Map famfs file `path` ("r" or "r+"). None, after a CopyWarning naming `what` (the
    caller, e.g. "famfs_py.arrow.read_table"), when this process may use the file but not the
    device: the caller reads it through the mount instead. Everything else raises as
    `open_mapped` does."""
    name = os.fspath(path)
    try:
        return Lease(open_mapped(name, mode))
    except PermissionError as exc:
        wanted = os.R_OK | (os.W_OK if mode == "r+" else 0)
        if exc.errno != errno.EACCES or not os.access(name, wanted):
            raise
        warnings.warn(
            f"{what}: {name}: this process may not map the device ({exc.strerror}); "
            "reading it through the mount instead, which copies it",
            CopyWarning,
            stacklevel=3,
        )
        return None


def check_magic(
    name: str, head: bytes, *, expected: tuple[bytes, ...], format_name: str, hint: str
) -> None:
    """WrongFormat unless `head` (the file's first bytes) starts with one of `expected`."""
    if any(head.startswith(magic) for magic in expected):
        return
    seen = describe(head)
    raise WrongFormat(f"{name} is not {format_name} ({seen}); {hint}")


KNOWN_FORMATS = (
    (b"ARROW1", "an Arrow IPC file"),
    (b"\xff\xff\xff\xff", "an Arrow IPC stream"),
    (b"PAR1", "a Parquet file"),
    (b"\x93NUMPY", "a numpy .npy file"),
    (b"PK\x03\x04", "a zip archive (a numpy .npz?)"),
)


def describe(head: bytes) -> str:
    """What a file's first bytes say it is, for error messages."""
    for magic, what in KNOWN_FORMATS:
        if head.startswith(magic):
            return f"it is {what}"
    if not head.strip(b"\0"):
        return "its first bytes are zeros: never written?"
    return f"it starts with {head[:8]!r}"
