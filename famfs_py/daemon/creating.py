"""Creating through the master's mount: the FUSE side of pending files and directories
(famfs_py.fs.pending), the rule for when they are committed to the log, and the refusals of
what the log cannot record.

FamfsOperations (famfs_py.daemon.operations) resolves inodes and answers the kernel; the
handlers for mkdir, create, mknod, rename, unlink and rmdir, and the pending part of open,
setattr, fsync and release, hand their work to `Creating`.

On the master, mkdir and create/mknod start pending directories and files, committed to the
log by this rule:
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
import logging
import os
import stat
import time
from typing import Any

import pyfuse3
import trio

from famfs_py.errors import FsError
from famfs_py.fs.filesystem import Famfs
from famfs_py.fs.identity import Role
from famfs_py.fs.namespace import Inode
from famfs_py.fs.pending import Pending, PendingFiles

log = logging.getLogger(__name__)

COMMIT_DELAY = 1.0  # seconds after the last close before a pending file is committed
COMMIT_TICKS = 10  # at most this many commit passes a second


def refused(message: str, code: int) -> FsError:
    """An operation famfs cannot do: said in the daemon's log, answered with `code`."""
    log.warning("refused: %s", message)
    return FsError(message, code)


class Creating:
    """Pending files and directories made through this mount, and their commits."""

    def __init__(self, fs: Famfs, commit_delay: float = COMMIT_DELAY) -> None:
        self.fs = fs
        self.pending = PendingFiles(fs, commit_delay)
        self._commit_wakeup = trio.Event()
        self._committer_idle = True

    # -- names ---------------------------------------------------------------------------
    def relpath(self, parent: Inode, name: bytes) -> str:
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

    # -- creating ------------------------------------------------------------------------
    def mkdir(self, parent: Inode, name: bytes, mode: int, ctx: Any) -> Inode:
        self._check_create("mkdir", self.relpath(parent, name))
        mode = mode & ~ctx.umask & 0o7777
        pending = self.pending.create(
            parent, os.fsdecode(name), mode, ctx.uid, ctx.gid, is_dir=True
        )
        self._wake_committer()
        return pending.inode

    def create(self, parent: Inode, name: bytes, mode: int, ctx: Any) -> Pending:
        """A new pending file (open O_CREAT, creat): the caller opens it."""
        self._check_create("create", self.relpath(parent, name))
        mode = mode & ~ctx.umask & 0o7777
        return self.pending.create(parent, os.fsdecode(name), mode, ctx.uid, ctx.gid)

    def mknod(self, parent: Inode, name: bytes, mode: int, ctx: Any) -> Inode:
        if not stat.S_ISREG(mode):
            relpath = self.relpath(parent, name)
            raise refused(f"mknod {relpath}: famfs holds regular files only", errno.EPERM)
        pending = self.create(parent, name, mode, ctx)
        self._commit_later(pending)
        return pending.inode

    # -- what a pending object takes -------------------------------------------------------
    def opened(self, pending: Pending) -> None:
        pending.handles += 1
        pending.due = None  # reopened: committed after its next last close

    def closed(self, pending: Pending) -> None:
        """A descriptor of `pending` was released: its last one starts the commit's delay."""
        if pending.committed:
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

    def synced(self, pending: Pending) -> None:
        """fsync/fdatasync: the file is committed now."""
        if not pending.committed:
            self._commit(pending)

    def setattr(self, pending: Pending, attr: Any, fields: Any) -> None:
        """chmod/chown/truncate of a pending object: the change goes into its entry."""
        node = pending.inode
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

    def unlink(self, parent: Inode, name: bytes) -> None:
        self.pending.unlink(self._to_remove("unlink", parent, name))

    def rmdir(self, parent: Inode, name: bytes) -> None:
        self.pending.rmdir(self._to_remove("rmdir", parent, name))

    def _to_remove(self, verb: str, parent: Inode, name: bytes) -> Pending:
        """The pending file (unlink) or directory (rmdir) `name`: the log removes nothing."""
        inode = self.fs.namespace.lookup(parent.ino, os.fsdecode(name))
        if inode is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        if verb == "rmdir" and not inode.is_dir:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        pending = self.pending.get(inode.ino)
        if pending is None:
            what = "a directory" if inode.is_dir else "a file"
            raise refused(
                f"{verb} {self.relpath(parent, name)}: the famfs log cannot record removing {what}",
                errno.EPERM,
            )
        return pending

    def rename(
        self, old_parent: Inode, name_old: bytes, new_parent: Inode, name_new: bytes, flags: int
    ) -> None:
        inode = self.fs.namespace.lookup(old_parent.ino, os.fsdecode(name_old))
        if inode is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        pending = self.pending.get(inode.ino)
        if pending is None or inode.is_dir or flags & pyfuse3.RENAME_EXCHANGE:
            raise refused(
                f"rename {self.relpath(old_parent, name_old)}: the famfs log cannot record "
                "renaming a logged file or directory",
                errno.EPERM,
            )
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
