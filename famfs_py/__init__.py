"""famfs-py: a userspace famfs (shared DAX memory as files) on FUSE.

`famfs_py.open_mapped(path, mode="r")` maps a famfs file's device memory into this process
(see famfs_py.api); `famfs_py.flush(path)` makes this host current for a file in a mount.
Both are imported on first use so that the command line starts fast.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (commands start fast)
if TYPE_CHECKING:
    from typing import Any

__version__ = "0.1.0"
__all__ = ["MappedFile", "__version__", "flush", "open_mapped"]


def __getattr__(name: str) -> Any:
    if name in ("open_mapped", "MappedFile", "flush"):
        from famfs_py import api

        return getattr(api, name)
    raise AttributeError(f"module 'famfs_py' has no attribute {name!r}")
