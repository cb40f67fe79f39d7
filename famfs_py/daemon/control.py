"""The daemon's end of the control channel: who may ask what (one table), and the answers.

Requests (famfs_py.protocol) run on the trio thread, between FUSE requests, so they see and
change the same state as the mount without locks. The caller's identity comes from
SO_PEERCRED, never from the request.
"""

from __future__ import annotations

import array
import contextlib
import errno
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio

from famfs_py import channel, omf, protocol, replies, rundir, wire
from famfs_py.credentials import Credentials, peer_credentials
from famfs_py.daemon import access
from famfs_py.daemon.access import Rule
from famfs_py.dax.cache import CacheFault
from famfs_py.errors import FamfsError, FsError
from famfs_py.fs.alloc import Interleave
from famfs_py.fs.filesystem import Famfs
from famfs_py.fs.fsck import fsck_memory
from famfs_py.fs.namespace import Inode

log = logging.getLogger(__name__)

MAX_CONNECTIONS_PER_USER = 64  # open connections one unprivileged user may hold
IDLE_TIMEOUT = 60.0  # seconds a connection may stay silent between requests
FLUSH_THREADS_PER_USER = 1  # worker threads one unprivileged user's flushes use at a time


@dataclass(frozen=True, kw_only=True)
class DaemonFacts:
    """What the daemon adds to the filesystem's own status (famfs_py.replies.StatusReply)."""

    mountpoint: str
    daemon_pid: int
    cache: str
    open_files: int
    kernel_lookups: int


@dataclass(frozen=True)
class Answer:
    """What an op returns: its typed reply, descriptors to pass, and whether the caller is
    to hear about removal on this connection from now on."""

    reply: replies.Reply
    fds: tuple[int, ...] = ()
    watch: bool = False


