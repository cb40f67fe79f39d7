"""On-media format of famfs (OMF 2.2): superblock, log header, log entries and fmaps.

Pure bytes <-> dataclasses with the exact CRCs of upstream famfs; no I/O happens here.
Offsets and sizes are those of the compiled C structs (tests/data/famfs-ref/layout.json).
"""

from __future__ import annotations

import struct
import uuid
import zlib
from dataclasses import dataclass, field, replace

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


# --- superblock -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Superblock:
    magic: int
    version: int
    log_offset: int
    log_len: int
    alloc_unit: int
    omf_major: int
    omf_minor: int
    fs_uuid: uuid.UUID
    dev_uuid: uuid.UUID
    system_uuid: uuid.UUID
    crc: int
    sb_flags: int
    dev_size: int
    dd_uuid: uuid.UUID
    dev_name: str

    @classmethod
    def new(
        cls,
        *,
        dev_size: int,
        dev_name: str,
        system_uuid: uuid.UUID,
        log_len: int = DEFAULT_LOG_LEN,
        alloc_unit: int = ALLOC_UNIT,
        fs_uuid: uuid.UUID | None = None,
        dev_uuid: uuid.UUID | None = None,
    ) -> Superblock:
        """A fresh superblock as mkfs writes it, with its CRC computed."""
        if alloc_unit not in ALLOC_UNITS:
            raise OmfError(f"allocation unit {alloc_unit:#x} is neither 2 MiB nor 4 KiB")
        sb = cls(
            magic=SUPER_MAGIC,
            version=CURRENT_VERSION,
            log_offset=LOG_OFFSET,
            log_len=log_len,
            alloc_unit=alloc_unit,
            omf_major=OMF_VER_MAJOR,
            omf_minor=OMF_VER_MINOR,
            fs_uuid=fs_uuid or uuid.uuid4(),
            dev_uuid=dev_uuid or uuid.uuid4(),
            system_uuid=system_uuid,
            crc=0,
            sb_flags=0,
            dev_size=dev_size,
            dd_uuid=uuid.UUID(int=0),
            dev_name=dev_name[: DEVNAME_LEN - 1],
        )
        return replace(sb, crc=sb.computed_crc())

    @classmethod
    def unpack(cls, buf: bytes | memoryview) -> Superblock:
        if len(buf) < SUPERBLOCK_STRUCT_SIZE:
            raise OmfError(f"superblock needs {SUPERBLOCK_STRUCT_SIZE} bytes, got {len(buf)}")
        f = _SB.unpack_from(buf)
        return cls(
            magic=f[0],
            version=f[1],
            log_offset=f[2],
            log_len=f[3],
            alloc_unit=f[4],
            omf_major=f[5],
            omf_minor=f[6],
            fs_uuid=uuid.UUID(bytes=f[7]),
            dev_uuid=uuid.UUID(bytes=f[8]),
            system_uuid=uuid.UUID(bytes=f[9]),
            crc=f[10],
            sb_flags=f[11],
            # f[12] is padding
            dev_size=f[13],
            dd_uuid=uuid.UUID(bytes=f[14]),
            dev_name=_cstring(f[15]),
        )

    def pack(self) -> bytes:
        return _SB.pack(
            self.magic,
            self.version,
            self.log_offset,
            self.log_len,
            self.alloc_unit,
            self.omf_major,
            self.omf_minor,
            self.fs_uuid.bytes,
            self.dev_uuid.bytes,
            self.system_uuid.bytes,
            self.crc,
            self.sb_flags,
            0,
            self.dev_size,
            self.dd_uuid.bytes,
            _fixed(self.dev_name, DEVNAME_LEN),
        )

    def computed_crc(self) -> int:
        return _crc(self.pack()[:_SB_CRC_END])

    def problems(self) -> list[str]:
        """Why this superblock is not a valid famfs superblock (empty list: valid)."""
        if self.magic != SUPER_MAGIC:
            return [f"bad superblock magic {self.magic:#x} (expected {SUPER_MAGIC:#x})"]
        out = []
        if self.crc != self.computed_crc():
            out.append(f"superblock crc {self.crc:#x} != computed {self.computed_crc():#x}")
        if self.alloc_unit not in ALLOC_UNITS:
            out.append(f"bad allocation unit {self.alloc_unit:#x}")
        if self.version != CURRENT_VERSION:
            out.append(f"superblock version {self.version} (this famfs reads {CURRENT_VERSION})")
        if self.log_offset != LOG_OFFSET:
            out.append(f"log offset {self.log_offset:#x} (expected {LOG_OFFSET:#x})")
        if not valid_log_len(self.log_len):
            out.append(f"log length {self.log_len:#x} is not a power of two >= 8 MiB")
        elif self.dev_size and self.log_offset + self.log_len > self.dev_size:
            out.append(f"log ends at {self.log_offset + self.log_len:#x}, past the device size")
        return out


