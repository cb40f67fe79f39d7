"""The daemon's end of the control channel: who may ask what (one table), and the answers.

Requests (famfs_py.protocol) run on the trio thread, between FUSE requests, so they see and
change the same state as the mount without locks. The caller's identity comes from
SO_PEERCRED, never from the request.
"""

from __future__ import annotations

import array
import errno
import logging
import os
import socket
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import trio

from famfs_py import channel, omf, protocol
from famfs_py.credentials import Credentials, peer_credentials
from famfs_py.errors import FamfsError
from famfs_py.fs.alloc import Interleave
from famfs_py.fs.filesystem import Famfs, FsError
from famfs_py.fs.fsck import fsck_memory
from famfs_py.fs.namespace import Inode

log = logging.getLogger(__name__)


class Rule(Enum):
    """Who may use an op."""

    ANYONE = "any caller"
    OWNER = "root or the mount's owner"


@dataclass(frozen=True)
class Answer:
    """What an op returns: the reply's fields, descriptors to pass, and whether the caller
    is to hear about removal on this connection from now on."""

    fields: dict[str, Any]
    fds: tuple[int, ...] = ()
    watch: bool = False


def is_privileged(caller: Credentials) -> bool:
    return caller.uid in (0, os.geteuid())


def may_access(inode: Inode, caller: Credentials, write: bool) -> bool:
    """POSIX permission bits of `inode` for `caller` (root may do anything)."""
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
        # op -> (who may use it, handler)
        self.ops: dict[type[protocol.Request], tuple[Rule, Callable[..., Any]]] = {
            protocol.Status: (Rule.ANYONE, self.status),
            protocol.Getmap: (Rule.ANYONE, self.getmap),
            protocol.Map: (Rule.ANYONE, self.map),
            protocol.Invalidate: (Rule.ANYONE, self.invalidate_file),
            protocol.Logplay: (Rule.ANYONE, self.logplay),
            protocol.Fsck: (Rule.ANYONE, self.fsck),
            protocol.Mkdir: (Rule.OWNER, self.mkdir),
            protocol.Creat: (Rule.OWNER, self.creat),
            protocol.Clone: (Rule.OWNER, self.clone),
            protocol.Device: (Rule.OWNER, self.device),
        }

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
        event = protocol.encode_event(protocol.EVENT_REVOKE)
        for conn in list(self.watchers):
            try:
                await conn.send(event)
                told += 1
            except OSError:
                self.watchers.discard(conn)
        if told:
            log.warning("told %d holder(s) of mapped files to drop their mappings", told)
        return told

    async def _serve_connection(self, conn: trio.socket.SocketType) -> None:
        with conn:
            caller = peer_credentials(conn)
            while True:
                try:
                    data = await conn.recv(protocol.MAX_MESSAGE)
                except OSError:
                    return
                if not data:
                    return
                payload, fds, watch = await self.answer(data, caller)
                if watch:
                    self.watchers.add(conn)
                try:
                    if fds:
                        rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
                        await conn.sendmsg([payload], rights)
                    else:
                        await conn.send(payload)
                except OSError:
                    return
                finally:
                    for fd in fds:
                        os.close(fd)

    async def answer(self, data: bytes, caller: Credentials) -> tuple[bytes, tuple[int, ...], bool]:
        """The encoded reply to one message, the descriptors it carries and whether the
        connection now watches for removal. Never raises for a bad request."""
        try:
            request = protocol.decode_request(data)
            rule, handler = self.ops[type(request)]
            if rule is Rule.OWNER and not is_privileged(caller):
                raise FsError(
                    errno.EPERM,
                    f"only {rule.value} may use {request.OP} (you are uid {caller.uid})",
                )
            result = handler(request, caller)
            answer: Answer = await result if isinstance(result, Awaitable) else result
            return protocol.encode_reply(answer.fields), answer.fds, answer.watch
        except FamfsError as exc:
            return protocol.encode_error(exc.errno or errno.EIO, exc.message), (), False
        except (ValueError, TypeError, KeyError) as exc:
            return protocol.encode_error(errno.EINVAL, f"malformed request: {exc}"), (), False
        except Exception as exc:
            log.exception("bug while answering a control request")
            return protocol.encode_error(errno.EIO, f"internal error: {exc}"), (), False

    # -- ops -----------------------------------------------------------------------------
    def _owner(self, uid: int | None, gid: int | None, caller: Credentials) -> tuple[int, int]:
        return (caller.uid if uid is None else uid, caller.gid if gid is None else gid)

    def _map_reply(self, inode: Inode, **extra: Any) -> dict[str, Any]:
        assert inode.fmap is not None
        reply = protocol.FileMapReply(
            self.fs.namespace.path_of(inode.ino), inode.size, inode.fmap, inode.ino, **extra
        )
        return reply.to_fields()

    def _file(self, path: str, *, logged: bool = True) -> Inode:
        """The file a request names; `logged=False` also accepts the .meta files."""
        inode = self.fs.lookup_path(path)
        if inode.is_dir:
            raise FsError(errno.EISDIR, f"{inode.name} is a directory")
        if inode.meta is None and logged:
            raise FsError(errno.EINVAL, f"{inode.name} is not a logged file")
        return inode

    def status(self, request: protocol.Status, caller: Credentials) -> Answer:
        return Answer({**self.fs.status(), **self.status_extra()})

    def mkdir(self, request: protocol.Mkdir, caller: Credentials) -> Answer:
        uid, gid = self._owner(request.uid, request.gid, caller)
        created = self.fs.mkdir(request.path, request.mode, uid, gid, parents=request.parents)
        return Answer({"created": created})

    def creat(self, request: protocol.Creat, caller: Credentials) -> Answer:
        uid, gid = self._owner(request.uid, request.gid, caller)
        interleave = None
        if request.interleaved:
            interleave = Interleave(
                request.nstrips or 0, request.nbuckets or 0, request.chunk_size or omf.ALLOC_UNIT
            )
        inode, created = self.fs.create_file(
            request.path, request.size, request.mode, uid, gid, interleave
        )
        return Answer(self._map_reply(inode, created=created))

    def clone(self, request: protocol.Clone, caller: Credentials) -> Answer:
        inode = self.fs.clone(self._file(request.source), request.path)
        return Answer(self._map_reply(inode, created=True))

    async def fsck(self, request: protocol.Fsck, caller: Credentials) -> Answer:
        """fsck of the mounted filesystem, from the daemon's own mapping (kernel copies)."""
        report = await trio.to_thread.run_sync(
            lambda: fsck_memory(
                self.fs.mem,
                self.fs.device.path,
                self.fs.this_host,
                detail=request.verbose,
                nbuckets=request.nbuckets,
            )
        )
        return Answer({"report": report.as_json()})

    def getmap(self, request: protocol.Getmap, caller: Credentials) -> Answer:
        return Answer(self._map_reply(self._file(request.path, logged=False)))

    def map(self, request: protocol.Map, caller: Credentials) -> Answer:
        """The file's map and an open descriptor of the device for mapping it."""
        inode = self._file(request.path, logged=request.write)
        if not may_access(inode, caller, request.write):
            raise FsError(errno.EACCES, f"{inode.name}: permission denied")
        if request.write:
            self.fs.check_writable(inode)
        self.fs.check_data_available(inode)
        fd = self.fs.mem.dup_fd(writable=request.write)
        reply = self._map_reply(
            inode,
            align=self.fs.mem.align,
            device_size=self.fs.sb.dev_size,
            flush=self.fs.coherency.enabled,
        )
        return Answer(reply, (fd,), watch=request.watch)

    def device(self, request: protocol.Device, caller: Credentials) -> Answer:
        """A descriptor of the whole device, for batched copies by root or the mount's owner
        (who may create files anyway)."""
        if self.fs.health.removed:
            raise FsError(errno.EIO, "the device was removed")
        fd = self.fs.mem.dup_fd(writable=self.fs.writable)
        reply = protocol.DeviceReply(
            self.fs.sb.dev_size, self.fs.writable, self.fs.mem.align, self.fs.coherency.enabled
        )
        return Answer(reply.to_fields(), (fd,))

    async def invalidate_file(self, request: protocol.Invalidate, caller: Credentials) -> Answer:
        """Drop this host's cached pages of a file written behind the kernel's back."""
        inode = self._file(request.path)
        await self.invalidate([inode.ino])
        return Answer({})

    def logplay(self, request: protocol.Logplay, caller: Credentials) -> Answer:
        ns = self.fs.namespace
        before_files, before_dirs = ns.files, ns.dirs
        pending = 0
        if request.dry_run:
            pending = max(0, self.fs.log.committed() - self.fs.log.next_index)
        else:
            self.fs.follow()
        reply = protocol.LogplayReply(
            entries=self.fs.log.committed() if request.dry_run else self.fs.log.next_index,
            new_files=ns.files - before_files,
            new_dirs=ns.dirs - before_dirs,
            files=ns.files,
            dirs=ns.dirs,
            bad=[b.describe() for b in self.fs.log.bad.values()],
            pending=pending,
        )
        return Answer(reply.to_fields())