class ControlServer:
    def __init__(
        self,
        fs: Famfs,
        mountpoint: str,
        daemon_facts: Callable[[], DaemonFacts],
        invalidate: Callable[[list[int]], Awaitable[None]],
        announce: Callable[[int, int, int], None] | None = None,
        announce_many: Callable[[list[tuple[int, int, int]]], None] | None = None,
    ) -> None:
        self.fs = fs
        self.mountpoint = mountpoint
        self.watchers: set[trio.socket.SocketType] = set()  # holders of mapped files
        self.daemon_facts = daemon_facts
        self.invalidate = invalidate
        self.announce = announce or (lambda ino, offset, length: None)  # to the other hosts
        self.announce_many = announce_many or self._announce_each
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        self._inode: int | None = None
        self._connections: dict[int, int] = {}  # uid -> connections open now
        self._flush_limits: dict[int, trio.CapacityLimiter] = {}  # uid -> its flush threads
        # the authorization table: op -> (who may use it, handler); see famfs_py.daemon.access
        self.ops: dict[type[protocol.Request], tuple[Rule, Callable[..., Any]]] = {
            protocol.Status: (Rule.ANYONE, self.status),
            protocol.Getmap: (Rule.READER, self.getmap),
            protocol.Map: (Rule.READER, self.map),  # and device access: check_device
            protocol.Invalidate: (Rule.READER, self.invalidate_file),
            # each path is authorized as an Invalidate of it, by the handler
            protocol.InvalidateFiles: (Rule.ANYONE, self.invalidate_files),
            protocol.Flush: (Rule.READER, self.flush_file),  # upstream: who may mmap it to read
            protocol.Mkdir: (Rule.CREATOR, self.mkdir),
            protocol.Creat: (Rule.CREATOR, self.creat),  # an existing file: READER
            # each file is authorized as a Creat of it, by the handler
            protocol.CreatMany: (Rule.ANYONE, self.creat_many),
            protocol.Logplay: (Rule.OWNER, self.logplay),
            protocol.Fsck: (Rule.OWNER, self.fsck),
            protocol.Clone: (Rule.OWNER, self.clone),
            protocol.Device: (Rule.OWNER, self.device),
        }

    def bind(self) -> None:
        """Take the mount point's control socket (before mounting: a second daemon for the
        same mount point fails here, and so does a socket someone else put there)."""
        self.path = channel.control_socket(self.mountpoint, os.geteuid())
        try:
            self._inode = rundir.bind_listener(self._listener, self.path)
        except OSError as exc:
            self._listener.close()
            if exc.errno == errno.EADDRINUSE:
                raise FsError(
                    f"another process already serves {self.mountpoint}: {exc.strerror}", errno.EBUSY
                ) from None
            raise FsError(
                f"cannot take the control socket: {exc.strerror}", exc.errno or errno.EIO
            ) from None
        self._listener.listen(64)

    def close(self) -> None:
        if self._inode is not None:
            rundir.unlink_own(self.path, self._inode)
            self._inode = None
        self._listener.close()

    async def serve(self) -> None:
        sock = trio.socket.from_stdlib_socket(self._listener)
        async with trio.open_nursery() as nursery:
            while True:
                conn, _ = await sock.accept()
                caller = peer_credentials(conn)
                if not access.is_privileged(caller) and (
                    self._connections.get(caller.uid, 0) >= MAX_CONNECTIONS_PER_USER
                ):
                    await self._refuse(conn, caller)
                    continue
                self._connections[caller.uid] = self._connections.get(caller.uid, 0) + 1
                nursery.start_soon(self._connection, conn, caller)

    async def _refuse(self, conn: trio.socket.SocketType, caller: Credentials) -> None:
        message = (
            f"uid {caller.uid} has {MAX_CONNECTIONS_PER_USER} connections open to this "
            "daemon already; close some"
        )
        with conn, contextlib.suppress(OSError):
            await conn.send(wire.encode_error(errno.EAGAIN, message))  # a fresh buffer

    async def _connection(self, conn: trio.socket.SocketType, caller: Credentials) -> None:
        try:
            await self._serve_connection(conn, caller)
        finally:
            self.watchers.discard(conn)
            self._connections[caller.uid] -= 1

    async def revoke_mappings(self) -> int:
        """Tell every process holding a mapped file that its mapping is withdrawn (the
        device is going away). Returns how many were told."""
        told = 0
        event = wire.encode_event(wire.EVENT_REVOKE)
        for conn in list(self.watchers):
            try:
                await conn.send(event)
                told += 1
            except OSError:
                self.watchers.discard(conn)
        if told:
            log.warning("told %d holder(s) of mapped files to drop their mappings", told)
        return told

    async def _serve_connection(self, conn: trio.socket.SocketType, caller: Credentials) -> None:
        """Requests one after another; a connection that sends nothing for IDLE_TIMEOUT is
        closed (those watching for removal excepted: they are counted in the user's cap)."""
        with conn:
            while True:
                data = b""
                with trio.move_on_after(IDLE_TIMEOUT) as idle:
                    try:
                        data = await conn.recv(wire.MAX_REQUEST)
                    except OSError:
                        return
                if idle.cancelled_caught:
                    if conn in self.watchers:
                        continue
                    return
                if not data:
                    return
                payload, fds, watch = await self.answer(data, caller)
                if watch:
                    self.watchers.add(conn)
                first, *rest = wire.answer_messages(payload)  # any size
                try:
                    if fds:
                        rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
                        await conn.sendmsg([first], rights)
                    else:
                        await conn.send(first)
                    for part in rest:
                        await conn.send(part)
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
            self._authorize(rule, request, caller)
            result = handler(request, caller)
            answer: Answer = await result if isinstance(result, Awaitable) else result
            return protocol.encode_reply(answer.reply), answer.fds, answer.watch
        except FamfsError as exc:
            return wire.encode_error(exc.errno or errno.EIO, exc.message), (), False
        except (ValueError, TypeError, KeyError) as exc:
            return wire.encode_error(errno.EINVAL, f"malformed request: {exc}"), (), False
        except Exception as exc:
            log.exception("bug while answering a control request")
            return wire.encode_error(errno.EIO, f"internal error: {exc}"), (), False

    def _authorize(self, rule: Rule, request: protocol.Request, caller: Credentials) -> None:
        """Apply the op's rule (EPERM or EACCES saying why); the handler then does the rest."""
        if rule is Rule.ANYONE or access.is_privileged(caller):
            return
        if rule is Rule.OWNER:
            raise FsError(
                f"only {rule.value} may use {request.OP} (you are uid {caller.uid})", errno.EPERM
            )
        path: str = getattr(request, "path", "")
        ns = self.fs.namespace
        existing = ns.resolve(path)
        if rule is Rule.READER or (isinstance(request, protocol.Creat) and existing is not None):
            if existing is None:
                raise FsError(f"{path}: no such file or directory", errno.ENOENT)
            access.check_file(ns, existing, caller, write=bool(getattr(request, "write", False)))
        elif isinstance(request, protocol.Mkdir) and existing is not None and existing.is_dir:
            access.check_reach(ns, existing, caller)  # mkdir -p of what is there: no change
        else:
            access.check_create(ns, path, caller)
            access.check_owner(getattr(request, "uid", None), getattr(request, "gid", None), caller)

    # -- ops -----------------------------------------------------------------------------
    def _owner(self, uid: int | None, gid: int | None, caller: Credentials) -> tuple[int, int]:
        return access.check_owner(uid, gid, caller)

    def _map_reply(self, inode: Inode, **extra: Any) -> replies.FileMapReply:
        assert inode.fmap is not None
        return replies.FileMapReply(
            path=self.fs.namespace.path_of(inode.ino),
            size=inode.size,
            fmap=inode.fmap,
            ino=inode.ino,
            **extra,
        )

    def _file(self, path: str, *, logged: bool = True) -> Inode:
        """The file a request names; `logged=False` also accepts the .meta files."""
        inode = self.fs.lookup_path(path)
        if inode.is_dir:
            raise FsError(f"{inode.name} is a directory", errno.EISDIR)
        if inode.meta is None and (logged or not inode.read_only):  # not .meta: pending
            raise FsError(
                f"{inode.name} is not a logged file (a file written through the mount is "
                "logged once complete)",
                errno.EINVAL,
            )
        return inode

    def status(self, request: protocol.Status, caller: Credentials) -> Answer:
        facts = self.daemon_facts()
        return Answer(replies.StatusReply(**vars(self.fs.status()), **vars(facts)))

    def mkdir(self, request: protocol.Mkdir, caller: Credentials) -> Answer:
        uid, gid = self._owner(request.uid, request.gid, caller)
        created = self.fs.mkdir(request.path, request.mode, uid, gid, parents=request.parents)
        return Answer(replies.MkdirReply(created=created))

    def creat(self, request: protocol.Creat, caller: Credentials) -> Answer:
        return Answer(self._create(request, caller))

    def _create(self, request: protocol.Creat, caller: Credentials) -> replies.FileMapReply:
        uid, gid = self._owner(request.uid, request.gid, caller)
        interleave = None
        if request.interleaved:
            interleave = Interleave(
                request.nstrips or 0, request.nbuckets or 0, request.chunk_size or omf.ALLOC_UNIT
            )
        inode, created = self.fs.create_file(
            request.path, request.size, request.mode, uid, gid, interleave
        )
        return self._map_reply(inode, created=created)

    def creat_many(self, request: protocol.CreatMany, caller: Credentials) -> Answer:
        """Each file exactly as its own Creat: the same rule, checks and answer. Those
        created are logged with one commit (Famfs.one_log_commit): if it fails, none of them
        is created, and each says why."""
        answers: list[replies.FileMapReply | FamfsError] = []
        try:
            with self.fs.one_log_commit():
                for single in request.singles():
                    try:
                        self._authorize(Rule.CREATOR, single, caller)
                        answers.append(self._create(single, caller))
                    except FamfsError as exc:
                        answers.append(exc)
        except FamfsError as exc:  # another writer seen first, or the commit failed
            if not answers:
                raise
            answers = [
                exc if isinstance(a, replies.FileMapReply) and a.created else a for a in answers
            ]
        return Answer(replies.CreatManyReply(files=answers))

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
        return Answer(replies.FsckReply(report=report))

    def getmap(self, request: protocol.Getmap, caller: Credentials) -> Answer:
        inode = self._file(request.path, logged=False)
        try:
            self.fs.check_data_available(inode)
        except FsError:
            return Answer(self._map_reply(inode, available=False))
        return Answer(self._map_reply(inode))

    def map(self, request: protocol.Map, caller: Credentials) -> Answer:
        """The file's map and an open descriptor of the device for mapping it."""
        inode = self._file(request.path, logged=request.write)
        access.check_device(str(self.fs.device.node), caller, write=request.write)
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
            raise FsError("the device was removed", errno.EIO)
        fd = self.fs.mem.dup_fd(writable=self.fs.writable)
        reply = replies.DeviceReply(
            device_size=self.fs.sb.dev_size,
            writable=self.fs.writable,
            align=self.fs.mem.align,
            flush=self.fs.coherency.enabled,
        )
        return Answer(reply, (fd,))

    async def invalidate_file(self, request: protocol.Invalidate, caller: Credentials) -> Answer:
        """A file was written behind the kernel's back (`cp`, `creat -r`): drop this host's
        cached pages of it, and tell the other hosts."""
        inode = self._file(request.path)
        await self.invalidate([inode.ino])
        self.announce(inode.ino, 0, inode.size)
        return Answer(replies.EmptyReply())

    def _announce_each(self, changed: list[tuple[int, int, int]]) -> None:
        for ino, offset, length in changed:
            self.announce(ino, offset, length)

    async def invalidate_files(
        self, request: protocol.InvalidateFiles, caller: Credentials
    ) -> Answer:
        """Invalidate for each path (`cp`'s batch): one trip to the invalidating thread and
        one announcement for all of them. The files that can be are done; then the first
        that could not be (not there, not a logged file, not the caller's to read) is the
        error, as its own Invalidate would have said."""
        inodes: list[Inode] = []
        failure: FamfsError | None = None
        privileged = access.is_privileged(caller)  # every path would pass: not asked
        for path in request.paths:
            try:
                if not privileged:
                    self._authorize(Rule.READER, protocol.Invalidate(path), caller)
                inodes.append(self._file(path))
            except FamfsError as exc:
                failure = failure or exc
        if inodes:
            await self.invalidate([inode.ino for inode in inodes])
            self.announce_many([(inode.ino, 0, inode.size) for inode in inodes])
        if failure is not None:
            raise failure
        return Answer(replies.EmptyReply())

    async def flush_file(self, request: protocol.Flush, caller: Credentials) -> Answer:
        """Make this host current for a file (`famfs-py flush`): write back and evict its CPU
        cache lines, then its page cache (dirty pages of shared mappings are written back
        first, as writes to this daemon). The instructions act on every cache of the host,
        whichever CPU runs them, so a caller needs no device access for it. On a worker
        thread: a big file takes a while, and the mount keeps serving meanwhile (the file's
        place in memory never changes)."""
        inode = self._file(request.path, logged=False)
        self.fs.check_data_available(inode)
        if inode.filemap is None or request.offset > inode.size:
            raise FsError(f"{inode.name}: offset {request.offset} is past its end", errno.EINVAL)
        length = inode.size if request.length is None else request.length
        ranges = list(inode.filemap.ranges(request.offset, length))  # clipped to the file
        limiter = None if access.is_privileged(caller) else self.flush_limit(caller.uid)
        lines = await trio.to_thread.run_sync(
            self._flush_ranges, inode.name, ranges, limiter=limiter
        )
        # then this host's page cache: dirty pages of shared mappings are written back (as
        # writes to this daemon), the rest dropped, so descriptors and mappings read memory
        await self.invalidate([inode.ino])
        if inode.meta is not None:  # a program's own stores: the other hosts hear of them
            self.announce(inode.ino, request.offset, min(length, inode.size - request.offset))
        policy = self.fs.coherency
        return Answer(replies.FlushReply(lines=lines, enabled=policy.enabled, reason=policy.reason))

    def flush_limit(self, uid: int) -> trio.CapacityLimiter:
        """The worker threads an unprivileged user's flushes share: one user's 60 flushing
        connections queue behind each other instead of taking the host's CPUs."""
        if uid not in self._flush_limits:
            self._flush_limits[uid] = trio.CapacityLimiter(FLUSH_THREADS_PER_USER)
        return self._flush_limits[uid]

    def _flush_ranges(self, name: str, ranges: list[tuple[int, int]]) -> int:
        """The cache lines written back and evicted over these device ranges (0: flushing
        is off); a page that faults is EIO."""
        lines = 0
        for dev, n in ranges:
            try:
                lines += self.fs.coherency.invalidate(self.fs.mem.view(dev, n))
            except CacheFault:
                raise FsError(f"{name}: memory error while flushing", errno.EIO) from None
        return lines

    def logplay(self, request: protocol.Logplay, caller: Credentials) -> Answer:
        ns = self.fs.namespace
        before_files, before_dirs = ns.files, ns.dirs
        pending = 0
        if request.dry_run:
            pending = max(0, self.fs.log.committed() - self.fs.log.next_index)
        else:
            self.fs.follow()
        reply = replies.LogplayReply(
            entries=self.fs.log.committed() if request.dry_run else self.fs.log.next_index,
            new_files=ns.files - before_files,
            new_dirs=ns.dirs - before_dirs,
            files=ns.files,
            dirs=ns.dirs,
            bad=[b.describe() for b in self.fs.log.bad.values()],
            pending=pending,
        )
        return Answer(reply)
