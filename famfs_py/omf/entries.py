"""Log entries: file, mkdir and add-daxdev payloads, their CRCs, and the checks that replay
and fsck apply."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace

from famfs_py.omf.fmap import (
    Fmap,
    InterleavedFmap,
    UnknownFmap,
    fmap_extents,
    pack_fmap,
    unpack_fmap,
)
from famfs_py.omf.layout import (
    _ADD_DAXDEV,
    _ENTRY_CRC,
    _ENTRY_CRC_OFFSET,
    _ENTRY_HEAD,
    _FILE_META,
    _MKDIR,
    FMAP_SIZE,
    LOG_ADD_DAXDEV,
    LOG_ENTRY_SIZE,
    LOG_FILE,
    LOG_MKDIR,
    MAX_PATHLEN,
    PAYLOAD_OFFSET,
    PAYLOAD_SIZE,
    OmfError,
    _crc,
    _cstring,
    _encode_path,
    _fixed,
)


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


_SLASH = ord("/")
_SLASH_OR_DOT = (ord("/"), ord("."))


def path_problem(relpath: str) -> str | None:
    """Why a logged path cannot be used (None if it can)."""
    raw = _encode_path(relpath)
    if (  # the common case at once (replay checks every entry): no '.' starts a component
        raw
        and len(raw) < MAX_PATHLEN
        and raw[0] not in _SLASH_OR_DOT
        and raw[-1] != _SLASH
        and b"/." not in raw
        and b"//" not in raw
        and b"\0" not in raw
    ):
        return None
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


def entry_problems(
    entry: LogEntry, index: int, dev_size: int, alloc_unit: int, reserved: int = 0
) -> list[str]:
    """What is wrong with entry `index` on its own (CRC, seqnum, type, path, fmap). An
    extent may not reach into the first `reserved` bytes (the superblock and the log)."""
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
        out.extend(fmap_problems(payload, dev_size, alloc_unit, reserved))
    return out


def fmap_problems(meta: FileMeta, dev_size: int, alloc_unit: int, reserved: int = 0) -> list[str]:
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
        elif ext.offset < reserved:
            out.append(
                f"extent {ext.offset:#x}+{ext.length:#x} over the superblock and log "
                f"(the first {reserved:#x} bytes)"
            )
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


# what replay's bulk decoder (famfs_py/omf/_replay.c) gives per entry, and its reference
CleanEntry = tuple[str, str, int, int, int, int, bytes | None, tuple[int, ...] | None]


def scan_entries(
    buf: bytes | memoryview, first_index: int, dev_size: int, alloc_unit: int, reserved: int
) -> list[CleanEntry | None]:
    """What `famfs_py.omf._replay.scan` returns, by the checks above: per entry, None unless
    it is a clean file or directory (its CRC and seqnum right, no `entry_problems`), and
    for a clean one (head, name, mode, uid, gid, size, payload bytes or None for a
    directory, extents flattened as offset, length, ... or None for a directory). The C
    decoder must agree with it entry for entry (tests/test_model_replay.py)."""
    out: list[CleanEntry | None] = []
    for i in range(len(buf) // LOG_ENTRY_SIZE):
        chunk = buf[i * LOG_ENTRY_SIZE : (i + 1) * LOG_ENTRY_SIZE]
        index = first_index + i
        entry = LogEntry.unpack(chunk)
        payload = entry.payload
        if (
            not entry_crc_ok(chunk)
            or not isinstance(payload, FileMeta | MkdirMeta)
            or entry_problems(entry, index, dev_size, alloc_unit, reserved)
        ):
            out.append(None)
            continue
        head, _, name = payload.relpath.rpartition("/")
        if isinstance(payload, MkdirMeta):
            out.append((head, name, payload.mode, payload.uid, payload.gid, 0, None, None))
            continue
        extents = tuple(n for e in fmap_extents(payload.fmap) for n in (e.offset, e.length))
        row = (head, name, payload.mode, payload.uid, payload.gid, payload.size)
        out.append((*row, entry._raw_payload, extents))
    return out
