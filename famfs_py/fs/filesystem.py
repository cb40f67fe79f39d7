"""Famfs: one mounted filesystem, the operations a mount serves, with no FUSE in sight.

`Famfs.open` claims the device, maps its memory, checks the superblock and log header
(famfs_py.fs.opening) and replays the log; then it answers namespace lookups, reads and
writes file bytes by fmap, creates on the master (allocate, append, publish) and follows the
log on clients. Memory failures are handled by its `Failures` (famfs_py.fs.failures) and
recorded in its `Health` (famfs_py.fs.health).
"""

from __future__ import annotations

import contextlib
import errno
import gc
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from famfs_py import omf
from famfs_py.dax import cache, holder
from famfs_py.dax.device import DaxDevice
from famfs_py.dax.flush_mode import FlushMode
from famfs_py.dax.memory import MemoryFault
from famfs_py.errors import FsError, NamespaceError
from famfs_py.fs.alloc import BadInterleave, Interleave, NoSpace
from famfs_py.fs.failures import Failures, files_in_range
from famfs_py.fs.health import Health
from famfs_py.fs.identity import Role
from famfs_py.fs.log import LogFull, ReplayStats
from famfs_py.fs.namespace import Inode, Namespace
from famfs_py.fs.opening import Opened, open_filesystem
from famfs_py.fs.status import Capacity, Flushing, FsStatus, LogUse, PoisonedRange

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Space:
    """What the filesystem holds and has left: allocation units and log slots."""

    size: int  # bytes the superblock says the device holds
    alloc_unit: int
    units: int
    free_units: int
    log_slots: int
    log_used: int

    @property
    def allocated(self) -> int:
        return (self.units - self.free_units) * self.alloc_unit

    @property
    def free(self) -> int:
        return self.free_units * self.alloc_unit


