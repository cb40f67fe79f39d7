"""The control protocol between famfs-py commands and a mount's daemon: every op, its typed
request and reply, and the fmap encoding.

A request is one JSON object `{"op": NAME, ...fields}` in one SOCK_SEQPACKET message; the
reply is `{"ok": true, ...fields}` or `{"ok": false, "errno": N, "error": MESSAGE}`, and may
carry descriptors (SCM_RIGHTS). The daemon (daemon/control.py) and the CLI (through
famfs_py.channel) both use the classes here; nothing else spells an op name. Who may use which
op is the daemon's authorization table; this module only says what the messages are.
"""

from __future__ import annotations

import errno
import json
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from famfs_py.errors import FamfsError, ProtocolError

if TYPE_CHECKING:  # imported where used: a command that sends a request needs none of it
    from famfs_py import omf

MAX_REQUEST = 64 << 10  # bytes the daemon reads of one request (requests are small)
MAX_MESSAGE = 1 << 20  # bytes a command reads of one reply
MAX_FDS = 4  # descriptors one reply may carry
ID_MAX = (1 << 32) - 1


# -- field checks ---------------------------------------------------------------------------
def clean_path(value: object, what: str = "path") -> str:
    """A path inside the mount, relative to its root, without '.', '..' or empty parts."""
    if not isinstance(value, str):
        raise ProtocolError(f"a {what} is required")
    parts = [p for p in value.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise ProtocolError(f"{value}: paths may not contain '..'")
    return "/".join(parts)


def bounded(value: object, name: str, highest: int) -> int:
    """An integer field within 0..highest (what the log can record), else EINVAL."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(f"{name} {value!r} is not an integer")
    if not 0 <= value <= highest:
        shown = oct(highest) if name == "mode" else str(highest)
        raise ProtocolError(f"{name} {value!r} is out of range (0..{shown})")
    return value


def _optional_id(value: object, name: str) -> int | None:
    return None if value is None else bounded(value, name, ID_MAX)


def _flag(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise ProtocolError(f"{name} must be true or false")
    return value


# -- fmaps ----------------------------------------------------------------------------------
def encode_fmap(fmap: omf.Fmap) -> dict[str, Any]:
    from famfs_py import omf

    if isinstance(fmap, omf.InterleavedFmap):
        return {
            "kind": "interleaved",
            "nstrips": fmap.nstrips,
            "chunk_size": fmap.chunk_size,
            "strips": [{"offset": e.offset, "length": e.length} for e in fmap.strips],
        }
    return {
        "kind": "simple",
        "extents": [{"offset": e.offset, "length": e.length} for e in omf.fmap_extents(fmap)],
    }


def decode_fmap(data: dict[str, Any]) -> omf.Fmap:
    from famfs_py import omf

    try:
        if data["kind"] == "interleaved":
            strips = tuple(omf.Extent(int(s["offset"]), int(s["length"])) for s in data["strips"])
            return omf.InterleavedFmap(int(data["nstrips"]), int(data["chunk_size"]), strips)
        extents = tuple(omf.Extent(int(e["offset"]), int(e["length"])) for e in data["extents"])
        return omf.SimpleFmap(extents)
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"malformed file map: {exc}") from None


# -- requests -------------------------------------------------------------------------------
REQUESTS: dict[str, type[Request]] = {}


@dataclass(frozen=True)
class Request:
    """A request; subclasses name their op in OP and check their fields in `validate`."""

    OP: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.OP:
            REQUESTS[cls.OP] = cls

    def validate(self) -> Request:
        return self

    def encode(self) -> bytes:
        # the fields are plain values: vars() is asdict() without its deep copy
        body = {"op": self.OP, **{k: v for k, v in vars(self).items() if v is not None}}
        return json.dumps(body).encode()


@dataclass(frozen=True)
class Status(Request):
    """The mount's role, device, log, capacity, cache and health."""

    OP: ClassVar[str] = "status"


@dataclass(frozen=True)
class Mkdir(Request):
    """Create a directory (with `parents`: and its missing parents; an existing one is fine)."""

    OP: ClassVar[str] = "mkdir"
    path: str = ""
    mode: int = 0o755
    uid: int | None = None
    gid: int | None = None
    parents: bool = False

    def validate(self) -> Mkdir:
        return Mkdir(
            clean_path(self.path),
            bounded(self.mode, "mode", 0o7777),
            _optional_id(self.uid, "uid"),
            _optional_id(self.gid, "gid"),
            _flag(self.parents, "parents"),
        )


@dataclass(frozen=True)
class Creat(Request):
    """Allocate and log a file (an existing file of that size is returned as it is).
    Interleaving: nstrips and nbuckets both set (chunk_size defaults to 2 MiB)."""

    OP: ClassVar[str] = "creat"
    path: str = ""
    size: int = 0
    mode: int = 0o644
    uid: int | None = None
    gid: int | None = None
    nstrips: int | None = None
    nbuckets: int | None = None
    chunk_size: int | None = None

    def validate(self) -> Creat:
        return Creat(
            clean_path(self.path),
            bounded(self.size, "size", (1 << 63) - 1),
            bounded(self.mode, "mode", 0o7777),
            _optional_id(self.uid, "uid"),
            _optional_id(self.gid, "gid"),
            None if self.nstrips is None else bounded(self.nstrips, "nstrips", 1 << 16),
            None if self.nbuckets is None else bounded(self.nbuckets, "nbuckets", 1 << 16),
            None if self.chunk_size is None else bounded(self.chunk_size, "chunk_size", 1 << 62),
        )

    @property
    def interleaved(self) -> bool:
        return bool(self.nstrips or self.nbuckets or self.chunk_size)


@dataclass(frozen=True)
class Clone(Request):
    """Log a second file over `source`'s extents (a deliberate cross-link, to test fsck)."""

    OP: ClassVar[str] = "clone"
    source: str = ""
    path: str = ""

    def validate(self) -> Clone:
        return Clone(clean_path(self.source, "source path"), clean_path(self.path))


@dataclass(frozen=True)
class Fsck(Request):
    """fsck of the mounted filesystem from the daemon's mapping."""

    OP: ClassVar[str] = "fsck"
    verbose: bool = False
    nbuckets: int = 0

    def validate(self) -> Fsck:
        from famfs_py.omf import MAX_NBUCKETS

        return Fsck(
            _flag(self.verbose, "verbose"), bounded(self.nbuckets, "nbuckets", MAX_NBUCKETS)
        )


@dataclass(frozen=True)
class Getmap(Request):
    """A file's size and map (the .meta files too)."""

    OP: ClassVar[str] = "getmap"
    path: str = ""

    def validate(self) -> Getmap:
        return Getmap(clean_path(self.path))


@dataclass(frozen=True)
class Map(Request):
    """A file's map and a descriptor for mapping its memory (read-only unless `write`);
    `watch`: keep the connection to hear that the mapping is withdrawn."""

    OP: ClassVar[str] = "map"
    path: str = ""
    write: bool = False
    watch: bool = False

    def validate(self) -> Map:
        return Map(clean_path(self.path), _flag(self.write, "write"), _flag(self.watch, "watch"))


@dataclass(frozen=True)
class Device(Request):
    """A descriptor of the whole device, for batched copies (cp)."""

    OP: ClassVar[str] = "device"


@dataclass(frozen=True)
class Invalidate(Request):
    """Drop this host's cached pages of a file written behind the kernel's back."""

    OP: ClassVar[str] = "invalidate"
    path: str = ""

    def validate(self) -> Invalidate:
        return Invalidate(clean_path(self.path))


@dataclass(frozen=True)
class Flush(Request):
    """Write back and evict this host's CPU cache lines of a file's memory (bytes [offset,
    offset+length), the rest of the file if length is None): `famfs-py flush`, and reads
    through the mount by a caller without the device that must see other hosts' stores."""

    OP: ClassVar[str] = "flush"
    path: str = ""
    offset: int = 0
    length: int | None = None

    def validate(self) -> Flush:
        return Flush(
            clean_path(self.path),
            bounded(self.offset, "offset", (1 << 63) - 1),
            None if self.length is None else bounded(self.length, "length", (1 << 63) - 1),
        )


@dataclass(frozen=True)
class Logplay(Request):
    """Apply new log entries now (`dry_run`: only count them)."""

    OP: ClassVar[str] = "logplay"
    dry_run: bool = False

    def validate(self) -> Logplay:
        return Logplay(_flag(self.dry_run, "dry_run"))


def decode_request(data: bytes) -> Request:
    """The request in one message, checked; ProtocolError says what is wrong."""
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError("malformed request: not JSON") from None
    if not isinstance(body, dict):
        raise ProtocolError("malformed request: not an object")
    op = body.pop("op", None)
    cls = REQUESTS.get(op) if isinstance(op, str) else None
    if cls is None:
        raise ProtocolError(f"unknown request {op!r}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(body) - known)
    if unknown:
        raise ProtocolError(f"{op}: unknown field {unknown[0]!r}")
    return cls(**body).validate()


# -- replies --------------------------------------------------------------------------------
def encode_reply(fields_: dict[str, Any]) -> bytes:
    return json.dumps({"ok": True, **fields_}).encode()


def encode_error(code: int, message: str) -> bytes:
    return json.dumps({"ok": False, "errno": code, "error": message}).encode()


def decode_reply(data: bytes) -> dict[str, Any]:
    """The fields of a reply; an error reply raises FamfsError with its errno and message."""
    try:
        reply = json.loads(data)
        if not isinstance(reply, dict):
            raise ValueError("not an object")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"malformed reply from the daemon: {exc}", errno.EIO) from None
    if not reply.pop("ok", False):
        raise FamfsError(str(reply.get("error")), int(reply.get("errno") or errno.EIO))
    return reply


_F = TypeVar("_F", bound="FileMapReply")


@dataclass(frozen=True)
class FileMapReply:
    """A file's place in device memory (getmap, creat, clone and map replies)."""

    path: str
    size: int
    fmap: omf.Fmap
    ino: int = 0
    created: bool = False  # creat: made now (not found)
    align: int = 0  # map: the device's alignment, for mapping the descriptor
    device_size: int = 0  # map
    available: bool = True  # getmap: its memory can be used (no poison, device present)
    flush: bool | None = None  # map: whether the mount flushes CPU caches (dax.cache)

    def to_fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "size": self.size, "ino": self.ino}
        out.update(encode_fmap(self.fmap))
        out["created"] = self.created
        out["available"] = self.available
        if self.align:
            out["align"] = self.align
            out["device_size"] = self.device_size
        if self.flush is not None:
            out["flush"] = self.flush
        return out

    @classmethod
    def from_fields(cls: type[_F], data: dict[str, Any]) -> _F:
        try:
            return cls(
                str(data["path"]),
                int(data["size"]),
                decode_fmap(data),
                int(data.get("ino", 0)),
                bool(data.get("created", False)),
                int(data.get("align", 0)),
                int(data.get("device_size", 0)),
                bool(data.get("available", True)),
                _flush_field(data),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"malformed map reply: {exc}", errno.EIO) from None


