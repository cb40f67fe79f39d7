"""The control protocol between famfs-py commands and a mount's daemon: every op, its typed
request and the type of its reply (famfs_py.replies). How they travel is famfs_py.wire's.

A request is one JSON object `{"op": NAME, ...fields}` in one SOCK_SEQPACKET message; the
reply is `{"ok": true, ...fields}` or `{"ok": false, "errno": N, "error": MESSAGE}`, and may
carry descriptors (SCM_RIGHTS). The daemon (daemon/control.py) and the CLI (through
famfs_py.channel) both use the classes here; nothing else spells an op name. Who may use which
op is the daemon's authorization table; this module only says what the messages are.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar, Generic, TypeVar, cast

from famfs_py import omf, wire
from famfs_py.errors import ProtocolError
from famfs_py.replies import (
    CreatManyReply,
    DeviceReply,
    EmptyReply,
    FileMapReply,
    FlushReply,
    FsckReply,
    LogplayReply,
    MkdirReply,
    Reply,
    StatusReply,
)

R = TypeVar("R", bound=Reply)

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


# -- requests -------------------------------------------------------------------------------
REQUESTS: dict[str, type[Request[Any]]] = {}


@dataclass(frozen=True)
class Request(Generic[R]):
    """A request; subclasses name their op in OP, its reply's type in REPLY (also their
    generic parameter, which `Channel.call` returns) and check their fields in `validate`."""

    OP: ClassVar[str] = ""
    REPLY: ClassVar[type[Reply]] = Reply

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.OP:
            REQUESTS[cls.OP] = cls

    def validate(self) -> Request[R]:
        return self

    def encode(self) -> bytes:
        # the fields are plain values: vars() is asdict() without its deep copy
        body = {"op": self.OP, **{k: v for k, v in vars(self).items() if v is not None}}
        return wire.dumps(body)

    def decode_reply(self, data: dict[str, Any]) -> R:
        """This request's reply from the fields of a successful answer."""
        return cast(R, self.REPLY.from_fields(data))


@dataclass(frozen=True)
class Status(Request[StatusReply]):
    """The mount's role, device, log, capacity, cache and health."""

    OP: ClassVar[str] = "status"
    REPLY: ClassVar[type[Reply]] = StatusReply


@dataclass(frozen=True)
class Mkdir(Request[MkdirReply]):
    """Create a directory (with `parents`: and its missing parents; an existing one is fine)."""

    OP: ClassVar[str] = "mkdir"
    REPLY: ClassVar[type[Reply]] = MkdirReply
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
class Creat(Request[FileMapReply]):
    """Allocate and log a file (an existing file of that size is returned as it is).
    Interleaving: nstrips and nbuckets both set (chunk_size defaults to 2 MiB)."""

    OP: ClassVar[str] = "creat"
    REPLY: ClassVar[type[Reply]] = FileMapReply
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
class CreatMany(Request[CreatManyReply]):
    """Creat of many files in one request (cp of a directory): each file is checked, created
    and answered exactly as its own Creat would be (`singles`), the others whatever its fate.
    `files` are (path, size, mode); owner and interleaving are the batch's."""

    OP: ClassVar[str] = "creat_many"
    REPLY: ClassVar[type[Reply]] = CreatManyReply
    MAX_FILES: ClassVar[int] = 1024
    files: tuple[tuple[str, int, int], ...] = ()  # lists in JSON
    uid: int | None = None
    gid: int | None = None
    nstrips: int | None = None
    nbuckets: int | None = None
    chunk_size: int | None = None

    def validate(self) -> CreatMany:
        if not isinstance(self.files, list | tuple) or len(self.files) > self.MAX_FILES:
            raise ProtocolError(f"files must be a list of at most {self.MAX_FILES} files")
        for item in self.files:
            if not isinstance(item, list | tuple) or len(item) != 3:
                raise ProtocolError("each file must be [path, size, mode]")
        batch = CreatMany(
            tuple((p, s, m) for p, s, m in self.files),
            self.uid,
            self.gid,
            self.nstrips,
            self.nbuckets,
            self.chunk_size,
        )
        batch.singles()  # each file's fields, checked as its Creat's
        return batch

    def singles(self) -> list[Creat]:
        """The Creat of each file, checked."""
        return [
            Creat(
                path, size, mode, self.uid, self.gid, self.nstrips, self.nbuckets, self.chunk_size
            ).validate()
            for path, size, mode in self.files
        ]


@dataclass(frozen=True)
class Clone(Request[FileMapReply]):
    """Log a second file over `source`'s extents (a deliberate cross-link, to test fsck)."""

    OP: ClassVar[str] = "clone"
    REPLY: ClassVar[type[Reply]] = FileMapReply
    source: str = ""
    path: str = ""

    def validate(self) -> Clone:
        return Clone(clean_path(self.source, "source path"), clean_path(self.path))


@dataclass(frozen=True)
class Fsck(Request[FsckReply]):
    """fsck of the mounted filesystem from the daemon's mapping."""

    OP: ClassVar[str] = "fsck"
    REPLY: ClassVar[type[Reply]] = FsckReply
    verbose: bool = False
    nbuckets: int = 0

    def validate(self) -> Fsck:
        return Fsck(
            _flag(self.verbose, "verbose"), bounded(self.nbuckets, "nbuckets", omf.MAX_NBUCKETS)
        )


@dataclass(frozen=True)
class Getmap(Request[FileMapReply]):
    """A file's size and map (the .meta files too)."""

    OP: ClassVar[str] = "getmap"
    REPLY: ClassVar[type[Reply]] = FileMapReply
    path: str = ""

    def validate(self) -> Getmap:
        return Getmap(clean_path(self.path))


@dataclass(frozen=True)
class Map(Request[FileMapReply]):
    """A file's map and a descriptor for mapping its memory (read-only unless `write`);
    `watch`: keep the connection to hear that the mapping is withdrawn."""

    OP: ClassVar[str] = "map"
    REPLY: ClassVar[type[Reply]] = FileMapReply
    path: str = ""
    write: bool = False
    watch: bool = False

    def validate(self) -> Map:
        return Map(clean_path(self.path), _flag(self.write, "write"), _flag(self.watch, "watch"))


@dataclass(frozen=True)
class Device(Request[DeviceReply]):
    """A descriptor of the whole device, for batched copies (cp)."""

    OP: ClassVar[str] = "device"
    REPLY: ClassVar[type[Reply]] = DeviceReply


@dataclass(frozen=True)
class Invalidate(Request[EmptyReply]):
    """Drop this host's cached pages of a file written behind the kernel's back."""

    OP: ClassVar[str] = "invalidate"
    REPLY: ClassVar[type[Reply]] = EmptyReply
    path: str = ""

    def validate(self) -> Invalidate:
        return Invalidate(clean_path(self.path))


@dataclass(frozen=True)
class InvalidateFiles(Request[EmptyReply]):
    """Invalidate for many files at once (what `cp` copied): every file that can be is
    invalidated and announced, then the first that could not be is the error."""

    OP: ClassVar[str] = "invalidate_files"
    REPLY: ClassVar[type[Reply]] = EmptyReply
    MAX_FILES: ClassVar[int] = 4096
    paths: tuple[str, ...] = ()  # a list in JSON

    def validate(self) -> InvalidateFiles:
        if not isinstance(self.paths, list | tuple) or len(self.paths) > self.MAX_FILES:
            raise ProtocolError(f"paths must be a list of at most {self.MAX_FILES} paths")
        return InvalidateFiles(tuple(clean_path(p) for p in self.paths))


@dataclass(frozen=True)
class Flush(Request[FlushReply]):
    """Write back and evict this host's CPU cache lines of a file's memory (bytes [offset,
    offset+length), the rest of the file if length is None): `famfs-py flush`, and reads
    through the mount by a caller without the device that must see other hosts' stores."""

    OP: ClassVar[str] = "flush"
    REPLY: ClassVar[type[Reply]] = FlushReply
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
class Logplay(Request[LogplayReply]):
    """Apply new log entries now (`dry_run`: only count them)."""

    OP: ClassVar[str] = "logplay"
    REPLY: ClassVar[type[Reply]] = LogplayReply
    dry_run: bool = False

    def validate(self) -> Logplay:
        return Logplay(_flag(self.dry_run, "dry_run"))


def decode_request(data: bytes) -> Request[Any]:
    """The request in one message, checked; ProtocolError says what is wrong."""
    try:
        body = wire.loads(data)
    except ValueError:
        raise ProtocolError("malformed request: not JSON") from None
    except RecursionError:  # 60,000 '[': refused here, not a traceback in the daemon's log
        raise ProtocolError("malformed request: nested too deeply") from None
    if not isinstance(body, dict):
        raise ProtocolError("malformed request: not an object")
    op = body.pop("op", None)
    cls = REQUESTS.get(op) if isinstance(op, str) else None
    if cls is None:
        raise ProtocolError(f"{wire.UNKNOWN_REQUEST}{op!r}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(body) - known)
    if unknown:
        raise ProtocolError(f"{op}: unknown field {unknown[0]!r}")
    return cls(**body).validate()


# -- replies --------------------------------------------------------------------------------
def encode_reply(reply: Reply) -> bytes:
    return wire.encode_fields(reply.to_fields())
