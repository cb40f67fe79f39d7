"""Files created through the master's mount (open O_CREAT, creat, mknod) before their log
entry: allocated as they are written, logged once, complete.

A pending file lives only in the master's namespace (other hosts replay the log and do not
see it). Its bytes go straight into device memory (each write flushed from the CPU caches,
as every write through the mount is), into contiguous runs allocated as it grows: the next
run is as large as everything allocated so far (doubling), placed right after the last run
when that space is free (so the runs merge), within the format's 16 extents per file.
Committing gives the unused tail back and appends one log entry with the final size, mode,
uid and gid; from then on the file is an ordinary logged famfs file.

A pending file that cannot be completed (no space, too many runs) fails: its space is given
back at once and it is dropped when its last descriptor closes. A crash before the commit
leaves nothing: the space was never in the log, so the next mount's bitmap has it free.
Empty files are dropped at commit: the format cannot record a size of 0.

Directories made through the mount are pending too, so that what tools do to a directory
once they have filled it (tar -x, cp -a and rsync set its mode last) lands in its entry. A
pending object is due `delay` seconds after its last change (a file: its last close; a
directory: its mkdir, a chmod/chown of it, a create in it); a directory is committed once
it is due and nothing pending beneath it is open or waiting, and a file only after its
directory: a tree is committed parents first, once it is quiet. Anything logged under a
pending directory (an fsync, `famfs-py creat`) logs the directories above it first.

When to commit files is the daemon's rule (famfs_py.daemon.creating); this module does
the allocation, the bytes, the changes a pending entry takes, and the commit itself.
"""

from __future__ import annotations

import errno
import logging
import time
from dataclasses import dataclass, field

from famfs_py import omf
from famfs_py.dax.memory import MemoryFault
from famfs_py.errors import FsError, NamespaceError
from famfs_py.fs.alloc import NoSpace
from famfs_py.fs.filesystem import Famfs
from famfs_py.fs.fmap import FileMap
from famfs_py.fs.namespace import Inode

log = logging.getLogger(__name__)

FIRST_PENDING_INO = 1 << 48  # above every logged inode number (FIRST_ENTRY_INO + index)
ZEROS = bytes(1 << 20)


@dataclass(eq=False)
class Pending:
    """One file not yet in the log."""

    inode: Inode
    extents: list[omf.Extent] = field(default_factory=list)
    capacity_map: FileMap = field(default_factory=lambda: FileMap(omf.SimpleFmap(()), 0))
    handles: int = 0  # open descriptors (FUSE file handles)
    due: float | None = None  # monotonic time its commit is due (set at the last release)
    failed: str | None = None  # why it can never be committed (its space is given back)
    unlinked: bool = False
    committed: bool = False

    @property
    def capacity(self) -> int:
        return self.capacity_map.size


