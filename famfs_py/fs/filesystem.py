"""Famfs: one mounted filesystem, the operations a mount serves, with no FUSE in sight.

Opening claims the device, maps its memory, checks the superblock and log header and replays
the log; then it answers namespace lookups, reads and writes file bytes by fmap, creates on
the master (allocate, append, publish) and follows the log on clients. What failures do to
it is recorded in its `Health` (famfs_py.fs.health); what they mean for the kernel's caches
and for mapped files is the daemon's part, through `FailureHandler`.
"""

from __future__ import annotations

import errno
import gc
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from famfs_py import omf
from famfs_py.dax import cache, holder
from famfs_py.dax.device import DaxDevice
from famfs_py.dax.memory import DeviceMemory, MemoryFault
from famfs_py.errors import FsError, NamespaceError
from famfs_py.fs.alloc import BadInterleave, Interleave, NoSpace
from famfs_py.fs.health import Health
from famfs_py.fs.identity import Role
from famfs_py.fs.log import Log, LogFull, ReplayStats, read_log_header, read_superblock
from famfs_py.fs.namespace import Inode, Namespace

log = logging.getLogger(__name__)

PAGE = 4096  # memory errors are found and recorded per page


T = TypeVar("T")


class FailureHandler(Protocol):
    """What the daemon does about failures: where their handling runs, and what it means for
    the kernel's page cache and for processes that map files."""

    def run_in_loop(self, fn: Callable[[], T]) -> T:
        """Run `fn` where nothing else changes the namespace (the daemon: its event loop)."""
        ...

    def files_poisoned(self, inodes: list[Inode]) -> None:
        """Drop cached pages of these files (their memory went bad)."""
        ...

    def device_removing(self) -> None:
        """Before the memory goes: tell processes that map files, drop every cached page."""
        ...


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
        device: DaxDevice,
        *,
        this_host: uuid.UUID,
        writable_client: bool = False,
        allow_devdax: bool = False,
        holder_name: str = "famfs-py",
        flush: str = "auto",
    ) -> None:
        self.device = device
        self.this_host = this_host
        self.health = Health(device.path)  # before the claim: failures may come at once
        self.failures: FailureHandler | None = None  # the daemon's, once it serves
        self._opened = False
        try:
            self.claim = holder.claim(device, holder_name, self, allow_devdax=allow_devdax)
        except OSError as exc:
            raise FsError(exc.strerror or str(exc), exc.errno or errno.EIO) from None
        try:  # CPU cache flushing where data crosses hosts (famfs_py.dax.cache)
            self.coherency = cache.for_device(device, flush)
            self._open(writable_client)
        except BaseException as exc:
            self.claim.release()
            if isinstance(exc, cache.CacheUnsupported):
                raise FsError(str(exc), errno.EOPNOTSUPP) from None
            raise

    def _open(self, writable_client: bool) -> None:
        size = self.device.size
        if size < omf.SUPERBLOCK_STRUCT_SIZE:
            raise FsError(
                f"{self.device.path} holds {size} bytes: no famfs superblock fits", errno.EINVAL
            )
        probe = self._map(writable=False, length=omf.SUPERBLOCK_STRUCT_SIZE)
        try:
            self.coherency.invalidate(probe.view(0, omf.SUPERBLOCK_STRUCT_SIZE))
            sb = read_superblock(probe)
        except (MemoryFault, cache.CacheFault) as exc:
            raise FsError(
                f"{self.device.path}: the superblock cannot be read ({exc})", errno.EIO
            ) from None
        finally:
            probe.close()
        problems = sb.problems()
        if problems:
            raise FsError(
                f"{self.device.path} holds no valid famfs superblock ({problems[0]}); "
                "run mkfs.famfs-py to make one",
                errno.EINVAL,
            )
        if sb.dev_size > size or sb.dev_size < sb.log_offset + sb.log_len:  # as fsck checks
            raise FsError(
                f"{self.device.path}: the superblock says the device holds {sb.dev_size} bytes "
                f"but it holds {size}; run fsck",
                errno.EINVAL,
            )
        self.sb = sb
        self.role = Role.of(self.this_host, sb.system_uuid)
        self.writable = self.role == Role.MASTER or writable_client
        self.mem = self._map(writable=self.writable)
        try:
            self.coherency.invalidate(self.mem.view(sb.log_offset, omf.LOG_HEADER_SIZE))
            header = read_log_header(self.mem, sb)
        except (MemoryFault, cache.CacheFault) as exc:
            self.mem.close()
            raise FsError(
                f"{self.device.path}: the log header cannot be read ({exc})", errno.EIO
            ) from None
        problems = header.problems(sb.log_len)
        if problems:
            self.mem.close()
            raise FsError(
                f"{self.device.path}: bad log header ({problems[0]}); run fsck", errno.EINVAL
            )
        self.log = Log(self.mem, sb, header, self.coherency)
        self._device_view = self.mem.view(0, self.mem.size)  # handed to the kernel only
        self.mounted_at = time.time()
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
        self._opened = True
        for offset, length in self.health.poisoned:  # reported while opening
            self._apply_poison(offset, length, "notify_failure")
        self.check_badblocks()  # poison persists across mounts
        if self.health.removed:
            self.mem.close()
            raise FsError(f"{self.device.path} is being removed", errno.ENODEV)
        log.info(
            "%s: %s of famfs %s, %d files, %d directories, log %d/%d",
            self.device.path,
            self.role,
            sb.fs_uuid,
            self.log.namespace.files,
            self.log.namespace.dirs,
            self.log.next_index,
            self.log.slots,
        )

    def _map(self, *, writable: bool, length: int | None = None) -> DeviceMemory:
        try:
            return DeviceMemory.of_device(self.device, writable=writable, length=length)
        except OSError as exc:
            raise FsError(
                f"{self.device.path}: cannot map its memory: {exc.strerror}", exc.errno or errno.EIO
            ) from None

    # -- log -----------------------------------------------------------------------------
    def _after_replay(self, stats: ReplayStats) -> None:
        if stats.stopped_at is not None:
            self.health.go_failsafe(
                f"log entry {stats.stopped_at} is corrupt; replay stopped there"
            )

    def follow(self) -> ReplayStats:
        """Apply entries the master appended since the last look (clients)."""
        try:
            stats = self.log.replay()
        except MemoryFault as exc:
            self.health.go_failsafe(f"the log cannot be read ({exc})")
            return ReplayStats()
        self._after_replay(stats)
        return stats

    # -- namespace -----------------------------------------------------------------------
    @property
    def namespace(self) -> Namespace:
        return self.log.namespace

    def lookup_path(self, relpath: str) -> Inode:
        inode = self.namespace.resolve(relpath)
        if inode is None:
            raise FsError(f"{relpath}: no such file or directory", errno.ENOENT)
        return inode

    def _check_can_create(self) -> None:
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
        try:
            index = self.log.append(payload)
        except LogFull as exc:
            raise FsError(f"{exc}; no more files can be created", errno.ENOSPC) from None
        except MemoryFault as exc:
            self.health.go_failsafe(f"the log cannot be written ({exc})")
            raise FsError(f"the log cannot be written: {exc}", errno.EIO) from None
        self.log.next_index = index + 1
        return self.namespace.add(index, payload)

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
            self._check_can_create()
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
        self._check_can_create()
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
        self._check_can_create()
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
        if self.health.removed:
            raise FsError("the device was removed", errno.EIO)
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
        if health.poisoned or health.removed:
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
            self._record_fault(exc, "read fault")
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
                self._flush(dev, n)  # other hosts read it from memory, not from our cache
                pos += n
        except MemoryFault as exc:
            self._record_fault(exc, "write fault")
            raise FsError(f"{inode.name}: memory error while writing", errno.EIO) from None
        except OSError as exc:
            raise FsError(str(exc), errno.EIO) from None
        return length

    def _flush(self, dev: int, length: int) -> None:
        try:
            self.coherency.flush(self._device_view, dev, length)
        except cache.CacheFault as exc:
            raise MemoryFault(
                getattr(exc, "address", self.mem.base) - self.mem.base, length
            ) from exc

    # -- memory failures ---------------------------------------------------------------
    def _record_fault(self, exc: MemoryFault, source: str) -> None:
        """A kernel copy faulted at exc.offset: poison that page."""
        self.poison_range(exc.offset - exc.offset % PAGE, PAGE, source)

    def probe(self, inode: Inode, offset: int, length: int) -> int:
        """Find the bad pages in file bytes [offset, offset+length) by kernel copies, page
        by page, and poison them (a FUSE reply that faulted says only that something in
        its range did). Returns how many were found."""
        assert inode.filemap is not None
        found = 0
        page = bytearray(PAGE)
        for dev, n in inode.filemap.ranges(offset, length):
            start = dev - dev % PAGE
            for addr in range(start, dev + n, PAGE):
                try:
                    self.mem.readinto(addr, memoryview(page)[: min(PAGE, self.mem.size - addr)])
                except MemoryFault as exc:
                    self._record_fault(exc, "fault in a FUSE reply")
                    found += 1
                except OSError:
                    return found  # the mapping is gone: removal handles the rest
        return found

    def vanished(self) -> str | None:
        """Why the device is gone without notice (node, sysfs entry or memory), else None."""
        if not self.device.exists():
            return "its sysfs entry disappeared"
        if self.device.driver is None:
            return "its driver was unbound"
        if not self.device.node.exists():
            return f"its node {self.device.node} disappeared"
        if self.device.emulated and self.device.node.stat().st_size == 0:
            return "its memory was truncated away"
        return None

    def check_badblocks(self) -> None:
        """Poison ranges that appeared in the device's badblocks since the last look."""
        known = set(self.health.poisoned)
        for offset, length in self.device.badblocks():
            if (offset, length) not in known:
                self.poison_range(offset, length, "badblocks")

    def files_in_range(self, offset: int, length: int) -> list[Inode]:
        end = offset + length
        hit = []
        for inode in self.namespace.logged_files():
            assert inode.meta is not None
            for ext in omf.fmap_extents(inode.meta.fmap):
                if ext.offset < end and offset < ext.offset + ext.length:
                    hit.append(inode)
                    break
        return hit

    def poison_range(self, offset: int, length: int, source: str) -> list[Inode]:
        """Record a bad device range (the files it hits fail with EIO from now on; metadata
        damage makes the mount failsafe). Returns the files hit, if it was new."""
        if not self.health.poison(offset, length) or not self._opened:
            return []  # known already, or applied once opening has read the superblock
        return self._apply_poison(offset, length, source)

    def _apply_poison(self, offset: int, length: int, source: str) -> list[Inode]:
        if offset < self.sb.log_offset + self.sb.log_len:
            self.health.go_failsafe(f"memory error in the superblock or log at {offset:#x}")
        hit = self.files_in_range(offset, length)
        names = ", ".join(self.namespace.path_of(i.ino) for i in hit) or "no file"
        log.error(
            "%s: memory error at %#x+%#x (%s) hits %s",
            self.device.path,
            offset,
            length,
            source,
            names,
        )
        if hit and self.failures is not None:
            self.failures.files_poisoned(hit)
        return hit

    def notify_failure(self, offset: int, length: int, flags: int) -> int:
        """The holder callback (holder_operations.notify_failure). It comes on the holder's
        listener thread; the handling runs where the daemon says (its event loop)."""
        failures = self.failures
        if failures is None:
            return self.handle_failure(offset, length, flags)
        return failures.run_in_loop(lambda: self.handle_failure(offset, length, flags))

    def handle_failure(self, offset: int, length: int, flags: int) -> int:
        if flags & holder.MF_MEM_PRE_REMOVE:
            self.remove_device()
        else:
            self.poison_range(offset, length, f"notify_failure flags {flags:#x}")
        return 0

    def remove_device(self) -> None:
        """The device is going away: data access fails from now on, processes that map files
        are told, the memory is unmapped and the claim released; the namespace stays until
        unmounted."""
        if not self.health.mark_removed():
            return
        log.error("%s: device is being removed; data access stops now", self.device.path)
        if self._opened:
            if self.failures is not None:
                self.failures.device_removing()
            self.mem.revoke()
        self.claim.release()
        log.error("%s: unmapped and released; the mount stays until unmounted", self.device.path)

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

    def status(self) -> dict[str, object]:
        space = self.space()
        info = holder.holder_info(self.device) if not self.health.removed else None
        poisoned = []
        for offset, length in self.health.poisoned:
            files = [self.namespace.path_of(i.ino) for i in self.files_in_range(offset, length)]
            poisoned.append({"offset": offset, "length": length, "files": files})
        return {
            "role": self.role,
            "device": self.device.path,
            "device_mode": self.device.mode if self.device.exists() else "removed",
            "device_align": self.mem.align,
            "device_size": self.device.size if self.device.exists() else self.sb.dev_size,
            "numa_node": self.device.as_daxctl().get("numa_node") if self.device.exists() else None,
            "emulated": self.device.emulated,
            "cache_flush": self.coherency.describe(),
            "holder_pid": info.get("pid") if info else None,
            "fs_uuid": str(self.sb.fs_uuid),
            "master_system_uuid": str(self.sb.system_uuid),
            "this_system_uuid": str(self.this_host),
            "files": self.namespace.files,
            "directories": self.namespace.dirs,
            "log": {"used": space.log_used, "slots": space.log_slots},
            "capacity": {"size": space.size, "allocated": space.allocated, "free": space.free},
            "writable_data": self.writable,
            **self.health.as_json(),
            "poisoned": poisoned,
        }

    def close(self) -> None:
        self.claim.release()
        self.mem.close()

    def __enter__(self) -> Famfs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