def valid_log_len(log_len: int) -> bool:
    return log_len >= DEFAULT_LOG_LEN and log_len & (log_len - 1) == 0


# --- log header --------------------------------------------------------------------------------
@dataclass(frozen=True)
class LogHeader:
    magic: int
    log_len: int
    last_index: int
    crc: int
    next_seqnum: int
    next_index: int

    @classmethod
    def new(cls, log_len: int = DEFAULT_LOG_LEN) -> LogHeader:
        hdr = cls(LOG_MAGIC, log_len, log_slots(log_len) - 1, 0, 0, 0)
        return replace(hdr, crc=hdr.computed_crc())

    @classmethod
    def unpack(cls, buf: bytes | memoryview) -> LogHeader:
        if len(buf) < LOG_HEADER_SIZE:
            raise OmfError(f"log header needs {LOG_HEADER_SIZE} bytes, got {len(buf)}")
        return cls(*_LOG_HDR.unpack_from(buf))

    def pack(self) -> bytes:
        return _LOG_HDR.pack(
            self.magic,
            self.log_len,
            self.last_index,
            self.crc,
            self.next_seqnum,
            self.next_index,
        )

    def computed_crc(self) -> int:
        return _crc(self.pack()[:_LOG_HDR_CRC_END])

    @property
    def slots(self) -> int:
        return self.last_index + 1

    @property
    def full(self) -> bool:
        return self.next_index > self.last_index

    def problems(self, sb_log_len: int | None = None) -> list[str]:
        if self.magic != LOG_MAGIC:
            return [f"bad log magic {self.magic:#x} (expected {LOG_MAGIC:#x})"]
        out = []
        if self.crc != self.computed_crc():
            out.append(f"log header crc {self.crc:#x} != computed {self.computed_crc():#x}")
        if sb_log_len is not None and self.log_len != sb_log_len:
            out.append(f"log length {self.log_len:#x} != superblock's {sb_log_len:#x}")
        if self.last_index != log_slots(self.log_len) - 1:
            out.append(
                f"log last_index {self.last_index} != {log_slots(self.log_len) - 1} "
                f"for a log of {self.log_len:#x} bytes"
            )
        if self.next_index > self.last_index + 1:
            out.append(f"log next_index {self.next_index} is past the last slot")
        return out


# next_seqnum and next_index are the only mutable header fields: they are rewritten together
COUNTERS_OFFSET = 32
_COUNTERS = struct.Struct("<QQ")


def pack_counters(next_seqnum: int, next_index: int) -> bytes:
    return _COUNTERS.pack(next_seqnum, next_index)


# --- fmaps --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Extent:
    offset: int
    length: int
    devindex: int = 0


@dataclass(frozen=True)
class SimpleFmap:
    extents: tuple[Extent, ...]

    ext_type = EXT_SIMPLE


@dataclass(frozen=True)
class InterleavedFmap:
    nstrips: int
    chunk_size: int
    strips: tuple[Extent, ...]
    niext: int = 1

    ext_type = EXT_INTERLEAVE


@dataclass(frozen=True)
class UnknownFmap:
    """An fmap whose extent type or counts are not understood; kept raw for round trips."""

    ext_type: int
    raw: bytes


Fmap = SimpleFmap | InterleavedFmap | UnknownFmap


def _unpack_extents(buf: bytes | memoryview, offset: int, count: int) -> tuple[Extent, ...]:
    out = []
    for i in range(count):
        devindex, off, length = _EXTENT.unpack_from(buf, offset + i * EXTENT_SIZE)
        out.append(Extent(off, length, devindex))
    return tuple(out)


def _pack_extents(extents: tuple[Extent, ...]) -> bytes:
    body = b"".join(_EXTENT.pack(e.devindex, e.offset, e.length) for e in extents)
    return body.ljust(MAX_SIMPLE_EXTENTS * EXTENT_SIZE, b"\0")


def unpack_fmap(buf: bytes | memoryview) -> Fmap:
    ext_type, count = _FMAP_HEAD.unpack_from(buf)
    head = _FMAP_HEAD.size
    if ext_type == EXT_SIMPLE and count <= MAX_SIMPLE_EXTENTS:
        return SimpleFmap(_unpack_extents(buf, head, count))
    if ext_type == EXT_INTERLEAVE and count == MAX_INTERLEAVED_EXTENTS:
        nstrips, chunk = _INTERLEAVE_HEAD.unpack_from(buf, head)
        if nstrips <= MAX_SIMPLE_EXTENTS:
            strips = _unpack_extents(buf, head + _INTERLEAVE_HEAD.size, nstrips)
            return InterleavedFmap(nstrips, chunk, strips, count)
    return UnknownFmap(ext_type, bytes(buf[:FMAP_SIZE]))


