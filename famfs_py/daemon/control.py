"""The daemon's end of the control channel: who may ask what, and the answers.

Requests run on the trio thread, between FUSE requests, so they see and change the same
state as the mount without locks. Mutations are for root and the mount's owner only; the
caller's identity comes from SO_PEERCRED.
"""

from __future__ import annotations

import array
import errno
import json
import logging
import os
import socket
import stat
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from famfs_py import channel, omf
from famfs_py.fs.alloc import Interleave
from famfs_py.fs.filesystem import Famfs, FsError
from famfs_py.fs.fsck import fsck_memory
from famfs_py.fs.namespace import Inode

log = logging.getLogger(__name__)

_PEERCRED = struct.Struct("3i")


class Caller:
    def __init__(self, pid: int, uid: int, gid: int) -> None:
        self.pid, self.uid, self.gid = pid, uid, gid
        self._groups: set[int] | None = None

    @property
    def groups(self) -> set[int]:
        """Primary and supplementary groups (from /proc: SO_PEERCRED has only the first)."""
        if self._groups is None:
            self._groups = {self.gid}
            try:
                with open(f"/proc/{self.pid}/status") as f:
                    for line in f:
                        if line.startswith("Groups:"):
                            self._groups.update(int(g) for g in line.split()[1:])
            except OSError:
                pass
        return self._groups

    @property
    def privileged(self) -> bool:
        return self.uid in (0, os.geteuid())


