"""The flush modes a mount or command can ask for (`-o flush=`), on their own so that the
command line can name them without loading the cache-flushing machinery (famfs_py.dax.cache)."""

from __future__ import annotations

from enum import StrEnum


class FlushMode(StrEnum):
    """Whether to flush CPU caches where data crosses hosts."""

    AUTO = "auto"  # flush unless the memory is known coherent
    ON = "on"
    OFF = "off"  # memory known coherent between the hosts


FLUSH_MODES = tuple(FlushMode)
