"""FamfsOperations: the pyfuse3 request handlers, a thin adapter over fs.filesystem.Famfs.

Handlers do no I/O of their own: reads hand the kernel a view of device memory, writes go
through Famfs. Every handler is guarded: an unexpected exception is logged and answered with
EIO, so a bug never ends the daemon. Operations the log cannot record are refused with EPERM
(or EFBIG for growing a logged file), with a warning in the daemon's log saying why.

Creating through the mount (mkdir, create, mknod, rename, unlink, rmdir; the pending part of
open, setattr, fsync, release) and the rule for committing pending files to the log are
famfs_py.daemon.creating's; these handlers resolve the inodes and hand the work over.
"""

from __future__ import annotations

import errno
import functools
import inspect
import itertools
import logging
import os
import stat
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import pyfuse3

from famfs_py import omf
from famfs_py.daemon.creating import COMMIT_DELAY, Creating, refused
from famfs_py.daemon.options import CACHE_MODES, CacheMode
from famfs_py.errors import FsError
from famfs_py.fs.filesystem import Famfs
from famfs_py.fs.identity import Role
from famfs_py.fs.namespace import Inode
from famfs_py.fs.pending import Pending

log = logging.getLogger(__name__)


class Changes(Protocol):
    """Where writes are announced to the other hosts (famfs_py.daemon.propagation)."""

    def changing(self, ino: int, offset: int, length: int) -> AbstractContextManager[None]: ...


