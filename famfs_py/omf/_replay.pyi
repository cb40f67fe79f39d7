"""Types of the _replay extension (famfs_py/omf/_replay.c): log entries decoded in bulk."""

from typing import Any

from famfs_py.omf.entries import CleanEntry  # what one clean entry decodes to

def scan(
    buffer: Any, first_index: int, dev_size: int, alloc_unit: int, reserved: int, /
) -> list[CleanEntry | None]: ...
