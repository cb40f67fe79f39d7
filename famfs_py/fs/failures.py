"""What memory failures do to a mounted filesystem; `Health` (famfs_py.fs.health) records them.

`Failures` is the holder's ops for the claim (its `notify_failure` is the callback the holder
layer delivers to) and the one place a failure is handled: poisoned ranges fail the files
they hit (EIO) and, in the superblock or log, make the mount failsafe; a removal stops data
access, unmaps the memory and releases the claim. Faults met by kernel copies, new
badblocks and a device that vanished come here too. What a failure means for the kernel's
caches and for processes that map files is the daemon's part (`FailureHandler`), and where
the handling runs (its event loop) is the daemon's say too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, TypeVar

from famfs_py import omf
from famfs_py.dax import failure_delivery
from famfs_py.dax.device import DaxDevice
from famfs_py.dax.holder import Claim
from famfs_py.dax.memory import MemoryFault
from famfs_py.fs.health import Health
from famfs_py.fs.namespace import Inode

if TYPE_CHECKING:
    from famfs_py.fs.filesystem import Famfs

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


class Failures:
    """The failure handling of one filesystem, from the claim on (a failure can come before
    the filesystem is open: it is recorded, and applied once it is)."""

    def __init__(self, device: DaxDevice, health: Health) -> None:
        self.device = device
        self.health = health
        self.claim: Claim | None = None  # set once claimed
        self.fs: Famfs | None = None  # set once open
        self.handler: FailureHandler | None = None  # the daemon's, once it serves

    # -- the holder callback -----------------------------------------------------------------
    def notify_failure(self, offset: int, length: int, flags: int) -> int:
        """The holder callback (holder_operations.notify_failure). It comes on the holder's
        listener thread; the handling runs where the daemon says (its event loop)."""
        handler = self.handler
        if handler is None:
            return self.handle(offset, length, flags)
        return handler.run_in_loop(lambda: self.handle(offset, length, flags))

    def handle(self, offset: int, length: int, flags: int) -> int:
        if flags & failure_delivery.MF_MEM_PRE_REMOVE:
            self.remove_device()
        else:
            self.poison_range(offset, length, f"notify_failure flags {flags:#x}")
        return 0

    # -- once open ---------------------------------------------------------------------------
    def opened(self, fs: Famfs) -> None:
        """The filesystem is open: apply what was reported while opening, and the poison
        the device's badblocks still show (poison persists across mounts)."""
        self.fs = fs
        for offset, length in self.health.poisoned:
            self._apply_poison(fs, offset, length, "notify_failure")
        self.check_badblocks()

    def record_fault(self, exc: MemoryFault, source: str) -> None:
        """A kernel copy faulted at exc.offset: poison that page."""
        self.poison_range(exc.offset - exc.offset % PAGE, PAGE, source)

    def probe(self, inode: Inode, offset: int, length: int) -> int:
        """Find the bad pages in file bytes [offset, offset+length) by kernel copies, page
        by page, and poison them (a FUSE reply that faulted says only that something in
        its range did). Returns how many were found."""
        assert inode.filemap is not None and self.fs is not None
        mem = self.fs.mem
        found = 0
        page = bytearray(PAGE)
        for dev, n in inode.filemap.ranges(offset, length):
            start = dev - dev % PAGE
            for addr in range(start, dev + n, PAGE):
                try:
                    mem.readinto(addr, memoryview(page)[: min(PAGE, mem.size - addr)])
                except MemoryFault as exc:
                    self.record_fault(exc, "fault in a FUSE reply")
                    found += 1
                except OSError:
                    return found  # the mapping is gone: removal handles the rest
        return found

    def vanished(self) -> str | None:
        """Why the device is gone without notice (node, sysfs entry or memory), else None."""
        device = self.device
        if not device.exists():
            return "its sysfs entry disappeared"
        if device.driver is None:
            return "its driver was unbound"
        if not device.node.exists():
            return f"its node {device.node} disappeared"
        if device.emulated and device.node.stat().st_size == 0:
            return "its memory was truncated away"
        return None

    def check_badblocks(self) -> None:
        """Poison ranges that appeared in the device's badblocks since the last look."""
        known = set(self.health.poisoned)
        for offset, length in self.device.badblocks():
            if (offset, length) not in known:
                self.poison_range(offset, length, "badblocks")

    def poison_range(self, offset: int, length: int, source: str) -> list[Inode]:
        """Record a bad device range (the files it hits fail with EIO from now on; metadata
        damage makes the mount failsafe). Returns the files hit, if it was new."""
        if not self.health.poison(offset, length) or self.fs is None:
            return []  # known already, or applied once opening has read the superblock
        return self._apply_poison(self.fs, offset, length, source)

    def _apply_poison(self, fs: Famfs, offset: int, length: int, source: str) -> list[Inode]:
        if offset < fs.sb.log_offset + fs.sb.log_len:
            self.health.go_failsafe(f"memory error in the superblock or log at {offset:#x}")
        hit = files_in_range(fs, offset, length)
        names = ", ".join(fs.namespace.path_of(i.ino) for i in hit) or "no file"
        log.error(
            "%s: memory error at %#x+%#x (%s) hits %s",
            self.device.path,
            offset,
            length,
            source,
            names,
        )
        if hit and self.handler is not None:
            self.handler.files_poisoned(hit)
        return hit

    def remove_device(self) -> None:
        """The device is going away: data access fails from now on, processes that map files
        are told, the memory is unmapped and the claim released; the namespace stays until
        unmounted."""
        if not self.health.mark_removed():
            return
        log.error("%s: device is being removed; data access stops now", self.device.path)
        if self.fs is not None:
            if self.handler is not None:
                self.handler.device_removing()
            self.fs.mem.revoke()
        if self.claim is not None:
            self.claim.release()
        log.error("%s: unmapped and released; the mount stays until unmounted", self.device.path)


def files_in_range(fs: Famfs, offset: int, length: int) -> list[Inode]:
    """The logged files whose memory overlaps device bytes [offset, offset+length)."""
    end = offset + length
    hit = []
    for inode in fs.namespace.logged_files():
        assert inode.meta is not None
        for ext in omf.fmap_extents(inode.meta.fmap):
            if ext.offset < end and offset < ext.offset + ext.length:
                hit.append(inode)
                break
    return hit
