"""FamfsOperations: the pyfuse3 request handlers, a thin adapter over fs.filesystem.Famfs.

Handlers do no I/O of their own: reads hand the kernel a view of device memory, writes go
through Famfs. Every handler is guarded: an unexpected exception is logged and answered with
EIO, so a bug never ends the daemon. Operations the log cannot record are refused with EPERM
(or EFBIG for growing a logged file), with a warning in the daemon's log saying why.

On the master, mkdir and create/mknod start pending directories and files
(famfs_py.fs.pending), committed to the log by this rule:
- fsync or fdatasync commits a file at once, the pending directories above it first (the
  file is then logged: it cannot grow any more);
- otherwise a file is committed `commit_delay` seconds after its last descriptor is closed
  (tar -x and cp -a set mode, owner and times right after closing: they land in its entry),
  and a directory `commit_delay` seconds after its last change once nothing pending beneath
  it is open or waiting (tools set a directory's mode after filling it); a tree is logged
  parents first;
- a rename of a closed pending file into a logged directory commits it at once (rsync writes
  a temporary name, sets its attributes, renames it: the rename makes it final);
- chmod/chown/truncate/rename/unlink/rmdir of a pending object change (or drop) its pending
  entry; reopening a file before its commit holds the commit until the next last close;
- at a clean stop everything pending and closed is committed; a crash leaves none of it.
Clients refuse every create with EROFS and a log line saying to create on the master.
"""

from __future__ import annotations

import errno
import functools
import itertools
import logging
import os
import stat
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import pyfuse3
import trio

from famfs_py import omf
from famfs_py.daemon.options import CACHE_MODES, CacheMode
from famfs_py.errors import FsError
from famfs_py.fs.filesystem import Famfs
from famfs_py.fs.identity import Role
from famfs_py.fs.namespace import Inode
from famfs_py.fs.pending import Pending, PendingFiles

log = logging.getLogger(__name__)

COMMIT_DELAY = 1.0  # seconds after the last close before a pending file is committed
COMMIT_TICKS = 10  # at most this many commit passes a second


class Changes(Protocol):
    """Where writes are announced to the other hosts (famfs_py.daemon.propagation)."""

    def changing(self, ino: int, offset: int, length: int) -> AbstractContextManager[None]: ...


