"""Sizes, magic numbers, struct layouts and the byte helpers every part of the format uses."""

from __future__ import annotations

import struct
import zlib

# --- constants (upstream names in comments) --------------------------------------------------
SUPER_MAGIC = 0x87B282FF  # FAMFS_SUPER_MAGIC
LOG_MAGIC = 0xBADCAFEF00D  # FAMFS_LOG_MAGIC
CURRENT_VERSION = 48  # FAMFS_CURRENT_VERSION
OMF_VER_MAJOR = 2  # FAMFS_OMF_VER_MAJOR
OMF_VER_MINOR = 2  # FAMFS_OMF_VER_MINOR
SUPERBLOCK_SIZE = 0x200000  # FAMFS_SUPERBLOCK_SIZE: the superblock region
LOG_OFFSET = 0x200000  # FAMFS_LOG_OFFSET
DEFAULT_LOG_LEN = 0x800000  # FAMFS_LOG_LEN
ALLOC_UNIT = 0x200000  # FAMFS_ALLOC_UNIT
SMALL_ALLOC_UNIT = 4096  # mkfs --4k: upstream's 4 KiB allocation unit
ALLOC_UNITS = (ALLOC_UNIT, SMALL_ALLOC_UNIT)  # what the superblock may say
MIN_DEVICE_SIZE = 4 << 30  # mkfs refuses smaller devices
DEVNAME_LEN = 64  # FAMFS_DEVNAME_LEN
MAX_PATHLEN = 80  # FAMFS_MAX_PATHLEN (including the NUL)
MAX_SIMPLE_EXTENTS = 16  # FAMFS_MAX_SIMPLE_EXTENTS
MAX_INTERLEAVED_EXTENTS = 1  # FAMFS_MAX_INTERLEAVED_EXTENTS
MAX_NBUCKETS = 64  # FAMFS_MAX_NBUCKETS

FM_ALL_HOSTS_RO = 1  # FAMFS_FM_ALL_HOSTS_RO
FM_ALL_HOSTS_RW = 2  # FAMFS_FM_ALL_HOSTS_RW

LOG_FILE = 0  # FAMFS_LOG_FILE
LOG_MKDIR = 1  # FAMFS_LOG_MKDIR
LOG_DELETE = 2  # FAMFS_LOG_DELETE (never written)
LOG_ADD_DAXDEV = 3  # FAMFS_LOG_ADD_DAXDEV
LOG_INVALID = 4  # FAMFS_LOG_INVALID

EXT_SIMPLE = 0  # FAMFS_EXT_SIMPLE
EXT_INTERLEAVE = 1  # FAMFS_EXT_INTERLEAVE

SUPERBLOCK_STRUCT_SIZE = 200
LOG_HEADER_SIZE = 48
LOG_ENTRY_SIZE = 544
PAYLOAD_OFFSET = 16
PAYLOAD_SIZE = 520
FMAP_SIZE = 416
EXTENT_SIZE = 24

_SB = struct.Struct("<5Q2I16s16s16sQ2IQ16s64s")
_SB_CRC_END = 96
_LOG_HDR = struct.Struct("<6Q")
_LOG_HDR_CRC_END = 24
_ENTRY_HEAD = struct.Struct("<QI4x")
_ENTRY_CRC = struct.Struct("<Q")
_ENTRY_CRC_OFFSET = 536
_FILE_META = struct.Struct("<QIIII80s")
_FMAP_HEAD = struct.Struct("<I4xI4x")
_EXTENT = struct.Struct("<3Q")
_INTERLEAVE_HEAD = struct.Struct("<QQ")
_MKDIR = struct.Struct("<III80s")
_ADD_DAXDEV = struct.Struct("<Q16sI4x")

assert _SB.size == SUPERBLOCK_STRUCT_SIZE
assert _LOG_HDR.size == LOG_HEADER_SIZE
assert _FILE_META.size + FMAP_SIZE == PAYLOAD_SIZE
assert _ADD_DAXDEV.size == 32


def log_slots(log_len: int) -> int:
    """Number of entry slots in a log of `log_len` bytes (8 MiB -> 15420)."""
    return (log_len - LOG_HEADER_SIZE) // LOG_ENTRY_SIZE


def entry_offset(index: int) -> int:
    """Offset of entry `index` relative to the start of the log."""
    return LOG_HEADER_SIZE + LOG_ENTRY_SIZE * index


class OmfError(ValueError):
    """A structure could not be decoded at all (wrong length)."""


def _cstring(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _encode_path(path: str) -> bytes:
    return path.encode("utf-8", "surrogateescape")


def _fixed(text: str, size: int) -> bytes:
    raw = _encode_path(text)
    if len(raw) > size:
        raise OmfError(f"{text!r} is longer than {size} bytes")
    return raw.ljust(size, b"\0")


def _crc(data: bytes | memoryview) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF
