"""The control protocol's replies: one typed dataclass per op's answer, and the fmap encoding.

A reply travels as `{"ok": true, ...fields}` (famfs_py.protocol frames it). Each reply class
says how it becomes fields (`to_fields`) and is decoded once, in `Channel.call`, from them
(`from_fields`); commands read attributes, never string keys. The generic codec below walks
dataclass fields by their annotations (nested dataclasses, lists of them, optional values);
replies whose wire form is not their field layout (a file map) say so themselves.
"""

from __future__ import annotations

import dataclasses
import errno
import types
import typing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, Union

from famfs_py import omf
from famfs_py.errors import FamfsError, ProtocolError
from famfs_py.fs.identity import Role
from famfs_py.fs.status import FsStatus

if TYPE_CHECKING:  # fsck's module is heavy: loaded when an fsck reply is decoded
    from famfs_py.fs.fsck import FsckReport

_R = TypeVar("_R", bound="Reply")
_F = TypeVar("_F", bound="FileMapReply")


# -- fmaps ----------------------------------------------------------------------------------
def encode_fmap(fmap: omf.Fmap) -> dict[str, Any]:
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
    try:
        if data["kind"] == "interleaved":
            strips = tuple(omf.Extent(int(s["offset"]), int(s["length"])) for s in data["strips"])
            return omf.InterleavedFmap(int(data["nstrips"]), int(data["chunk_size"]), strips)
        extents = tuple(omf.Extent(int(e["offset"]), int(e["length"])) for e in data["extents"])
        return omf.SimpleFmap(extents)
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"malformed file map: {exc}") from None


# -- the generic codec ----------------------------------------------------------------------
def _encode(value: Any) -> Any:
    """Fields of a dataclass (nested ones too), leaving out optional values that are None
    and have None as their default (what an older reply did not carry)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {}
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            if item is None and f.default is None and f.metadata.get("omit_none"):
                continue
            out[f.name] = _encode(item)
        return out
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    return value


def _decode(kind: Any, value: Any, where: str) -> Any:
    """`value` (from JSON) as `kind` (a type annotation), else ProtocolError naming `where`."""
    origin = typing.get_origin(kind)
    if origin in (Union, types.UnionType):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        (inner,) = [o for o in options if o is not type(None)]
        return _decode(inner, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ProtocolError(f"{where} is not a list", errno.EIO)
        (inner,) = typing.get_args(kind)
        return [_decode(inner, v, f"{where}[]") for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise ProtocolError(f"{where} is not an object", errno.EIO)
        _key, inner = typing.get_args(kind)
        return {str(k): _decode(inner, v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        return _decode_dataclass(kind, value, where)
    if kind is Any:
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(kind, type) and issubclass(kind, Role):
        try:
            return Role(value)
        except ValueError:
            raise ProtocolError(f"{where}: unknown role {value!r}", errno.EIO) from None
    if kind in (int, str, bool, float):
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ProtocolError(f"{where} {value!r} is not a {kind.__name__}", errno.EIO)
        return value
    return value


def _decode_dataclass(cls: type[Any], data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ProtocolError(f"{where} is not an object", errno.EIO)
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            values[f.name] = _decode(hints[f.name], data[f.name], f"{where}.{f.name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ProtocolError(f"{where} has no {f.name!r}", errno.EIO)
    return cls(**values)


@dataclass(frozen=True, kw_only=True)
class Reply:
    """A reply's fields; subclasses are dataclasses decoded by their annotations."""

    def to_fields(self) -> dict[str, Any]:
        encoded: dict[str, Any] = _encode(self)
        return encoded

    @classmethod
    def from_fields(cls: type[_R], data: dict[str, Any]) -> _R:
        decoded: _R = _decode_dataclass(cls, data, f"the {cls.__name__}")
        return decoded


def _optional() -> Any:
    """An optional reply field an older daemon may not send (left out when None)."""
    return field(default=None, metadata={"omit_none": True})


# -- the replies ----------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class EmptyReply(Reply):
    """An op that answers only that it was done (invalidate)."""


@dataclass(frozen=True, kw_only=True)
class StatusReply(FsStatus, Reply):
    """`famfs-py status`: what the filesystem says of itself (FsStatus, filled by `Famfs`)
    and the daemon's own facts; `status` prints it as text or --json."""

    mountpoint: str
    daemon_pid: int
    cache: str  # a famfs_py.daemon.options.CacheMode value
    open_files: int
    kernel_lookups: int

    @property
    def healthy(self) -> bool:
        return self.health == "ok"


@dataclass(frozen=True, kw_only=True)
class MkdirReply(Reply):
    created: list[str]  # the directories made now, parents first


@dataclass(frozen=True, kw_only=True)
class FileMapReply(Reply):
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
                path=str(data["path"]),
                size=int(data["size"]),
                fmap=decode_fmap(data),
                ino=int(data.get("ino", 0)),
                created=bool(data.get("created", False)),
                align=int(data.get("align", 0)),
                device_size=int(data.get("device_size", 0)),
                available=bool(data.get("available", True)),
                flush=_flush_field(data),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"malformed map reply: {exc}", errno.EIO) from None


@dataclass(frozen=True, kw_only=True)
class CreatManyReply(Reply):
    """Each file's answer to a batched creat, in request order: its map (as creat's reply)
    or the error a creat of it alone would have answered."""

    files: list[FileMapReply | FamfsError]

    def to_fields(self) -> dict[str, Any]:
        return {
            "files": [
                {"errno": r.errno or errno.EIO, "error": r.message}
                if isinstance(r, FamfsError)
                else r.to_fields()
                for r in self.files
            ]
        }

    @classmethod
    def from_fields(cls, data: dict[str, Any]) -> CreatManyReply:
        files = data.get("files")
        if not isinstance(files, list):
            raise ProtocolError("malformed batched creat reply: no files", errno.EIO)
        out: list[FileMapReply | FamfsError] = []
        for item in files:
            if isinstance(item, dict) and "error" in item:
                out.append(FamfsError(str(item["error"]), int(item.get("errno") or errno.EIO)))
            elif isinstance(item, dict):
                out.append(FileMapReply.from_fields(item))
            else:
                raise ProtocolError("malformed batched creat reply: not an object", errno.EIO)
        return cls(files=out)


def _flush_field(data: dict[str, Any]) -> bool | None:
    """A reply's "flush": True/False, or None from a daemon that does not say."""
    value = data.get("flush")
    return None if value is None else bool(value)


@dataclass(frozen=True, kw_only=True)
class DeviceReply(Reply):
    """The whole-device descriptor's facts (device replies)."""

    device_size: int
    writable: bool
    align: int
    flush: bool | None = None  # whether the mount flushes CPU caches (dax.cache)


@dataclass(frozen=True, kw_only=True)
class FlushReply(Reply):
    """What a flush did: `lines` written back and evicted (0 where flushing is off), and the
    mount's flushing policy (`enabled`, and why: the mount option or the device's say)."""

    lines: int
    enabled: bool
    reason: str


@dataclass(frozen=True, kw_only=True)
class LogplayReply(Reply):
    entries: int
    new_files: int
    new_dirs: int
    files: int
    dirs: int
    bad: list[str] = field(default_factory=list)
    pending: int = 0


@dataclass(frozen=True, kw_only=True)
class FsckReply(Reply):
    """fsck of the mounted filesystem (its report travels as `FsckReport.as_json`)."""

    report: FsckReport

    def to_fields(self) -> dict[str, Any]:
        return {"report": self.report.as_json()}

    @classmethod
    def from_fields(cls, data: dict[str, Any]) -> FsckReply:
        from famfs_py.fs.fsck import FsckReport

        report = data.get("report")
        if not isinstance(report, dict):
            raise ProtocolError("malformed fsck reply: no report", errno.EIO)
        try:
            return cls(report=FsckReport.from_json(report))
        except (TypeError, ValueError) as exc:
            raise ProtocolError(f"malformed fsck reply: {exc}", errno.EIO) from None