def pack_fmap(fmap: Fmap) -> bytes:
    if isinstance(fmap, UnknownFmap):
        return fmap.raw
    if isinstance(fmap, SimpleFmap):
        body = _FMAP_HEAD.pack(EXT_SIMPLE, len(fmap.extents)) + _pack_extents(fmap.extents)
    else:
        body = (
            _FMAP_HEAD.pack(EXT_INTERLEAVE, fmap.niext)
            + _INTERLEAVE_HEAD.pack(fmap.nstrips, fmap.chunk_size)
            + _pack_extents(fmap.strips)
        )
    return body.ljust(FMAP_SIZE, b"\0")


def fmap_extents(fmap: Fmap) -> tuple[Extent, ...]:
    """Every device range the fmap occupies (extents, or strips)."""
    if isinstance(fmap, SimpleFmap):
        return fmap.extents
    if isinstance(fmap, InterleavedFmap):
        return fmap.strips
    return ()


# --- log entries --------------------------------------------------------------------------------
@dataclass(frozen=True)
class FileMeta:
    size: int
    flags: int
    uid: int
    gid: int
    mode: int
    relpath: str
    fmap: Fmap

    entry_type = LOG_FILE

    def pack(self) -> bytes:
        head = _FILE_META.pack(
            self.size,
            self.flags,
            self.uid,
            self.gid,
            self.mode,
            _fixed(self.relpath, MAX_PATHLEN),
        )
        return head + pack_fmap(self.fmap)

    @classmethod
    def unpack(cls, buf: bytes | memoryview) -> FileMeta:
        size, flags, uid, gid, mode, path = _FILE_META.unpack_from(buf)
        fmap = unpack_fmap(buf[_FILE_META.size : _FILE_META.size + FMAP_SIZE])
        return cls(size, flags, uid, gid, mode, _cstring(path), fmap)


@dataclass(frozen=True)
class MkdirMeta:
    uid: int
    gid: int
    mode: int
    relpath: str

    entry_type = LOG_MKDIR

    def pack(self) -> bytes:
        return _MKDIR.pack(self.uid, self.gid, self.mode, _fixed(self.relpath, MAX_PATHLEN))

    @classmethod
    def unpack(cls, buf: bytes | memoryview) -> MkdirMeta:
        uid, gid, mode, path = _MKDIR.unpack_from(buf)
        return cls(uid, gid, mode, _cstring(path))


@dataclass(frozen=True)
class AddDaxdevMeta:
    size: int
    dev_uuid: uuid.UUID
    index: int

    entry_type = LOG_ADD_DAXDEV

    def pack(self) -> bytes:
        return _ADD_DAXDEV.pack(self.size, self.dev_uuid.bytes, self.index)

    @classmethod
    def unpack(cls, buf: bytes | memoryview) -> AddDaxdevMeta:
        size, raw_uuid, index = _ADD_DAXDEV.unpack_from(buf)
        return cls(size, uuid.UUID(bytes=raw_uuid), index)


@dataclass(frozen=True)
class RawPayload:
    """The payload of an entry type famfs-py does not know; kept for round trips."""

    raw: bytes

    def pack(self) -> bytes:
        return self.raw


Payload = FileMeta | MkdirMeta | AddDaxdevMeta | RawPayload

_PAYLOAD_TYPES: dict[int, type[FileMeta] | type[MkdirMeta] | type[AddDaxdevMeta]] = {
    LOG_FILE: FileMeta,
    LOG_MKDIR: MkdirMeta,
    LOG_ADD_DAXDEV: AddDaxdevMeta,
}


