"""Propagation: what this host changes, the other hosts' mounts learn; what they change, this
host's page cache follows (issue 23). The records are famfs_py.fs.changes; this module is the
daemon's part: announcing the changes that reach it, and a thread that looks at the other
hosts' announcements and brings this host's caches up to date.

What reaches the daemon and is announced: FUSE writes (write(), the writeback of shared
mappings at msync, fsync or the kernel's flusher), and the control ops that say memory
changed behind the kernel's back (`cp`, `creat -r`, `famfs-py flush`).

What a change does here (on the listener thread, never the trio thread: the kernel may need a
page lock held by a request queued behind it): this host's CPU cache lines of the range are
invalidated (reads then come from memory), then the kernel's page cache of the range, if the
kernel knows the file and the mount uses the page cache: a small range is *stored* into it
(FUSE_NOTIFY_STORE: mappings show the new bytes at once, nothing is dropped), a large one is
invalidated, that range only (FUSE_NOTIFY_INVAL_INODE with an offset and length, written to
the FUSE device as the kernel's protocol has it; pyfuse3 only drops whole files). Dirty
pages in the range are written back first by the kernel. EVERYTHING drops every file the
kernel knows.

Idle cost: one thread that looks at the heads' cache lines every `interval` seconds from C
(IDLE_SLOWER times less often after WAKE_EVERY seconds without a change), without the GIL
(famfs_py.fs.changes.Listener.wait), and wakes Python every WAKE_EVERY seconds; nothing
else runs while no file changes.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import struct
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pyfuse3

from famfs_py.fs import changes
from famfs_py.fs.changes import Change
from famfs_py.fs.identity import Role

log = logging.getLogger(__name__)

STORE_MAX = 64 << 10  # changes up to this size are stored into the page cache, not dropped
WAKE_EVERY = 0.2  # seconds: the listener thread's longest wait (to stop, to ask for a slot)
IDLE_SLOWER = 4  # an idle listener looks this many times less often
REQUEST_EVERY = 0.5  # seconds between requests for a slot while the master has not answered
PENDING_MAX = 256  # files changed before this host had a slot, announced once it has one

FUSE_NOTIFY_INVAL_INODE = 2
_INVAL_INODE = struct.Struct("<IiQQqq")  # fuse_out_header + fuse_notify_inval_inode_out


def fuse_device_fd() -> int | None:
    """This process's descriptor of /dev/fuse (the FUSE session's), if there is one."""
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{name}") == "/dev/fuse":
                return int(name)
    return None


class Propagation:
    """Announces this host's changes and applies everyone else's. `fs` is the Famfs,
    `known(ino)` whether the kernel holds the inode, `is_open(ino)` whether a descriptor or
    mapping on this host holds the file open, `page_cache` whether the mount uses the page
    cache (not -c never), `interval` seconds between looks (0: do not listen)."""

    def __init__(
        self,
        fs: Any,
        *,
        known: Callable[[int], bool],
        is_open: Callable[[int], bool],
        kernel_inodes: Callable[[], list[int]],
        page_cache: bool,
        interval: float,
    ) -> None:
        self.fs = fs
        self.known = known
        self.is_open = is_open
        self.kernel_inodes = kernel_inodes
        self.page_cache = page_cache
        self.interval = interval
        self.host = fs.this_host
        self.area = changes.Area(fs.mem, fs.coherency, fs.sb.fs_uuid)
        self.announcer: changes.Announcer | None = None
        self.pending: set[int] = set()  # files changed before a slot was given
        self.applied = 0  # changes applied (status)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fuse_fd: int | None = None
        self._session_open = False
        self._lock = threading.Lock()  # the announcer: trio thread and the listener thread
        self.listener: changes.Listener | None = None
        try:
            self._setup()
        except OSError as exc:  # a bad page in the area: the mount serves, unannounced
            self.announcer = None
            log.error("change announcements are off: the area cannot be used (%s)", exc)

    def _setup(self) -> None:
        fs = self.fs
        if fs.role == Role.MASTER:
            if not self.area.valid():
                self.area.format(self.host)
                log.info("change announcements: area formatted (slot 0 is this master)")
            self._take_slot(changes.MASTER_SLOT)
        elif fs.writable:
            self._find_slot()
        own = self.announcer.slot if self.announcer else None
        self._last_request = 0.0
        self.listener = changes.Listener(self.area, own)

    def _take_slot(self, slot: int) -> None:
        with self._lock:
            self.announcer = changes.Announcer(self.area, slot)
            if self.announcer.recovered:
                log.warning("published a change announced before this host stopped")
            for ino in sorted(self.pending):
                self.announcer.announce(Change(ino, 0, changes.WHOLE))
            if len(self.pending) >= PENDING_MAX:
                self.announcer.announce(changes.EVERYTHING)
            self.pending.clear()
        log.info("change announcements: this host writes slot %d", slot)
        if self.listener is not None:
            self.listener.own_slot = slot

    def _find_slot(self) -> bool:
        if not self.area.valid():
            return False
        slot = self.area.table().get(self.host)
        if slot is None:
            return False
        self._take_slot(slot)
        return True

    # -- announcing (trio thread) --------------------------------------------------------
    @contextlib.contextmanager
    def changing(self, ino: int, offset: int, length: int) -> Iterator[None]:
        """Around a change of file memory: the record before, the head after."""
        announcer = self.announcer
        if announcer is None or self.fs.health.removed:
            self._remember(ino)
            yield
            return
        with self._lock:
            prepared = self._guard(announcer.prepare, Change(ino, offset, length))
            try:
                yield
            finally:
                if prepared:
                    self._guard(lambda _: announcer.publish(), None)

    def announce(self, ino: int, offset: int = 0, length: int = changes.WHOLE) -> None:
        announcer = self.announcer
        if announcer is None or self.fs.health.removed:
            self._remember(ino)
            return
        with self._lock:
            self._guard(announcer.announce, Change(ino, offset, length))

    def announce_many(self, changed: list[tuple[int, int, int]]) -> None:
        """Changes already made, (ino, offset, length) each, announced together."""
        announcer = self.announcer
        if announcer is None or self.fs.health.removed:
            for ino, _offset, _length in changed:
                self._remember(ino)
            return
        with self._lock:
            self._guard(announcer.announce_many, [changes.Change(*c) for c in changed])

    def _guard(self, step: Callable[[Any], None], arg: Any) -> bool:
        """A step of announcing; a memory error in the area is logged, never the writer's."""
        try:
            step(arg)
            return True
        except OSError as exc:  # a poisoned or revoked area: the change stays unannounced
            log.error("could not announce a change to the other hosts: %s", exc)
            return False

    def _remember(self, ino: int) -> None:
        if len(self.pending) < PENDING_MAX:
            self.pending.add(ino)

    # -- listening (a thread of its own) -------------------------------------------------
    def start(self) -> None:
        self._session_open = True
        self._fuse_fd = fuse_device_fd()
        if self.interval <= 0 or self.listener is None:
            return
        self._thread = threading.Thread(target=self._run, name="famfs-changes", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._session_open = False
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        import time

        listener = self.listener
        assert listener is not None  # start() runs this thread only with one
        busy = True
        while not self._stop.is_set():
            if self.fs.health.removed:
                return
            try:
                # every `interval` while changes come, IDLE_SLOWER times slower once a whole
                # WAKE_EVERY passed without one: an idle mount wakes a quarter as often
                active = listener.wait(self.interval * (1 if busy else IDLE_SLOWER), WAKE_EVERY)
                busy = active
                if self.fs.role == Role.MASTER:
                    given = self.area.serve_request()
                    if given:
                        log.info("change announcements: host %s has slot %d", *given)
                elif self.fs.writable and self.announcer is None:
                    now = time.monotonic()
                    if not self._find_slot() and now - self._last_request > REQUEST_EVERY:
                        if self.area.valid():
                            self.area.request(self.host)
                        self._last_request = now
                for change in listener.poll():
                    self.apply(change)
            except OSError as exc:  # the area went bad (poison) or away (removal)
                if not self.fs.health.removed:
                    log.error("stopped following other hosts' changes: %s", exc)
                return
            except Exception:
                log.exception("bug while following other hosts' changes; going on")

    def apply(self, change: Change) -> None:
        """Bring this host's caches up to date with one change."""
        self.applied += 1
        if change.ino == changes.ALL_FILES:
            for ino in self.kernel_inodes():
                self._apply_range(ino, 0, changes.WHOLE)
            return
        self._apply_range(change.ino, change.offset, change.length)

    def _apply_range(self, ino: int, offset: int, length: int) -> None:
        inode = self.fs.namespace.inodes.get(ino)
        if inode is None or inode.filemap is None:
            return  # not replayed here yet: nothing of it can be cached
        size = inode.filemap.size
        if offset >= size:
            return
        length = min(length, size - offset)
        ranges = list(inode.filemap.ranges(offset, length))
        policy, view = self.fs.coherency, self.area.view
        try:
            for dev, n in ranges:
                policy.invalidate(view, dev, n)
        except OSError as exc:  # a bad page of the file: its reads fail with EIO anyway
            log.warning("could not invalidate the changed range of inode %d: %s", ino, exc)
        if not self.page_cache or not self.known(ino) or not self._session_open:
            return
        try:
            # a small change to a file open here is stored (mappings show it, no read round
            # trip); anything else is dropped: pages of a file nobody here holds are never made
            if length <= STORE_MAX and self.is_open(ino):
                data = b"".join(self.fs.mem.read(dev, n) for dev, n in ranges)
                pyfuse3.notify_store(ino, offset, data)
            else:
                self._invalidate(ino, offset, length)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENOTCONN, errno.EBADF):
                log.warning("could not update the page cache of inode %d: %s", ino, exc)

    def _invalidate(self, ino: int, offset: int, length: int) -> None:
        """Drop the kernel's pages of bytes [offset, offset+length) of the file."""
        if self._fuse_fd is None:
            pyfuse3.invalidate_inode(ino, attr_only=False)
            return
        message = _INVAL_INODE.pack(
            _INVAL_INODE.size, FUSE_NOTIFY_INVAL_INODE, 0, ino, offset, length
        )
        os.write(self._fuse_fd, message)