def guarded(handler: Callable[..., Any]) -> Callable[..., Any]:
    """FsError -> its errno; FUSEError passes; anything else is logged and becomes EIO.

    A plain (not async) handler is called inside the one coroutine pyfuse3 awaits: the hot
    handlers (lookup, getattr, open, release, read, write) await nothing, and a second
    coroutine per request would be work done for nothing."""
    name = handler.__name__
    if not inspect.iscoroutinefunction(handler):

        @functools.wraps(handler)
        async def plain(*args: Any, **kwargs: Any) -> Any:
            try:
                return handler(*args, **kwargs)
            except pyfuse3.FUSEError:
                raise
            except Exception as exc:
                raise _answer_for(name, exc) from None

        return plain

    @functools.wraps(handler)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await handler(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except Exception as exc:
            raise _answer_for(name, exc) from None

    return wrapper


def _answer_for(name: str, exc: Exception) -> pyfuse3.FUSEError:
    """What a handler's exception answers (called while handling it): an FsError its
    errno; anything else, a bug, is logged with its traceback and answers EIO."""
    if isinstance(exc, FsError):
        log.debug("%s: %s", name, exc)
        return pyfuse3.FUSEError(exc.errno or errno.EIO)
    log.exception("bug in the %s handler; answering EIO", name)
    return pyfuse3.FUSEError(errno.EIO)


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


@dataclass(eq=False, slots=True)
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
        self._direct_io = cache == CacheMode.NEVER
        self._keep_cache = cache == CacheMode.ALWAYS
        self.timeout = timeout
        self._inodes = fs.namespace.inodes  # one namespace for the mount's life
        self.lookups: dict[int, int] = {}
        self._attrs: dict[int, pyfuse3.EntryAttributes] = {}  # logged files the kernel knows
        self.handles: dict[int, OpenFile] = {}
        self.open_files: dict[int, int] = {}  # inode -> its open handles (a mapping holds one)
        # an open directory is (its listing, the entries it had when opened): children are
        # only ever added, so one listing per directory, extended, serves every handle
        self.dir_handles: dict[int, tuple[list[tuple[bytes, int]], int]] = {}
        self._listings: dict[int, list[tuple[bytes, int]]] = {}
        self._next_fh = 1
        self._times = int(fs.mounted_at * 1e9)
        self._last_read: tuple[Inode, int, int] | None = None
        self.creating = Creating(fs, commit_delay)
        self.pending = self.creating.pending
        self.changes: Changes | None = None  # announces writes to the other hosts

    # -- attributes ----------------------------------------------------------------------
    def _inode(self, ino: int) -> Inode:
        inode = self._inodes.get(ino)
        if inode is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return inode

    def attributes(self, inode: Inode) -> pyfuse3.EntryAttributes:
        """A logged file's attributes never change: made once, kept while the kernel knows
        the inode (dropped at its forget), answered as they are (pyfuse3 copies them)."""
        attr = self._attrs.get(inode.ino)
        if attr is not None:
            return attr
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
        attr.st_atime_ns = attr.st_mtime_ns = attr.st_ctime_ns = self._times
        if not inode.logged_file:  # a directory, a .meta file, a pending file: may change
            attr.st_blocks = 0
            return attr
        attr.st_blocks = inode.allocated // 512
        self._attrs[inode.ino] = attr
        return attr

    def _remember(self, inode: Inode) -> pyfuse3.EntryAttributes:
        self.lookups[inode.ino] = self.lookups.get(inode.ino, 0) + 1
        return self.attributes(inode)

    @guarded
    def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        parent = self._inode(parent_inode)
        children = parent.children
        ino = children.get(os.fsdecode(name)) if children is not None else None
        if ino is not None:
            return self._remember(self._inodes[ino])
        if name == b".":
            return self._remember(parent)
        if name == b"..":
            return self._remember(self._inode(parent.parent))
        raise pyfuse3.FUSEError(errno.ENOENT)  # never cached: files may appear later

    @guarded
    def forget(self, inode_list: list[tuple[int, int]]) -> None:
        for ino, count in inode_list:
            left = self.lookups.get(ino, 0) - count
            if left > 0:
                self.lookups[ino] = left
            else:
                self.lookups.pop(ino, None)
                self._attrs.pop(ino, None)

    @guarded
    def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
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
            self.creating.setattr(pending, attr, fields)
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
    def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        node = self._inode(inode)
        if node.is_dir:
            raise pyfuse3.FUSEError(errno.EISDIR)
        writable = flags & os.O_ACCMODE != os.O_RDONLY
        pending = self.pending.files.get(inode)
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
        self.creating.opened(pending)
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
        if node.read_only:  # .meta files always show the bytes in memory now
            return pyfuse3.FileInfo(fh=fh, direct_io=True)
        # never: direct_io; always: keep_cache; auto: drop cached pages, see other hosts' writes
        return pyfuse3.FileInfo(fh=fh, direct_io=self._direct_io, keep_cache=self._keep_cache)

    @guarded
    def read(self, fh: int, off: int, size: int) -> Any:
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
    def write(self, fh: int, off: int, buf: bytes) -> int:
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
    def fsync(self, fh: int, datasync: bool) -> None:
        # stores reach device memory directly (and are flushed); a pending file is committed
        pending = self.handles[fh].pending
        if pending is not None:
            self.creating.synced(pending)

    @guarded
    def release(self, fh: int) -> None:
        handle = self.handles.pop(fh, None)
        if handle is not None:
            ino = handle.inode.ino
            left = self.open_files.pop(ino, 0) - 1
            if left > 0:
                self.open_files[ino] = left
            if handle.pending is not None:
                self.creating.closed(handle.pending)

    # -- creating (master): famfs_py.daemon.creating ------------------------------------
    @guarded
    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        return self._remember(self.creating.mkdir(self._inode(parent_inode), name, mode, ctx))

    @guarded
    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: pyfuse3.RequestContext
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        pending = self.creating.create(self._inode(parent_inode), name, mode, ctx)
        writable = flags & os.O_ACCMODE != os.O_RDONLY
        info = self._open_pending(pending, writable)
        return info, self._remember(pending.inode)

    @guarded
    async def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        return self._remember(self.creating.mknod(self._inode(parent_inode), name, mode, ctx))

    @guarded
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self.creating.unlink(self._inode(parent_inode), name)

    @guarded
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self.creating.rmdir(self._inode(parent_inode), name)

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
        new_parent = self._inode(parent_inode_new)
        self.creating.rename(old_parent, name_old, new_parent, name_new, flags)

    # -- refused: the log has no record for these ----------------------------------------
    link = guarded(refuse("link"))
    symlink = guarded(refuse("symlink"))
    setxattr = guarded(refuse("setxattr", errno.ENOTSUP))
    removexattr = guarded(refuse("removexattr", errno.ENOTSUP))