class Famfs:
    """A famfs filesystem on one claimed device."""

    def __init__(
        self,
        *,
        device: DaxDevice,
        this_host: uuid.UUID,
        claim: holder.Claim,
        failures: Failures,
        coherency: cache.Policy,
        opened: Opened,
    ) -> None:
        """What `Famfs.open` made: use that (the claim, the checked superblock and log)."""
        self.device = device
        self.this_host = this_host
        self.claim = claim
        self.failures = failures
        self.health = failures.health
        self.coherency = coherency  # CPU cache flushing where data crosses hosts
        self.sb = opened.sb
        self.role = opened.role
        self.writable = opened.writable
        self.mem = opened.mem
        self.log = opened.log
        self.log.on_foreign = self._foreign  # another writer (every host looks: follow)
        self._device_view = self.mem.view(0, self.mem.size)  # handed to the kernel only
        self.mounted_at = time.time()
        self.log_parents: Callable[[str], None] | None = None  # fs.pending's, on the master

    @classmethod
    def open(
        cls,
        device: DaxDevice,
        *,
        this_host: uuid.UUID,
        writable_client: bool = False,
        allow_devdax: bool = False,
        holder_name: str = "famfs-py",
        flush: str = FlushMode.AUTO,
        on_claimed: Callable[[], object] | None = None,
    ) -> Famfs:
        """Claim the device (registering the failure handling), map it, check the
        superblock and log header, replay the log. `on_claimed` runs once the device is
        claimed, before anything is read (a failure may arrive right then)."""
        failures = Failures(device, Health(device.path))  # before the claim: failures may come
        try:
            claim = holder.claim(device, holder_name, failures, allow_devdax=allow_devdax)
        except OSError as exc:
            raise FsError(exc.strerror or str(exc), exc.errno or errno.EIO) from None
        failures.claim = claim
        try:
            if on_claimed is not None:
                on_claimed()
            coherency = cache.for_device(device, flush)
            opened = open_filesystem(device, this_host, coherency, writable_client=writable_client)
            fs = cls(
                device=device,
                this_host=this_host,
                claim=claim,
                failures=failures,
                coherency=coherency,
                opened=opened,
            )
            fs._first_replay()
            failures.opened(fs)
            if fs.health.removed:
                fs.mem.close()
                raise FsError(f"{device.path} is being removed", errno.ENODEV)
        except BaseException as exc:
            claim.release()
            if isinstance(exc, cache.CacheUnsupported):
                raise FsError(str(exc), errno.EOPNOTSUPP) from None
            raise
        log.info(
            "%s: %s of famfs %s, %d files, %d directories, log %d/%d",
            device.path,
            fs.role,
            fs.sb.fs_uuid,
            fs.namespace.files,
            fs.namespace.dirs,
            fs.log.next_index,
            fs.log.slots,
        )
        return fs

    def _first_replay(self) -> None:
        # A big log makes hundreds of thousands of long-lived objects; the cyclic GC would
        # walk them again and again while they are made, and at every full collection after.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            stats = self.log.replay()
        finally:
            if gc_was_enabled:
                gc.enable()
        gc.freeze()
        self._after_replay(stats)

    # -- log -----------------------------------------------------------------------------
    def _after_replay(self, stats: ReplayStats) -> None:
        if stats.stopped_at is not None:
            self.health.go_failsafe(
                f"log entry {stats.stopped_at} is corrupt; replay stopped there"
            )

    def follow(self) -> ReplayStats:
        """Notice another writer (every host), then apply the master's new entries (clients)."""
        try:
            stats = self.log.follow(master=self.role == Role.MASTER)
        except MemoryFault as exc:
            self.health.go_failsafe(f"the log cannot be read ({exc})")
            return ReplayStats()
        self._after_replay(stats)
        return stats

    def _foreign(self, reason: str, remade: bool) -> None:
        """Another writer changed the filesystem under this host (Log.foreign_change)."""
        handler = self.failures.handler
        if self.health.foreign(reason, remade=remade) and handler is not None:
            handler.device_removing()  # mapped files let go, cached pages dropped

    # -- namespace -----------------------------------------------------------------------
    @property
    def namespace(self) -> Namespace:
        return self.log.namespace

    def lookup_path(self, relpath: str) -> Inode:
        inode = self.namespace.resolve(relpath)
        if inode is None:
            raise FsError(f"{relpath}: no such file or directory", errno.ENOENT)
        return inode

    def check_can_create(self) -> None:
        if self.role != Role.MASTER:
            raise FsError(
                "the filesystem is read-only here because this host is a client "
                f"(the master is system {self.sb.system_uuid}); run this on the master",
                errno.EROFS,
            )
        if self.health.removed:
            raise FsError("the device was removed; unmount it", errno.EIO)
        if self.health.failsafe:
            raise FsError(
                f"the filesystem is failsafe ({self.health.failsafe}); run fsck", errno.EROFS
            )

    def _append(self, payload: omf.FileMeta | omf.MkdirMeta) -> Inode:
        return self.namespace.add(self.log_entry(payload), payload)

    def log_entry(self, payload: omf.FileMeta | omf.MkdirMeta) -> int:
        """Append one entry to the log (master), its unlogged parents first; its index."""
        if self.log_parents is not None:  # directories made through the mount (fs.pending)
            self.log_parents(payload.relpath)
        try:
            index = self.log.append(payload)
        except LogFull as exc:
            raise FsError(f"{exc}; no more files can be created", errno.ENOSPC) from None
        except MemoryFault as exc:
            self.health.go_failsafe(f"the log cannot be written ({exc})")
            raise FsError(f"the log cannot be written: {exc}", errno.EIO) from None
        self.log.next_index = index + 1
        return index

    @contextlib.contextmanager
    def one_log_commit(self) -> Iterator[None]:
        """Files and directories created inside are logged with one commit (Log.one_commit):
        a batch of creations (cp of a directory) costs one look for another writer and one
        commit, and a crash leaves all of the batch or none of it."""
        try:
            with self.log.one_commit():
                yield
        except MemoryFault as exc:
            self.health.go_failsafe(f"the log cannot be written ({exc})")
            raise FsError(f"the log cannot be written: {exc}", errno.EIO) from None

    def mkdir(
        self, relpath: str, mode: int, uid: int, gid: int, *, parents: bool = False
    ) -> list[str]:
        """Create directory `relpath` (its parent must exist). With `parents`, create the
        missing parents too, and an existing directory is no error. Returns the paths
        created."""
        if not relpath and not parents:
            raise FsError("the mount's root already exists", errno.EEXIST)
        parts = relpath.split("/") if relpath else []
        targets = ["/".join(parts[: i + 1]) for i in range(len(parts))] if parents else [relpath]
        created = []
        for target in targets:
            existing = self.namespace.resolve(target)
            if existing is not None and parents:
                if not existing.is_dir:
                    raise FsError(f"{target} exists and is not a directory", errno.ENOTDIR)
                continue
            self.check_can_create()
            try:
                self.namespace.check_new(target)
            except NamespaceError as exc:
                raise FsError(str(exc), exc.errno) from None
            self._append(omf.MkdirMeta(uid, gid, mode & 0o7777, target))
            created.append(target)
        return created

    def create_file(
        self,
        relpath: str,
        size: int,
        mode: int,
        uid: int,
        gid: int,
        interleave: Interleave | None = None,
    ) -> tuple[Inode, bool]:
        """Allocate and log a file; an existing file of the same size is returned as is.
        Returns (inode, created)."""
        existing = self.namespace.resolve(relpath)
        if existing is not None:
            if existing.is_dir:
                raise FsError(f"{relpath} is a directory", errno.EISDIR)
            if existing.size != size:
                raise FsError(
                    f"{relpath} exists with size {existing.size}, not {size}", errno.EEXIST
                )
            return existing, False
        self.check_can_create()
        if size <= 0:
            raise FsError(f"{relpath}: a famfs file cannot be empty", errno.EINVAL)
        try:
            self.namespace.check_new(relpath)
        except NamespaceError as exc:
            raise FsError(str(exc), exc.errno) from None
        bitmap = self.log.bitmap
        try:
            if interleave is None:
                fmap: omf.Fmap = omf.SimpleFmap((bitmap.allocate(size),))
            else:
                fmap = bitmap.allocate_interleaved(size, interleave)
        except NoSpace as exc:
            raise FsError(f"{relpath}: no space for {size} bytes ({exc})", errno.ENOSPC) from None
        except BadInterleave as exc:
            raise FsError(f"{relpath}: {exc}", errno.EINVAL) from None
        meta = omf.FileMeta(size, omf.FM_ALL_HOSTS_RW, uid, gid, mode & 0o7777, relpath, fmap)
        try:
            return self._append(meta), True
        except BaseException:
            for extent in omf.fmap_extents(fmap):
                bitmap.release(extent)
            raise

    def clone(self, source: Inode, relpath: str) -> Inode:
        """Log a second file over the same extents (a deliberate cross-link, for testing
        fsck's collision detection)."""
        self.check_can_create()
        assert source.meta is not None
        try:
            self.namespace.check_new(relpath)
        except NamespaceError as exc:
            raise FsError(str(exc), exc.errno) from None
        meta = omf.FileMeta(
            source.size,
            source.meta.flags,
            source.uid,
            source.gid,
            source.mode,
            relpath,
            source.meta.fmap,
        )
        inode = self._append(meta)
        for extent in omf.fmap_extents(meta.fmap):
            self.log.bitmap.mark(extent)  # counted as collisions, as fsck will
        return inode

    # -- data ----------------------------------------------------------------------------
    def _check_data(self, inode: Inode, offset: int, length: int) -> None:
        if self.health.removed or self.health.superseded:
            raise FsError(self.health.superseded or "the device was removed", errno.EIO)
        if inode.filemap is not None and self.health.hits(inode.filemap.ranges(offset, length)):
            raise FsError(f"{inode.name}: memory error in its data", errno.EIO)

    def check_data_available(self, inode: Inode) -> None:
        """EIO if any of the file's data is poisoned or the device is gone."""
        self._check_data(inode, 0, inode.size)

    def read(self, inode: Inode, offset: int, length: int) -> memoryview | bytearray | bytes:
        """File bytes [offset, offset+length): a view of device memory when they are
        contiguous (the kernel copies it out), else a kernel-made copy."""
        filemap = inode.filemap
        assert filemap is not None
        size = filemap.size
        if offset >= size or length <= 0:
            return b""
        if offset + length > size:
            length = size - offset
        health = self.health
        if health.poisoned or health.removed or health.superseded:
            self._check_data(inode, offset, length)
        start = filemap.contiguous_start
        if start is not None:  # the hot path: one slice of the device view, nothing else
            start += offset
            return self._device_view[start : start + length]
        ranges = list(filemap.ranges(offset, length))
        try:
            if len(ranges) == 1:
                return self.mem.view(ranges[0][0], length)
            buf = bytearray(length)
            view = memoryview(buf)
            pos = 0
            for dev, n in ranges:
                self.mem.readinto(dev, view[pos : pos + n])
                pos += n
            return buf
        except MemoryFault as exc:
            self.failures.record_fault(exc, "read fault")
            raise FsError(f"{inode.name}: memory error while reading", errno.EIO) from None
        except OSError as exc:  # revoked mapping
            raise FsError(str(exc), errno.EIO) from None

    def check_writable(self, inode: Inode) -> None:
        if inode.read_only or inode.meta is None:
            raise FsError(f"{inode.name} is read-only", errno.EPERM)
        if not self.writable:
            raise FsError(
                "file data is read-only on this client (mount with --rw to write)", errno.EROFS
            )
        if inode.meta.flags & omf.FM_ALL_HOSTS_RO and self.role != Role.MASTER:
            raise FsError(f"{inode.name} is read-only for clients", errno.EROFS)

    def write(self, inode: Inode, offset: int, data: bytes | memoryview) -> int:
        """Write inside the file (never past its size); returns the bytes written."""
        self.check_writable(inode)
        filemap = inode.filemap
        assert filemap is not None
        if offset >= filemap.size:
            raise FsError(f"{inode.name}: famfs files cannot grow", errno.EFBIG)
        length = min(len(data), filemap.size - offset)
        self._check_data(inode, offset, length)
        source = memoryview(data)
        pos = 0
        try:
            for dev, n in filemap.ranges(offset, length):
                self.mem.write(dev, source[pos : pos + n])
                self.flush_data(dev, n)  # other hosts read it from memory, not from our cache
                pos += n
        except MemoryFault as exc:
            self.failures.record_fault(exc, "write fault")
            raise FsError(f"{inode.name}: memory error while writing", errno.EIO) from None
        except OSError as exc:
            raise FsError(str(exc), errno.EIO) from None
        return length

    def flush_data(self, dev: int, length: int) -> None:
        try:
            self.coherency.flush(self._device_view, dev, length)
        except cache.CacheFault as exc:
            raise MemoryFault(
                getattr(exc, "address", self.mem.base) - self.mem.base, length
            ) from exc

    # -- reporting -----------------------------------------------------------------------
    def space(self) -> Space:
        bitmap = self.log.bitmap
        return Space(
            self.sb.dev_size,
            bitmap.alloc_unit,
            bitmap.nbits,
            bitmap.free,
            self.log.slots,
            self.log.next_index,
        )

    def status(self) -> FsStatus:
        space = self.space()
        info = holder.holder_info(self.device) if not self.health.removed else None
        poisoned = [
            PoisonedRange(
                offset=offset,
                length=length,
                files=[self.namespace.path_of(i.ino) for i in files_in_range(self, offset, length)],
            )
            for offset, length in self.health.merged()
        ]
        present = self.device.exists()
        numa_node = self.device.as_daxctl().get("numa_node") if present else None
        holder_pid = info.get("pid") if info else None
        return FsStatus(
            role=self.role,
            device=self.device.path,
            device_mode=self.device.mode if present else "removed",
            device_align=self.mem.align,
            device_size=self.device.size if present else self.sb.dev_size,
            numa_node=numa_node if isinstance(numa_node, int) else None,
            emulated=self.device.emulated,
            cache_flush=Flushing.of(self.coherency.describe()),
            holder_pid=holder_pid if isinstance(holder_pid, int) else None,
            fs_uuid=str(self.sb.fs_uuid),
            master_system_uuid=str(self.sb.system_uuid),
            this_system_uuid=str(self.this_host),
            files=self.namespace.files,
            directories=self.namespace.dirs,
            log=LogUse(used=space.log_used, slots=space.log_slots),
            capacity=Capacity(size=space.size, allocated=space.allocated, free=space.free),
            writable_data=self.writable,
            health=self.health.state.value,
            failsafe=self.health.failsafe,
            removed=self.health.removed,
            superseded=self.health.superseded,
            poisoned=poisoned,
        )

    def close(self) -> None:
        self.claim.release()
        self.mem.close()

    def __enter__(self) -> Famfs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