def guarded(handler: Callable[..., Any]) -> Callable[..., Any]:
    """FsError -> its errno; FUSEError passes; anything else is logged and becomes EIO."""

    @functools.wraps(handler)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await handler(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except FsError as exc:
            log.debug("%s: %s", handler.__name__, exc)
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None
        except Exception:
            log.exception("bug in the %s handler; answering EIO", handler.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper


def refuse(name: str, code: int = errno.EPERM) -> Callable[..., Any]:
    async def handler(self: FamfsOperations, *args: Any) -> Any:
        # not supported (xattrs: cp -a asks for each file) is an answer, not news
        say = log.warning if code == errno.EPERM else log.debug
        say("refused %s: the famfs log cannot record it", name)
        raise pyfuse3.FUSEError(code)

    handler.__name__ = name
    return handler


# pyfuse3's only word that the kernel could not copy a read reply: its fuse_read handler logs
# "fuse_read(): fuse_reply_* failed with %s" (handlers.pxi) on its logger; pinned by
# tests/test_upstream_compat.py against the installed pyfuse3.
PYFUSE3_LOGGER = "pyfuse3"
READ_REPLY_FAILED = "fuse_read(): fuse_reply_"


class ReplyFailureHook(logging.Handler):
    """pyfuse3 logs (and otherwise ignores) a read reply the kernel could not copy: that is a
    memory fault in the view `read` returned. Probe that range so the bad page is poisoned."""

    def __init__(self, ops: FamfsOperations) -> None:
        super().__init__(logging.ERROR)
        self.ops = ops

    def emit(self, record: logging.LogRecord) -> None:
        if str(record.msg).startswith(READ_REPLY_FAILED):
            self.ops.read_reply_failed()


def refused(message: str, code: int) -> FsError:
    """An operation famfs cannot do: said in the daemon's log, answered with `code`."""
    log.warning("refused: %s", message)
    return FsError(message, code)


@dataclass(eq=False)
class OpenFile:
    inode: Inode
    writable: bool
    pending: Pending | None = None  # a file created through this mount, not logged yet


class FamfsOperations(pyfuse3.Operations):
    supports_dot_lookup = True
    enable_writeback_cache = False
    enable_acl = False

    def __init__(
        self,
        fs: Famfs,
        *,
        cache: str = CacheMode.AUTO,
        timeout: float = 30.0,
        commit_delay: float = COMMIT_DELAY,
    ) -> None:
        super().__init__()
        if cache not in CACHE_MODES:
            raise ValueError(f"cache mode {cache!r} is not one of {', '.join(CACHE_MODES)}")
        self.fs = fs
        self.cache = cache
        self.timeout = timeout
        self.lookups: dict[int, int] = {}
        self.handles: dict[int, OpenFile] = {}
        self.open_files: dict[int, int] = {}  # inode -> its open handles (a mapping holds one)
        # an open directory is (its listing, the entries it had when opened): children are
        # only ever added, so one listing per directory, extended, serves every handle
        self.dir_handles: dict[int, tuple[list[tuple[bytes, int]], int]] = {}
        self._listings: dict[int, list[tuple[bytes, int]]] = {}
        self._next_fh = 1
        self._times = int(fs.mounted_at * 1e9)
        self._last_read: tuple[Inode, int, int] | None = None
        self.pending = PendingFiles(fs, commit_delay)
        self._commit_wakeup = trio.Event()
        self._committer_idle = True
        self.changes: Changes | None = None  # announces writes to the other hosts

    # -- attributes ----------------------------------------------------------------------
    def _inode(self, ino: int) -> Inode:
        inode = self.fs.namespace.inodes.get(ino)
        if inode is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return inode

    def attributes(self, inode: Inode) -> pyfuse3.EntryAttributes:
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = inode.ino
        attr.generation = 0
        attr.entry_timeout = self.timeout
        attr.attr_timeout = self.timeout
        attr.st_mode = inode.st_mode
        attr.st_nlink = inode.nlink
        attr.st_uid = inode.uid
        attr.st_gid = inode.gid
        attr.st_rdev = 0
        attr.st_size = inode.size
        attr.st_blksize = omf.ALLOC_UNIT
        if inode.meta is not None:
            allocated = sum(e.length for e in omf.fmap_extents(inode.meta.fmap))
            attr.st_blocks = allocated // 512
        else:
            attr.st_blocks = 0
        attr.st_atime_ns = attr.st_mtime_ns = attr.st_ctime_ns = self._times
        return attr

    def _remember(self, inode: Inode) -> pyfuse3.EntryAttributes:
        self.lookups[inode.ino] = self.lookups.get(inode.ino, 0) + 1
        return self.attributes(inode)

    @guarded
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        parent = self._inode(parent_inode)
        text = os.fsdecode(name)
        if text == ".":
            return self._remember(parent)
        if text == "..":
            return self._remember(self._inode(parent.parent))
        inode = self.fs.namespace.lookup(parent_inode, text)
        if inode is None:
            raise pyfuse3.FUSEError(errno.ENOENT)  # never cached: files may appear later
        return self._remember(inode)

    @guarded
    async def forget(self, inode_list: list[tuple[int, int]]) -> None:
        for ino, count in inode_list:
            left = self.lookups.get(ino, 0) - count
            if left > 0:
                self.lookups[ino] = left
            else:
                self.lookups.pop(ino, None)

    @guarded
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self.attributes(self._inode(inode))

    @guarded
    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        node = self._inode(inode)
        pending = self.pending.get(inode)
        if pending is not None:  # not logged yet: the change goes into its entry
            if fields.update_size:
                self.pending.resize(pending, attr.st_size)
            if fields.update_mode:
                node.mode = stat.S_IMODE(attr.st_mode)
            if fields.update_uid:
                node.uid = attr.st_uid
            if fields.update_gid:
                node.gid = attr.st_gid
            self.pending.changed(node)
            if pending.due is not None and not node.is_dir:
                self.pending.later(pending)  # what tools do after closing pushes it later
            return self.attributes(node)
        path = self.fs.namespace.path_of(node.ino)
        if fields.update_size and attr.st_size != node.size:
            raise refused(f"truncate {path}: a logged famfs file never changes size", errno.EPERM)
        if fields.update_mode and stat.S_IMODE(attr.st_mode) != node.mode:
            raise refused(f"chmod {path}: the famfs log cannot record a mode change", errno.EPERM)
        if (fields.update_uid and attr.st_uid != node.uid) or (
            fields.update_gid and attr.st_gid != node.gid
        ):
            raise refused(f"chown {path}: the famfs log cannot record an owner change", errno.EPERM)
        # timestamps are not stored by famfs: accepted and not kept
        return self.attributes(node)

    @guarded
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        space = self.fs.space()
        master = self.fs.role == Role.MASTER
        data = pyfuse3.StatvfsData()
        data.f_bsize = data.f_frsize = space.alloc_unit
        data.f_blocks = space.units
        data.f_bfree = space.free_units
        data.f_bavail = space.free_units if master else 0
        data.f_files = space.log_slots
        data.f_ffree = max(0, self.pending.log_slots_free())  # slots held for pending files
        data.f_favail = data.f_ffree if master else 0
        data.f_namemax = omf.MAX_PATHLEN - 1
        return data

    # -- directories ---------------------------------------------------------------------
    @guarded
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        node = self._inode(inode)
        if not node.is_dir:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        assert node.children is not None
        listing = self._listings.setdefault(inode, [])
        if len(listing) < len(node.children):
            new = itertools.islice(node.children.items(), len(listing), None)
            listing.extend((os.fsencode(name), ino) for name, ino in new)
        fh = self._new_fh()
        self.dir_handles[fh] = (listing, len(listing))  # constant memory per handle
        return fh

    @guarded
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        entries, end = self.dir_handles[fh]
        inodes = self.fs.namespace.inodes
        for index in range(start_id, end):
            name, ino = entries[index]
            if not pyfuse3.readdir_reply(token, name, self.attributes(inodes[ino]), index + 1):
                return
            self.lookups[ino] = self.lookups.get(ino, 0) + 1

    @guarded
    async def releasedir(self, fh: int) -> None:
        self.dir_handles.pop(fh, None)

    # -- files ---------------------------------------------------------------------------
    def _new_fh(self) -> int:
        fh = self._next_fh
        self._next_fh += 1
        return fh

    @guarded
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        node = self._inode(inode)
        if node.is_dir:
            raise pyfuse3.FUSEError(errno.EISDIR)
        writable = flags & os.O_ACCMODE != os.O_RDONLY
        pending = self.pending.get(inode)
        if pending is not None:
            if flags & os.O_TRUNC:
                self.pending.resize(pending, 0)
            return self._open_pending(pending, writable)
        if writable:
            self.fs.check_writable(node)
        if flags & os.O_TRUNC:
            raise refused(
                f"open {self.fs.namespace.path_of(node.ino)} with O_TRUNC: a logged famfs "
                "file cannot be truncated",
                errno.EPERM,
            )
        fh = self._new_fh()
        self._add_handle(fh, OpenFile(node, writable))
        return self._file_info(fh, node)

    def _open_pending(self, pending: Pending, writable: bool) -> pyfuse3.FileInfo:
        pending.handles += 1
        pending.due = None  # reopened: committed after its next last close
        fh = self._new_fh()
        self._add_handle(fh, OpenFile(pending.inode, writable, pending))
        return self._file_info(fh, pending.inode)

    def _add_handle(self, fh: int, handle: OpenFile) -> None:
        self.handles[fh] = handle
        ino = handle.inode.ino
        self.open_files[ino] = self.open_files.get(ino, 0) + 1

    def is_open(self, ino: int) -> bool:
        """Whether a descriptor or a mapping on this host holds the file open."""
        return self.open_files.get(ino, 0) > 0

    def _file_info(self, fh: int, node: Inode) -> pyfuse3.FileInfo:
        info = pyfuse3.FileInfo(fh=fh)
        if self.cache == CacheMode.NEVER or node.read_only:
            info.direct_io = True  # .meta files always show the bytes in memory now
        elif self.cache == CacheMode.ALWAYS:
            info.keep_cache = True
        else:
            info.keep_cache = False  # auto: drop cached pages, see other hosts' writes
        return info

    @guarded
    async def read(self, fh: int, off: int, size: int) -> Any:
        inode = self.handles[fh].inode
        data = self.fs.read(inode, off, size)
        self._last_read = (inode, off, len(data))  # pyfuse3 replies before the next request
        return data

    def read_reply_failed(self) -> None:
        if self._last_read is None:
            return
        inode, off, length = self._last_read
        found = self.fs.failures.probe(inode, off, length)
        log.error(
            "the reply to a read of %s at %d+%d faulted; %d bad page(s) poisoned",
            self.fs.namespace.path_of(inode.ino),
            off,
            length,
            found,
        )

    @guarded
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        handle = self.handles[fh]
        if not handle.writable:
            raise pyfuse3.FUSEError(errno.EBADF)
        pending = handle.pending
        if pending is not None and not pending.committed:  # no other host sees it yet
            return self.pending.write(pending, off, buf)
        inode = handle.inode
        if off >= inode.size and inode.meta is not None:
            raise refused(
                f"write past the end of {self.fs.namespace.path_of(inode.ino)}: a logged "
                f"famfs file cannot grow ({inode.size} bytes)",
                errno.EFBIG,
            )
        changes = self.changes
        if changes is None:
            return self.fs.write(inode, off, buf)
        with changes.changing(inode.ino, off, len(buf)):  # other hosts hear of it
            return self.fs.write(inode, off, buf)

    @guarded
    async def fsync(self, fh: int, datasync: bool) -> None:
        # stores reach device memory directly (and are flushed); a pending file is committed
        pending = self.handles[fh].pending
        if pending is not None and not pending.committed:
            self._commit(pending)

    @guarded
    async def release(self, fh: int) -> None:
        handle = self.handles.pop(fh, None)
        if handle is not None:
            ino = handle.inode.ino
            left = self.open_files.pop(ino, 0) - 1
            if left > 0:
                self.open_files[ino] = left
        pending = handle.pending if handle is not None else None
        if pending is None or pending.committed:
            return
        pending.handles -= 1
        if pending.handles > 0:
            return
        if pending.unlinked:
            self.pending.discard(pending)
        elif pending.failed:
            self._drop(pending)
        else:
            self._commit_later(pending)

    # -- creating (master) ---------------------------------------------------------------
    def _relpath(self, parent: Inode, name: bytes) -> str:
        head = self.fs.namespace.path_of(parent.ino)
        text = os.fsdecode(name)
        return f"{head}/{text}" if head else text

    def _check_create(self, what: str, relpath: str) -> None:
        """EROFS on a client, said in its log. Who may create where is the kernel's check of
        the directory's mode and owner (default_permissions) before the request comes."""
        try:
            self.fs.check_can_create()
        except FsError:
            if self.fs.role != Role.MASTER:
                log.warning(
                    "refused %s %s: this host is a client; create on the master", what, relpath
                )
            raise

    @guarded
    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        parent = self._inode(parent_inode)
        relpath = self._relpath(parent, name)
        self._check_create("mkdir", relpath)
        mode = mode & ~ctx.umask & 0o7777
        pending = self.pending.create(
            parent, os.fsdecode(name), mode, ctx.uid, ctx.gid, is_dir=True
        )
        self._wake_committer()
        return self._remember(pending.inode)

    @guarded
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self.pending.rmdir(self._pending_to_remove("rmdir", parent_inode, name))

    def _pending_to_remove(self, verb: str, parent_inode: int, name: bytes) -> Pending:
        """The pending file (unlink) or directory (rmdir) `name`: the log removes nothing."""
        parent = self._inode(parent_inode)
        inode = self.fs.namespace.lookup(parent.ino, os.fsdecode(name))
        if inode is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        if verb == "rmdir" and not inode.is_dir:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        pending = self.pending.get(inode.ino)
        if pending is None:
            what = "a directory" if inode.is_dir else "a file"
            raise refused(
                f"{verb} {self._relpath(parent, name)}: the famfs log cannot record removing "
                f"{what}",
                errno.EPERM,
            )
        return pending

    def _create(self, parent_inode: int, name: bytes, mode: int, ctx: Any) -> Pending:
        parent = self._inode(parent_inode)
        relpath = self._relpath(parent, name)
        self._check_create("create", relpath)
        mode = mode & ~ctx.umask & 0o7777
        return self.pending.create(parent, os.fsdecode(name), mode, ctx.uid, ctx.gid)

    @guarded
    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: pyfuse3.RequestContext
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        pending = self._create(parent_inode, name, mode, ctx)
        writable = flags & os.O_ACCMODE != os.O_RDONLY
        info = self._open_pending(pending, writable)
        return info, self._remember(pending.inode)

    @guarded
    async def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        if not stat.S_ISREG(mode):
            relpath = self._relpath(self._inode(parent_inode), name)
            raise refused(f"mknod {relpath}: famfs holds regular files only", errno.EPERM)
        pending = self._create(parent_inode, name, mode, ctx)
        self._commit_later(pending)
        return self._remember(pending.inode)

    @guarded
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self.pending.unlink(self._pending_to_remove("unlink", parent_inode, name))

    @guarded
    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        old_parent = self._inode(parent_inode_old)
        inode = self.fs.namespace.lookup(old_parent.ino, os.fsdecode(name_old))
        if inode is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        pending = self.pending.get(inode.ino)
        if pending is None or inode.is_dir or flags & pyfuse3.RENAME_EXCHANGE:
            raise refused(
                f"rename {self._relpath(old_parent, name_old)}: the famfs log cannot record "
                "renaming a logged file or directory",
                errno.EPERM,
            )
        new_parent = self._inode(parent_inode_new)
        if not new_parent.is_dir:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        replace = not flags & pyfuse3.RENAME_NOREPLACE
        self.pending.rename(pending, new_parent, os.fsdecode(name_new), replace=replace)
        self.pending.changed(old_parent)
        self.pending.changed(new_parent)
        if pending.handles == 0 and new_parent.ino not in self.pending.files:
            self._commit(pending)  # renamed into place, closed: final

    # -- committing ----------------------------------------------------------------------
    def _commit(self, pending: Pending, *, serving: bool = True) -> None:
        pending.due = None
        parent, name, shown = pending.inode.parent, pending.inode.name, not pending.unlinked
        committed = None
        try:
            committed = self.pending.commit(pending)
        finally:
            if committed is None and serving and shown:  # dropped: empty, failed
                self._forget_entry(parent, name)

    def _drop(self, pending: Pending) -> None:
        parent, name = pending.inode.parent, pending.inode.name
        self.pending.discard(pending)
        self._forget_entry(parent, name)

    @staticmethod
    def _forget_entry(parent: int, name: str) -> None:
        """A file dropped without a request for it (empty, failed): the kernel must stop
        showing its cached entry."""
        pyfuse3.invalidate_entry_async(parent, os.fsencode(name), ignore_enoent=True)

    def _commit_later(self, pending: Pending) -> None:
        self.pending.later(pending)
        self._wake_committer()

    def _wake_committer(self) -> None:
        # a new due time is now + delay, never before the committer's planned wake: only
        # a committer waiting for nothing needs waking (no per-release scan of the pending)
        if self._committer_idle:
            self._commit_wakeup.set()

    def commit_due(self, everything: bool = False) -> None:
        """Commit the pending files whose time has come (all closed ones: `everything`)."""
        try:
            due = self.pending.due(float("inf") if everything else None)
            for pending in due:
                try:
                    self._commit(pending, serving=not everything)
                except FsError:
                    pass  # said in the log; the file is dropped
        except Exception:  # the loop must go on: later files still need their commits
            log.exception("bug while committing pending files")

    async def commit_loop(self) -> None:
        """Commit pending files as they fall due (runs on the master's event loop)."""
        while True:
            self.commit_due()
            now = time.monotonic()
            when = self.pending.next_due(now)
            self._committer_idle = when is None
            # at most COMMIT_TICKS passes a second, however many files fall due one by one
            wait = float("inf") if when is None else max(when - now, 1 / COMMIT_TICKS)
            with trio.move_on_after(wait):
                await self._commit_wakeup.wait()
            self._commit_wakeup = trio.Event()

    # -- refused: the log has no record for these ----------------------------------------
    link = guarded(refuse("link"))
    symlink = guarded(refuse("symlink"))
    setxattr = guarded(refuse("setxattr", errno.ENOTSUP))
    removexattr = guarded(refuse("removexattr", errno.ENOTSUP))