def _clean_path(value: object) -> str:
    if not isinstance(value, str):
        raise FsError(errno.EINVAL, "a path is required")
    parts = [p for p in value.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise FsError(errno.EINVAL, f"{value}: paths may not contain '..'")
    return "/".join(parts)


ID_MAX = (1 << 32) - 1


def _bounded(value: object, name: str, highest: int) -> int:
    """An integer request field within 0..highest (what the log can record), else EINVAL."""
    number = int(value)  # type: ignore[call-overload]
    if not 0 <= number <= highest:
        shown = oct(highest) if name == "mode" else str(highest)
        raise FsError(errno.EINVAL, f"{name} {value!r} is out of range (0..{shown})")
    return number


def describe_map(fs: Famfs, inode: Inode) -> dict[str, Any]:
    fmap = inode.fmap
    assert fmap is not None
    out: dict[str, Any] = {"path": fs.namespace.path_of(inode.ino), "size": inode.size}
    if isinstance(fmap, omf.InterleavedFmap):
        out["kind"] = "interleaved"
        out["nstrips"] = fmap.nstrips
        out["chunk_size"] = fmap.chunk_size
        out["strips"] = [{"offset": e.offset, "length": e.length} for e in fmap.strips]
    else:
        out["kind"] = "simple"
        out["extents"] = [{"offset": e.offset, "length": e.length} for e in omf.fmap_extents(fmap)]
    return out


def _may_access(inode: Inode, caller: Caller, write: bool) -> bool:
    if caller.uid == 0:
        return True
    want = stat.S_IWOTH if write else stat.S_IROTH
    if caller.uid == inode.uid:
        want <<= 6
    elif inode.gid in caller.groups:
        want <<= 3
    return bool(inode.mode & want)


class ControlServer:
    def __init__(
        self,
        fs: Famfs,
        mountpoint: str,
        status_extra: Callable[[], dict[str, Any]],
        invalidate: Callable[[list[int]], Awaitable[None]],
    ) -> None:
        self.fs = fs
        self.mountpoint = mountpoint
        self.watchers: set[trio.socket.SocketType] = set()  # holders of mapped files
        self.status_extra = status_extra
        self.invalidate = invalidate
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)

    def bind(self) -> None:
        """Take the mount point's channel name (before mounting: a second daemon for the
        same mount point fails here)."""
        try:
            self._listener.bind("\0" + channel.socket_name(self.mountpoint))
        except OSError as exc:
            self._listener.close()
            raise FsError(
                errno.EBUSY,
                f"another famfs-py daemon already serves {self.mountpoint} ({exc.strerror})",
            ) from None
        self._listener.listen(64)

    def close(self) -> None:
        self._listener.close()

    async def serve(self) -> None:
        sock = trio.socket.from_stdlib_socket(self._listener)
        async with trio.open_nursery() as nursery:
            while True:
                conn, _ = await sock.accept()
                nursery.start_soon(self._connection, conn)

    async def _connection(self, conn: trio.socket.SocketType) -> None:
        try:
            await self._serve_connection(conn)
        finally:
            self.watchers.discard(conn)

    async def revoke_mappings(self) -> int:
        """Tell every process holding a mapped file that its mapping is withdrawn (the
        device is going away). Returns how many were told."""
        told = 0
        for conn in list(self.watchers):
            try:
                await conn.send(b'{"event": "revoke"}')
                told += 1
            except OSError:
                self.watchers.discard(conn)
        if told:
            log.warning("told %d holder(s) of mapped files to drop their mappings", told)
        return told

    async def _serve_connection(self, conn: trio.socket.SocketType) -> None:
        with conn:
            raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
            caller = Caller(*_PEERCRED.unpack(raw))
            while True:
                try:
                    data = await conn.recv(channel.MAX_MESSAGE)
                except OSError:
                    return
                if not data:
                    return
                reply, fds = await self._dispatch(data, caller)
                if reply.pop("_watch", False):
                    self.watchers.add(conn)
                try:
                    payload = json.dumps(reply).encode()
                    if fds:
                        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
                        await conn.sendmsg([payload], ancillary)
                    else:
                        await conn.send(payload)
                except OSError:
                    return
                finally:
                    for fd in fds:
                        os.close(fd)

    async def _dispatch(self, data: bytes, caller: Caller) -> tuple[dict[str, Any], list[int]]:
        try:
            request = json.loads(data)
            if not isinstance(request, dict):
                raise ValueError("not an object")
            op = request.get("op")
            handler = getattr(self, f"op_{op}", None) if isinstance(op, str) else None
            if handler is None:
                raise FsError(errno.EINVAL, f"unknown request {op!r}")
            result = handler(request, caller)
            if hasattr(result, "__await__"):
                result = await result
            fds: list[int] = []
            if isinstance(result, tuple):
                result, fds = result
            return {"ok": True, **result}, fds
        except FsError as exc:
            return {"ok": False, "errno": exc.errno, "error": exc.message}, []
        except (ValueError, TypeError, KeyError) as exc:
            return {"ok": False, "errno": errno.EINVAL, "error": f"malformed request: {exc}"}, []
        except Exception as exc:
            log.exception("bug while answering a control request")
            return {"ok": False, "errno": errno.EIO, "error": f"internal error: {exc}"}, []

    # -- requests ------------------------------------------------------------------------
    def _require_privileged(self, caller: Caller, what: str) -> None:
        if not caller.privileged:
            raise FsError(
                errno.EPERM,
                f"only root or the mount's owner may {what} (you are uid {caller.uid})",
            )

    def _owner(self, request: dict[str, Any], caller: Caller) -> tuple[int, int]:
        uid = request.get("uid")
        gid = request.get("gid")
        return (
            caller.uid if uid is None else _bounded(uid, "uid", ID_MAX),
            caller.gid if gid is None else _bounded(gid, "gid", ID_MAX),
        )

    def op_status(self, request: dict[str, Any], caller: Caller) -> dict[str, Any]:
        return {**self.fs.status(), **self.status_extra()}

    def op_mkdir(self, request: dict[str, Any], caller: Caller) -> dict[str, Any]:
        self._require_privileged(caller, "create directories")
        path = _clean_path(request.get("path"))
        mode = _bounded(request.get("mode", 0o755), "mode", 0o7777)
        uid, gid = self._owner(request, caller)
        if not path:
            raise FsError(errno.EEXIST, "the mount's root already exists")
        created = []
        targets = [path]
        if request.get("parents"):
            parts = path.split("/")
            targets = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        for target in targets:
            existing = self.fs.namespace.resolve(target)
            if existing is not None and request.get("parents"):
                if not existing.is_dir:
                    raise FsError(errno.ENOTDIR, f"{target} exists and is not a directory")
                continue
            self.fs.mkdir(target, mode, uid, gid)
            created.append(target)
        return {"created": created}

    def op_creat(self, request: dict[str, Any], caller: Caller) -> dict[str, Any]:
        self._require_privileged(caller, "create files")
        path = _clean_path(request.get("path"))
        size = int(request["size"])
        mode = _bounded(request.get("mode", 0o644), "mode", 0o7777)
        uid, gid = self._owner(request, caller)
        interleave = None
        if request.get("nstrips") or request.get("nbuckets") or request.get("chunk_size"):
            interleave = Interleave(
                int(request.get("nstrips") or 0),
                int(request.get("nbuckets") or 0),
                int(request.get("chunk_size") or omf.ALLOC_UNIT),
            )
        inode, created = self.fs.create_file(path, size, mode, uid, gid, interleave)
        return {"created": created, "ino": inode.ino, **describe_map(self.fs, inode)}

    def op_clone(self, request: dict[str, Any], caller: Caller) -> dict[str, Any]:
        self._require_privileged(caller, "create files")
        source = self._file({"path": request.get("source")})
        inode = self.fs.clone(source, _clean_path(request.get("path")))
        return describe_map(self.fs, inode)

    async def op_fsck(self, request: dict[str, Any], caller: Caller) -> dict[str, Any]:
        """fsck of the mounted filesystem, from the daemon's own mapping (kernel copies)."""
        nbuckets = _bounded(request.get("nbuckets") or 0, "nbuckets", omf.MAX_NBUCKETS)
        report = await trio.to_thread.run_sync(
            lambda: fsck_memory(
                self.fs.mem,
                self.fs.device.path,
                self.fs.this_host,
                detail=bool(request.get("verbose")),
                nbuckets=nbuckets,
            )
        )
        return {"report": report.as_json()}

    def _file(self, request: dict[str, Any], *, logged: bool = True) -> Inode:
        """The file a request names; `logged=False` also accepts the .meta files."""
        inode = self.fs.lookup_path(_clean_path(request.get("path")))
        if inode.is_dir:
            raise FsError(errno.EISDIR, f"{inode.name} is a directory")
        if inode.meta is None and logged:
            raise FsError(errno.EINVAL, f"{inode.name} is not a logged file")
        return inode

    def op_getmap(self, request: dict[str, Any], caller: Caller) -> dict[str, Any]:
        return describe_map(self.fs, self._file(request, logged=False))

    def op_map(self, request: dict[str, Any], caller: Caller) -> tuple[dict[str, Any], list[int]]:
        """The file's map and an open descriptor of the device for mapping it."""
        write = bool(request.get("write"))
        inode = self._file(request, logged=write)
        if not _may_access(inode, caller, write):
            raise FsError(errno.EACCES, f"{inode.name}: permission denied")
        if write:
            self.fs.check_writable(inode)
        self.fs.check_data_available(inode)
        fd = self.fs.mem.dup_fd(writable=write)
        reply = describe_map(self.fs, inode)
        reply["ino"] = inode.ino
        reply["device_size"] = self.fs.sb.dev_size
        reply["_watch"] = bool(request.get("watch"))  # keep telling this caller about removal
        return reply, [fd]

    def op_device(
        self, request: dict[str, Any], caller: Caller
    ) -> tuple[dict[str, Any], list[int]]:
        """A descriptor of the whole device, for batched copies by root or the mount's owner
        (who may create files anyway)."""
        self._require_privileged(caller, "map the device")
        if self.fs.health.removed:
            raise FsError(errno.EIO, "the device was removed")
        fd = self.fs.mem.dup_fd(writable=self.fs.writable)
        return {"device_size": self.fs.sb.dev_size, "writable": self.fs.writable}, [fd]

    async def op_invalidate(self, request: dict[str, Any], caller: Caller) -> dict[str, Any]:
        """Drop this host's cached pages of a file written behind the kernel's back."""
        inode = self._file(request)
        await self.invalidate([inode.ino])
        return {}

    def op_logplay(self, request: dict[str, Any], caller: Caller) -> dict[str, Any]:
        before_files = self.fs.namespace.files
        before_dirs = self.fs.namespace.dirs
        if request.get("dry_run"):
            pending = self.fs.log.committed() - self.fs.log.next_index
            return {
                "entries": self.fs.log.committed(),
                "new_files": 0,
                "new_dirs": 0,
                "pending": max(0, pending),
                "files": self.fs.namespace.files,
                "dirs": self.fs.namespace.dirs,
                "bad": [b.describe() for b in self.fs.log.bad.values()],
            }
        self.fs.follow()
        return {
            "entries": self.fs.log.next_index,
            "new_files": self.fs.namespace.files - before_files,
            "new_dirs": self.fs.namespace.dirs - before_dirs,
            "files": self.fs.namespace.files,
            "dirs": self.fs.namespace.dirs,
            "bad": [b.describe() for b in self.fs.log.bad.values()],
        }