@dataclass(frozen=True)
class LogEntry:
    seqnum: int
    entry_type: int
    payload: Payload
    crc: int = 0
    _raw_payload: bytes = field(default=b"", repr=False, compare=False)
    _raw_body: bytes = field(default=b"", repr=False, compare=False)  # as read, CRC-covered

    @classmethod
    def new(cls, seqnum: int, payload: FileMeta | MkdirMeta | AddDaxdevMeta) -> LogEntry:
        entry = cls(seqnum, payload.entry_type, payload)
        return replace(entry, crc=entry.computed_crc())

    @classmethod
    def unpack(cls, buf: bytes | memoryview) -> LogEntry:
        if len(buf) < LOG_ENTRY_SIZE:
            raise OmfError(f"log entry needs {LOG_ENTRY_SIZE} bytes, got {len(buf)}")
        seqnum, entry_type = _ENTRY_HEAD.unpack_from(buf)
        raw = bytes(buf[PAYLOAD_OFFSET : PAYLOAD_OFFSET + PAYLOAD_SIZE])
        (crc,) = _ENTRY_CRC.unpack_from(buf, _ENTRY_CRC_OFFSET)
        kind = _PAYLOAD_TYPES.get(entry_type)
        payload: Payload = kind.unpack(raw) if kind else RawPayload(raw)
        return cls(seqnum, entry_type, payload, crc, raw, bytes(buf[:_ENTRY_CRC_OFFSET]))

    def _payload_bytes(self) -> bytes:
        body = self.payload.pack()
        if self._raw_payload and len(body) < PAYLOAD_SIZE:
            # keep whatever the writer left beyond the used part, so a round trip is exact
            return body + self._raw_payload[len(body) :]
        return body.ljust(PAYLOAD_SIZE, b"\0")

    def pack(self) -> bytes:
        return self.pack_body() + _ENTRY_CRC.pack(self.crc)

    def pack_body(self) -> bytes:
        """The 536 bytes the CRC covers."""
        return _ENTRY_HEAD.pack(self.seqnum, self.entry_type) + self._payload_bytes()

    def computed_crc(self) -> int:
        return _crc(self.pack_body())

    def body_crc(self) -> int:
        """CRC of the bytes the stored CRC covers: as read for an unpacked entry (bytes that
        decoding drops, such as what follows a path's NUL, count as upstream counts them),
        as packed for a new one."""
        return _crc(self._raw_body or self.pack_body())

    @property
    def relpath(self) -> str | None:
        if isinstance(self.payload, FileMeta | MkdirMeta):
            return self.payload.relpath
        return None


def entry_crc_ok(buf: bytes | memoryview) -> bool:
    """Whether a packed entry's stored CRC matches its contents (no decoding needed)."""
    (crc,) = _ENTRY_CRC.unpack_from(buf, _ENTRY_CRC_OFFSET)
    return crc == _crc(buf[:_ENTRY_CRC_OFFSET])


def path_problem(relpath: str) -> str | None:
    """Why a logged path cannot be used (None if it can)."""
    raw = _encode_path(relpath)
    if not raw:
        return "empty path"
    if len(raw) >= MAX_PATHLEN:
        return f"path longer than {MAX_PATHLEN - 1} bytes"
    if b"\0" in raw:
        return "path has a NUL byte"
    if raw.startswith(b"/"):
        return "absolute path"
    parts = raw.split(b"/")
    if any(p == b".." for p in parts):
        return "path has a '..' component"
    if any(p in (b"", b".") for p in parts):
        return "path has an empty or '.' component"
    return None


def entry_problems(entry: LogEntry, index: int, dev_size: int, alloc_unit: int) -> list[str]:
    """What is wrong with entry `index` on its own (CRC, seqnum, type, path, fmap)."""
    out = []
    if entry.crc != entry.body_crc():
        out.append(f"crc {entry.crc:#x} != computed {entry.body_crc():#x}")
    if entry.seqnum != index:
        out.append(f"seqnum {entry.seqnum} != index {index}")
    payload = entry.payload
    if isinstance(payload, RawPayload):
        out.append(f"unknown entry type {entry.entry_type}")
        return out
    if isinstance(payload, FileMeta | MkdirMeta):
        why = path_problem(payload.relpath)
        if why:
            out.append(f"{why}: {payload.relpath!r}")
    if isinstance(payload, FileMeta):
        out.extend(fmap_problems(payload, dev_size, alloc_unit))
    return out


def fmap_problems(meta: FileMeta, dev_size: int, alloc_unit: int) -> list[str]:
    fmap = meta.fmap
    if isinstance(fmap, UnknownFmap):
        return [f"unknown or malformed fmap (type {fmap.ext_type})"]
    out = []
    if meta.size == 0:
        out.append("file size 0")
    extents = fmap_extents(fmap)
    if not extents:
        out.append("fmap has no extents")
    for ext in extents:
        if ext.offset == 0:
            out.append("extent at offset 0")
        if ext.length == 0:
            out.append(f"empty extent at {ext.offset:#x}")
        if ext.offset % alloc_unit or ext.length % alloc_unit:
            out.append(f"extent {ext.offset:#x}+{ext.length:#x} not aligned to {alloc_unit:#x}")
        if dev_size and ext.offset + ext.length > dev_size:
            out.append(f"extent {ext.offset:#x}+{ext.length:#x} past the device end")
    if isinstance(fmap, InterleavedFmap):
        if fmap.chunk_size == 0 or fmap.chunk_size % alloc_unit:
            out.append(f"interleave chunk {fmap.chunk_size:#x} not a multiple of {alloc_unit:#x}")
        if fmap.nstrips == 0:
            out.append("interleave with no strips")
        elif len({s.length for s in fmap.strips}) > 1:
            out.append("interleave strips differ in length")
    capacity = sum(e.length for e in extents)
    if capacity < meta.size:
        out.append(f"extents hold {capacity} bytes, less than the file size {meta.size}")
    return out