@dataclass(frozen=True)
class DeviceReply:
    """The whole-device descriptor's facts (device replies)."""

    device_size: int
    writable: bool
    align: int
    flush: bool | None = None  # whether the mount flushes CPU caches (dax.cache)

    def to_fields(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_fields(cls, data: dict[str, Any]) -> DeviceReply:
        return cls(
            int(data["device_size"]),
            bool(data["writable"]),
            int(data["align"]),
            _flush_field(data),
        )


def _flush_field(data: dict[str, Any]) -> bool | None:
    """A reply's "flush": True/False, or None from a daemon that does not say."""
    value = data.get("flush")
    return None if value is None else bool(value)


@dataclass(frozen=True)
class FlushReply:
    """What a flush did: `lines` written back and evicted (0 where flushing is off), and the
    mount's flushing policy (`enabled`, and why: the mount option or the device's say)."""

    lines: int
    enabled: bool
    reason: str

    def to_fields(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_fields(cls, data: dict[str, Any]) -> FlushReply:
        try:
            return cls(int(data["lines"]), bool(data["enabled"]), str(data["reason"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"malformed flush reply: {exc}", errno.EIO) from None


@dataclass(frozen=True)
class LogplayReply:
    entries: int
    new_files: int
    new_dirs: int
    files: int
    dirs: int
    bad: list[str] = field(default_factory=list)
    pending: int = 0

    def to_fields(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_fields(cls, data: dict[str, Any]) -> LogplayReply:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


# -- events: what the daemon sends, unasked, on a `map` connection with watch=true ------------
EVENT_REVOKE = "revoke"  # the device is going away: withdraw the mapping now


def encode_event(name: str) -> bytes:
    return json.dumps({"event": name}).encode()


def decode_event(data: bytes) -> str | None:
    try:
        event = json.loads(data).get("event")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return None
    return event if isinstance(event, str) else None
