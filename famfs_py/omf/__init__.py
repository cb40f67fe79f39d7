"""On-media format of famfs (OMF 2.2): superblock, log header, log entries and fmaps.

Pure bytes <-> dataclasses with the exact CRCs of upstream famfs; no I/O happens here.
Offsets and sizes are those of the compiled C structs (tests/data/famfs-ref/layout.json).
The parts: `layout` (sizes, magics, struct layouts), `superblock` (superblock, log header),
`fmap` (extents and strips), `entries` (log entries and their checks); everything public is
named here, so callers say `omf.Superblock`, `omf.LogEntry`. The layout is loaded at once;
the dataclass modules (`entries`, `fmap`, `superblock`) when one of their names is first
used, so that a command which never touches them starts fast.
"""

from __future__ import annotations

from famfs_py.omf.layout import (
    ALLOC_UNIT,
    ALLOC_UNITS,
    CURRENT_VERSION,
    DEFAULT_LOG_LEN,
    DEVNAME_LEN,
    EXT_INTERLEAVE,
    EXT_SIMPLE,
    EXTENT_SIZE,
    FM_ALL_HOSTS_RO,
    FM_ALL_HOSTS_RW,
    FMAP_SIZE,
    LOG_ADD_DAXDEV,
    LOG_DELETE,
    LOG_ENTRY_SIZE,
    LOG_FILE,
    LOG_HEADER_SIZE,
    LOG_INVALID,
    LOG_MAGIC,
    LOG_MKDIR,
    LOG_OFFSET,
    MAX_INTERLEAVED_EXTENTS,
    MAX_NBUCKETS,
    MAX_PATHLEN,
    MAX_SIMPLE_EXTENTS,
    MIN_DEVICE_SIZE,
    OMF_VER_MAJOR,
    OMF_VER_MINOR,
    PAYLOAD_OFFSET,
    PAYLOAD_SIZE,
    SMALL_ALLOC_UNIT,
    SUPER_MAGIC,
    SUPERBLOCK_SIZE,
    SUPERBLOCK_STRUCT_SIZE,
    OmfError,
    entry_offset,
    log_slots,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (commands start fast)
if TYPE_CHECKING:
    from typing import Any

    from famfs_py.omf.entries import (
        AddDaxdevMeta,
        CleanEntry,
        FileMeta,
        LogEntry,
        MkdirMeta,
        Payload,
        RawPayload,
        entry_crc_ok,
        entry_problems,
        fmap_problems,
        path_problem,
        scan_entries,
    )
    from famfs_py.omf.fmap import (
        Extent,
        Fmap,
        InterleavedFmap,
        SimpleFmap,
        UnknownFmap,
        fmap_extents,
        pack_fmap,
        unpack_fmap,
    )
    from famfs_py.omf.superblock import (
        COUNTERS_OFFSET,
        LogHeader,
        Superblock,
        pack_counters,
        valid_log_len,
    )

# name -> the submodule defining it, imported on first use
_LAZY: dict[str, str] = {
    "AddDaxdevMeta": "entries",
    "CleanEntry": "entries",
    "FileMeta": "entries",
    "LogEntry": "entries",
    "MkdirMeta": "entries",
    "Payload": "entries",
    "RawPayload": "entries",
    "entry_crc_ok": "entries",
    "entry_problems": "entries",
    "fmap_problems": "entries",
    "path_problem": "entries",
    "scan_entries": "entries",
    "Extent": "fmap",
    "Fmap": "fmap",
    "InterleavedFmap": "fmap",
    "SimpleFmap": "fmap",
    "UnknownFmap": "fmap",
    "fmap_extents": "fmap",
    "pack_fmap": "fmap",
    "unpack_fmap": "fmap",
    "COUNTERS_OFFSET": "superblock",
    "LogHeader": "superblock",
    "Superblock": "superblock",
    "pack_counters": "superblock",
    "valid_log_len": "superblock",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'famfs_py.omf' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"famfs_py.omf.{module}"), name)
    globals()[name] = value  # once: later uses are plain attribute look-ups
    return value


__all__ = [
    "ALLOC_UNIT",
    "ALLOC_UNITS",
    "COUNTERS_OFFSET",
    "CURRENT_VERSION",
    "DEFAULT_LOG_LEN",
    "DEVNAME_LEN",
    "EXTENT_SIZE",
    "EXT_INTERLEAVE",
    "EXT_SIMPLE",
    "FMAP_SIZE",
    "FM_ALL_HOSTS_RO",
    "FM_ALL_HOSTS_RW",
    "LOG_ADD_DAXDEV",
    "LOG_DELETE",
    "LOG_ENTRY_SIZE",
    "LOG_FILE",
    "LOG_HEADER_SIZE",
    "LOG_INVALID",
    "LOG_MAGIC",
    "LOG_MKDIR",
    "LOG_OFFSET",
    "MAX_INTERLEAVED_EXTENTS",
    "MAX_NBUCKETS",
    "MAX_PATHLEN",
    "MAX_SIMPLE_EXTENTS",
    "MIN_DEVICE_SIZE",
    "OMF_VER_MAJOR",
    "OMF_VER_MINOR",
    "PAYLOAD_OFFSET",
    "PAYLOAD_SIZE",
    "SMALL_ALLOC_UNIT",
    "SUPERBLOCK_SIZE",
    "SUPERBLOCK_STRUCT_SIZE",
    "SUPER_MAGIC",
    "AddDaxdevMeta",
    "CleanEntry",
    "Extent",
    "FileMeta",
    "Fmap",
    "InterleavedFmap",
    "LogEntry",
    "LogHeader",
    "MkdirMeta",
    "OmfError",
    "Payload",
    "RawPayload",
    "SimpleFmap",
    "Superblock",
    "UnknownFmap",
    "entry_crc_ok",
    "entry_offset",
    "entry_problems",
    "fmap_extents",
    "fmap_problems",
    "log_slots",
    "pack_counters",
    "pack_fmap",
    "path_problem",
    "scan_entries",
    "unpack_fmap",
    "valid_log_len",
]