class PendingFiles:
    """The master's pending files, by inode number."""

    def __init__(self, fs: Famfs, delay: float = 1.0) -> None:
        self.fs = fs
        self.delay = delay  # seconds from an object's last change to its commit
        self.files: dict[int, Pending] = {}
        self._next_ino = FIRST_PENDING_INO
        fs.log_parents = self.log_parents

    def get(self, ino: int) -> Pending | None:
        return self.files.get(ino)

    # -- creating --------------------------------------------------------------------------
    def log_slots_free(self) -> int:
        """Log slots left once every pending file has its entry."""
        log_ = self.fs.log
        return log_.slots - log_.next_index - len(self.files)

    def check_log_room(self, what: str) -> None:
        if self.log_slots_free() <= 0:
            raise FsError(
                f"{what}: the log is full ({self.fs.log.slots} entries, "
                f"{len(self.files)} of them held for files being written)",
                errno.ENOSPC,
            )

    def create(
        self, parent: Inode, name: str, mode: int, uid: int, gid: int, *, is_dir: bool = False
    ) -> Pending:
        fs = self.fs
        relpath = _join(fs, parent, name)
        fs.check_can_create()
        try:
            fs.namespace.check_new(relpath)
        except NamespaceError as exc:
            raise FsError(str(exc), exc.errno) from None
        self.check_log_room(relpath)
        inode = Inode(self._next_ino, name, parent.ino, is_dir, mode & 0o7777, uid, gid)
        if is_dir:
            inode.children = {}
        else:
            inode.filemap = FileMap(omf.SimpleFmap(()), 0)
        self._next_ino += 1
        fs.namespace.attach_unlogged(inode)
        pending = self.files[inode.ino] = Pending(inode)
        self.changed(parent)
        if is_dir:
            self.later(pending)
        return pending

    def changed(self, inode: Inode) -> None:
        """A pending directory changed (created in, chmod...): its commit waits again."""
        pending = self.files.get(inode.ino)
        if pending is not None and inode.is_dir:
            self.later(pending)

    def later(self, p: Pending) -> None:
        p.due = time.monotonic() + self.delay

    # -- bytes -----------------------------------------------------------------------------
    def write(self, p: Pending, offset: int, data: bytes | memoryview) -> int:
        if p.failed:
            raise FsError(f"{p.inode.name}: {p.failed}", errno.ENOSPC)
        end = offset + len(data)
        if end > p.capacity:
            self._grow(p, end)
        size = p.inode.size
        if offset > size:
            self._zero(p, size, offset)  # a hole reads as zeros, never as old memory
        self._store(p, offset, memoryview(data))
        if end > size:
            self._set_size(p, end)
        return len(data)

    def resize(self, p: Pending, size: int) -> None:
        """truncate/ftruncate of a pending file: shorter, or longer reading as zeros."""
        if p.failed:
            raise FsError(f"{p.inode.name}: {p.failed}", errno.ENOSPC)
        old = p.inode.size
        if size > old:
            if size > p.capacity:
                self._grow(p, size)
            self._zero(p, old, size)
        self._set_size(p, size)

    def _set_size(self, p: Pending, size: int) -> None:
        fmap = omf.SimpleFmap(tuple(p.extents))
        p.inode.size = size
        p.inode.filemap = FileMap(fmap, size)

    def _zero(self, p: Pending, start: int, end: int) -> None:
        while start < end:
            n = min(end - start, len(ZEROS))
            self._store(p, start, memoryview(ZEROS)[:n])
            start += n

    def _store(self, p: Pending, offset: int, source: memoryview) -> None:
        fs = self.fs
        pos = 0
        try:
            for dev, n in p.capacity_map.ranges(offset, len(source)):
                fs.mem.write(dev, source[pos : pos + n])
                fs.flush_data(dev, n)  # other hosts read it from memory once it is logged
                pos += n
        except MemoryFault as exc:
            fs.failures.record_fault(exc, "write fault")
            raise FsError(f"{p.inode.name}: memory error while writing", errno.EIO) from None
        except OSError as exc:
            raise FsError(str(exc), errno.EIO) from None

    def _grow(self, p: Pending, end: int) -> None:
        """Allocate so that the file can hold `end` bytes: a run as large as all before it
        (at least what is missing), after the last run if free, else a new extent."""
        bitmap = self.fs.log.bitmap
        au = bitmap.alloc_unit
        missing = _round_up(end - p.capacity, au)
        wanted = max(missing, _round_up(p.capacity, au))
        for count in dict.fromkeys((wanted, missing)):
            if self._extend_last(p, count):
                return
            if len(p.extents) < omf.MAX_SIMPLE_EXTENTS:
                try:
                    p.extents.append(bitmap.allocate(count))
                except NoSpace:
                    continue
                self._remap(p)
                return
        if len(p.extents) >= omf.MAX_SIMPLE_EXTENTS:
            reason = (
                f"no room for {end} bytes in {omf.MAX_SIMPLE_EXTENTS} extents (the format's "
                "limit per file; free space is fragmented)"
            )
            self.fail(p, reason)
            raise FsError(f"{self.path(p)}: {reason}", errno.EFBIG)
        reason = f"no space left for {end} bytes ({bitmap.free} allocation units free)"
        self.fail(p, reason)
        raise FsError(f"{self.path(p)}: {reason}", errno.ENOSPC)

    def _extend_last(self, p: Pending, length: int) -> bool:
        if not p.extents:
            return False
        bitmap = self.fs.log.bitmap
        au = bitmap.alloc_unit
        last = p.extents[-1]
        first = (last.offset + last.length) // au
        count = length // au
        if first + count > bitmap.nbits or bitmap.find_free(count, first, first + count) != first:
            return False
        bitmap.mark(omf.Extent(first * au, count * au))
        p.extents[-1] = omf.Extent(last.offset, last.length + count * au)
        self._remap(p)
        return True

    def _remap(self, p: Pending) -> None:
        capacity = sum(e.length for e in p.extents)
        p.capacity_map = FileMap(omf.SimpleFmap(tuple(p.extents)), capacity)
        self._set_size(p, p.inode.size)

    def _release_space(self, p: Pending) -> None:
        bitmap = self.fs.log.bitmap
        for extent in p.extents:
            bitmap.release(extent)
        p.extents = []
        p.capacity_map = FileMap(omf.SimpleFmap(()), 0)
        self._set_size(p, 0)

    # -- changes and ends ------------------------------------------------------------------
    def path(self, p: Pending) -> str:
        return self.fs.namespace.path_of(p.inode.ino) if not p.unlinked else p.inode.name

    def fail(self, p: Pending, reason: str) -> None:
        """It can never be committed: give its space back now, drop it at the last close."""
        log.warning("%s: %s; the file is dropped, its space given back", self.path(p), reason)
        p.failed = reason
        self._release_space(p)

    def rmdir(self, p: Pending) -> None:
        assert p.inode.children is not None
        if p.inode.children:
            raise FsError(f"{self.path(p)} is not empty", errno.ENOTEMPTY)
        self.discard(p)

    def discard(self, p: Pending) -> None:
        """Forget it: out of the namespace, its space free again."""
        if not p.unlinked:
            self.fs.namespace.detach(p.inode)
        self._release_space(p)
        self.files.pop(p.inode.ino, None)

    def unlink(self, p: Pending) -> None:
        """Removed by name: gone now; its space stays with open descriptors until the last
        one closes."""
        self.fs.namespace.detach(p.inode)
        p.unlinked = True
        if p.handles == 0:
            self.discard(p)

    def rename(self, p: Pending, parent: Inode, name: str, *, replace: bool = True) -> None:
        fs = self.fs
        relpath = _join(fs, parent, name)
        existing = fs.namespace.lookup(parent.ino, name)
        if existing is p.inode:
            return
        if existing is not None:
            other = self.files.get(existing.ino)
            if not replace:
                raise FsError(f"{relpath} exists", errno.EEXIST)
            if existing.is_dir:
                raise FsError(f"{relpath} is a directory", errno.EISDIR)
            if other is None:
                raise FsError(
                    f"{relpath} is a logged famfs file: the log cannot record replacing it",
                    errno.EPERM,
                )
            self.unlink(other)
        problem = omf.path_problem(relpath)
        if problem:
            code = errno.ENAMETOOLONG if "longer" in problem else errno.EINVAL
            raise FsError(f"{relpath}: {problem}", code)
        fs.namespace.move(p.inode, parent, name)

    def commit(self, p: Pending) -> Inode | None:
        """Append its entry (the unused tail given back first). Failed, removed and empty
        files are dropped instead (None)."""
        relpath = self.path(p)
        if p.inode.is_dir:
            return self._commit_dir(p, relpath)
        if p.failed or p.unlinked:
            self.discard(p)
            return None
        size = p.inode.size
        if size == 0:
            log.warning("%s: empty; famfs cannot record a file of size 0, dropped", relpath)
            self.discard(p)
            return None
        self._trim(p, size)
        inode = p.inode
        meta = omf.FileMeta(
            size,
            omf.FM_ALL_HOSTS_RW,
            inode.uid,
            inode.gid,
            inode.mode,
            relpath,
            omf.SimpleFmap(tuple(p.extents)),
        )
        try:
            self.fs.check_can_create()
            index = self.fs.log_entry(meta)
        except FsError as exc:
            log.warning("%s: cannot be committed (%s); dropped", relpath, exc)
            self.discard(p)
            raise
        self.files.pop(inode.ino, None)
        p.committed = True
        self.fs.namespace.now_logged(inode, index, meta)
        log.info(
            "%s: committed, %d bytes in %d extent(s), log entry %d",
            relpath,
            size,
            len(p.extents),
            index,
        )
        return inode

    def _commit_dir(self, p: Pending, relpath: str) -> Inode:
        inode = p.inode
        meta = omf.MkdirMeta(inode.uid, inode.gid, inode.mode, relpath)
        self.fs.check_can_create()
        index = self.fs.log_entry(meta)
        self.files.pop(inode.ino, None)
        p.committed = True
        self.fs.namespace.now_logged(inode, index, meta)
        log.info("%s/: committed, log entry %d", relpath, index)
        return inode

    def log_parents(self, relpath: str) -> None:
        """Log the pending directories above `relpath`, from the top (Famfs.log_entry calls
        this before logging anything)."""
        if not self.files:
            return
        ns = self.fs.namespace
        inode = ns.resolve("")
        for part in relpath.split("/")[:-1]:
            inode = ns.lookup(inode.ino, part) if inode is not None else None
            if inode is None:
                return
            pending = self.files.get(inode.ino)
            if pending is not None:
                self.commit(pending)

    def _trim(self, p: Pending, size: int) -> None:
        au = self.fs.log.bitmap.alloc_unit
        keep = _round_up(size, au)
        kept: list[omf.Extent] = []
        bitmap = self.fs.log.bitmap
        for extent in p.extents:
            if keep <= 0:
                bitmap.release(extent)
                continue
            if extent.length > keep:
                bitmap.release(omf.Extent(extent.offset + keep, extent.length - keep))
                extent = omf.Extent(extent.offset, keep)
            kept.append(extent)
            keep -= extent.length
        p.extents = kept
        self._remap(p)

    # -- when -------------------------------------------------------------------------------
    def due(self, now: float | None = None) -> list[Pending]:
        """What may be committed now, parents before children: objects whose time has
        come, whose pending directories have come too, and no directory with something
        pending beneath it that is open or waiting (`now` infinite: all but open files)."""
        now = time.monotonic() if now is None else now
        ns = self.fs.namespace
        busy: set[int] = set()
        for p in self.files.values():
            if p.due is None or p.due > now:
                ino = p.inode.parent
                while ino in self.files and ino not in busy:
                    busy.add(ino)
                    ino = ns.inodes[ino].parent
        ready: dict[int, bool] = {}

        def is_ready(p: Pending) -> bool:
            ino = p.inode.ino
            if ino not in ready:
                parent = self.files.get(p.inode.parent)
                ready[ino] = (
                    p.due is not None
                    and p.due <= now
                    and (ino not in busy or now == float("inf"))
                    and (parent is None or is_ready(parent))
                )
            return ready[ino]

        chosen = [p for p in list(self.files.values()) if is_ready(p)]
        return sorted(chosen, key=lambda p: ns.path_of(p.inode.ino).count("/"))

    def next_due(self, now: float) -> float | None:
        """The next time something falls due after `now`."""
        dues = [p.due for p in self.files.values() if p.due is not None and p.due > now]
        return min(dues) if dues else None


def _join(fs: Famfs, parent: Inode, name: str) -> str:
    head = fs.namespace.path_of(parent.ino)
    return f"{head}/{name}" if head else name


def _round_up(n: int, unit: int) -> int:
    return -(-n // unit) * unit
