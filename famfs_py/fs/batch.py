"""Batched creation on the master: many files and directories allocated, then logged with one
commit (`cp -r`'s batches).

Items are taken in order, each as its own `creat` or `mkdir -p` of one directory would be:
an item may sit in a directory made earlier in the same batch, an existing file of the same
size is returned as it is, an existing directory is no error. An item that cannot be made
(bad name, exists, no space, log full, refused by `check`) is reported alone and leaves
nothing: its space is given back, it is not in the namespace, later items see it absent.
The items that can be made are logged together: their entries written one after another
and flushed once, then the header's counters written once (Log.append_many): a crash before
that write leaves none of them in the log, after it all of them. If the log cannot be
written at all, every item of the batch fails with that error and nothing of it remains.

While a batch is planned, its new objects hang in the namespace as unlogged inodes (as
pending files do), numbered as their entries will be, so that every rule a single request
applies (names, parents, permissions through `check`) applies to the next item unchanged.
A batch runs without yielding to the event loop: nobody sees it half-planned.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass

from famfs_py import omf
from famfs_py.dax.memory import MemoryFault
from famfs_py.errors import FamfsError, FsError, NamespaceError
from famfs_py.fs.alloc import BadInterleave, Interleave, NoSpace
from famfs_py.fs.filesystem import Famfs
from famfs_py.fs.log import LogFull
from famfs_py.fs.namespace import FIRST_ENTRY_INO, Inode

MAX_ITEMS = 1024  # items one batch may hold


@dataclass(frozen=True)
class NewFile:
    relpath: str
    size: int
    mode: int
    uid: int
    gid: int
    interleave: Interleave | None = None


@dataclass(frozen=True)
class NewDir:
    """A directory; an existing one is fine (mkdir -p of one level)."""

    relpath: str
    mode: int
    uid: int
    gid: int


@dataclass
class Outcome:
    """What became of one item: its inode and whether it was made now, or the error."""

    inode: Inode | None = None
    created: bool = False
    error: FamfsError | None = None


def create_many(
    fs: Famfs,
    items: list[NewFile | NewDir],
    check: Callable[[NewFile | NewDir], None] | None = None,
) -> list[Outcome]:
    """Make `items` (see the module's docstring); `check(item)`, if given, runs right
    before each item is planned (the daemon's permission rules) and refuses it by raising
    FamfsError."""
    if len(items) > MAX_ITEMS:
        raise FsError(f"a batch holds at most {MAX_ITEMS} items, not {len(items)}", errno.E2BIG)
    outcomes = [Outcome() for _ in items]
    if fs.log_parents is not None:  # pending directories above the items: logged first
        for item, outcome in zip(items, outcomes, strict=True):
            try:
                fs.log_parents(item.relpath)
            except FamfsError as exc:
                outcome.error = exc
    batch = _Batch(fs)
    try:
        for item, outcome in zip(items, outcomes, strict=True):
            if outcome.error is not None:
                continue
            try:
                if check is not None:
                    check(item)
                outcome.inode, outcome.created = batch.plan(item)
            except FamfsError as exc:
                outcome.error = exc
        batch.commit()
    except FamfsError as exc:
        batch.undo()
        for outcome in outcomes:
            if outcome.error is None:
                outcome.inode, outcome.created, outcome.error = None, False, exc
    except BaseException:
        batch.undo()
        raise
    return outcomes


class _Batch:
    """The objects planned so far: attached unlogged, their payloads, their space."""

    def __init__(self, fs: Famfs) -> None:
        self.fs = fs
        self.inodes: list[Inode] = []
        self.payloads: list[omf.FileMeta | omf.MkdirMeta] = []
        self.first = fs.log.next_index

    def plan(self, item: NewFile | NewDir) -> tuple[Inode, bool]:
        fs, ns = self.fs, self.fs.namespace
        existing = ns.resolve(item.relpath)
        if isinstance(item, NewDir):
            if existing is not None:
                if not existing.is_dir:
                    raise FsError(f"{item.relpath} exists and is not a directory", errno.ENOTDIR)
                return existing, False
        elif existing is not None:
            if existing.is_dir:
                raise FsError(f"{item.relpath} is a directory", errno.EISDIR)
            if existing.size != item.size:
                raise FsError(
                    f"{item.relpath} exists with size {existing.size}, not {item.size}",
                    errno.EEXIST,
                )
            return existing, False
        fs.check_can_create()
        if isinstance(item, NewFile) and item.size <= 0:
            raise FsError(f"{item.relpath}: a famfs file cannot be empty", errno.EINVAL)
        try:
            ns.check_new(item.relpath)
        except NamespaceError as exc:
            raise FsError(str(exc), exc.errno) from None
        index = self.first + len(self.payloads)
        if index >= fs.log.slots:
            raise FsError(
                f"the log is full ({fs.log.slots} entries); no more files can be created",
                errno.ENOSPC,
            )
        payload: omf.FileMeta | omf.MkdirMeta
        if isinstance(item, NewDir):
            payload = omf.MkdirMeta(item.uid, item.gid, item.mode & 0o7777, item.relpath)
        else:
            payload = omf.FileMeta(
                item.size,
                omf.FM_ALL_HOSTS_RW,
                item.uid,
                item.gid,
                item.mode & 0o7777,
                item.relpath,
                self._allocate(item),
            )
        parent = ns.resolve(item.relpath.rpartition("/")[0])
        assert parent is not None  # check_new found it
        name = item.relpath.rpartition("/")[2]
        is_dir = isinstance(item, NewDir)
        inode = Inode(
            FIRST_ENTRY_INO + index, name, parent.ino, is_dir, payload.mode, item.uid, item.gid
        )
        if is_dir:
            inode.children = {}
        elif isinstance(item, NewFile):
            inode.size = item.size  # a second item of this path sees it as it will be
        ns.attach_unlogged(inode)
        self.inodes.append(inode)
        self.payloads.append(payload)
        return inode, True

    def _allocate(self, item: NewFile) -> omf.Fmap:
        bitmap = self.fs.log.bitmap
        try:
            if item.interleave is None:
                return omf.SimpleFmap((bitmap.allocate(item.size),))
            return bitmap.allocate_interleaved(item.size, item.interleave)
        except NoSpace as exc:
            raise FsError(
                f"{item.relpath}: no space for {item.size} bytes ({exc})", errno.ENOSPC
            ) from None
        except BadInterleave as exc:
            raise FsError(f"{item.relpath}: {exc}", errno.EINVAL) from None

    def commit(self) -> None:
        """Log every planned object with one commit; then they are ordinary logged ones."""
        fs = self.fs
        if not self.payloads:
            return
        try:
            first = fs.log.append_many(self.payloads)
        except LogFull as exc:
            raise FsError(f"{exc}; no more files can be created", errno.ENOSPC) from None
        except MemoryFault as exc:
            fs.health.go_failsafe(f"the log cannot be written ({exc})")
            raise FsError(f"the log cannot be written: {exc}", errno.EIO) from None
        assert first == self.first
        fs.log.next_index = first + len(self.payloads)
        for k, (inode, payload) in enumerate(zip(self.inodes, self.payloads, strict=True)):
            fs.namespace.now_logged(inode, first + k, payload)
        self.inodes, self.payloads = [], []

    def undo(self) -> None:
        """Nothing planned remains: detached (children first), space given back."""
        bitmap = self.fs.log.bitmap
        for inode, payload in zip(reversed(self.inodes), reversed(self.payloads), strict=True):
            self.fs.namespace.detach(inode)
            if isinstance(payload, omf.FileMeta):
                for extent in omf.fmap_extents(payload.fmap):
                    bitmap.release(extent)
        self.inodes, self.payloads = [], []
