"""The metadata log in device memory: read the superblock and header, replay entries into a
namespace and bitmap, and (master only) append entries crash-safely.

Replay applies entries in order. A CRC or seqnum failure is read again once (a master may be
writing it; one short wait per pass) and then stops replay there, as upstream does; every
later entry's extents are still marked in the bitmap so space is never handed out twice.
Entries whose path or extents are unusable are counted as bad and skipped.

CPU caches (memory that is not coherent between hosts; famfs_py.dax.cache): a reader
invalidates the header's counters before each look and the entries before reading them (its
cache may hold lines read before the master wrote them; a CRC failure reads again, and so
invalidates again); the master flushes each entry once written, then writes and flushes the
counters that commit it, in that order, so that no host sees the count before the entry.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from famfs_py import omf
from famfs_py.dax import cache
from famfs_py.dax.memory import DeviceMemory, MemoryFault, MemoryRevoked
from famfs_py.errors import FsError, NamespaceError
from famfs_py.fs.alloc import Bitmap
from famfs_py.fs.namespace import Inode, Namespace
from famfs_py.omf import _replay

log = logging.getLogger(__name__)

RETRY_DELAY = 0.005  # seconds before re-reading an entry that failed its CRC
GC_PAUSE_ENTRIES = 1000  # a replay of more entries runs with the cyclic GC paused


class LogFull(Exception):
    """Every log slot is used."""


@dataclass(frozen=True)
class ForeignChange:
    """Another writer changed what only this filesystem's master may write: the superblock
    (the filesystem was remade: `remade`, nothing of it may be served any more) or the log's
    counters (a foreign append, forged counters: metadata is frozen)."""

    reason: str
    remade: bool


@dataclass(frozen=True)
class BadEntry:
    index: int
    reasons: tuple[str, ...]
    corrupt: bool  # CRC/seqnum failure (replay stops) rather than an unusable entry

    def describe(self) -> str:
        return f"log entry {self.index}: {'; '.join(self.reasons)}"


@dataclass
class ReplayStats:
    files: int = 0
    dirs: int = 0
    sum_file_sizes: int = 0
    bad: list[BadEntry] = field(default_factory=list)
    new_inodes: list[Inode] = field(default_factory=list)
    stopped_at: int | None = None  # index of the corrupt entry replay stopped at


def read_superblock(mem: DeviceMemory) -> omf.Superblock:
    return omf.Superblock.unpack(mem.read(0, omf.SUPERBLOCK_STRUCT_SIZE))


def read_log_header(mem: DeviceMemory, sb: omf.Superblock) -> omf.LogHeader:
    return omf.LogHeader.unpack(mem.read(sb.log_offset, omf.LOG_HEADER_SIZE))


class LogWrites:
    """The two writes of an append, in this order: the entry, then the header's counters
    that commit it, each flushed before the next (a crash between them leaves a valid log
    without the entry). `Log.writes_class` names the class a log writes through: the seam
    the crash tests use to interrupt one of these writes by name."""

    def __init__(self, mem: DeviceMemory, flush: Callable[[int, int], None]) -> None:
        self.mem = mem
        self.flush = flush

    def entry(self, offset: int, raw: bytes) -> None:
        """Write a log entry (not yet part of the log: the counters say how many are)."""
        self.mem.write(offset, raw)
        self.flush(offset, len(raw))  # the entry reaches memory before the count does

    def commit(self, offset: int, counters: bytes) -> None:
        """Write the header's counters (next_seqnum, next_index): the entry is in the log."""
        self.mem.write(offset, counters)
        self.flush(offset, len(counters))


class Log:
    """The log of one mounted (or checked) filesystem and what replaying it built."""

    writes_class: type[LogWrites] = LogWrites
    # decodes a run of raw entries for replay: the C decoder, or (tests) the reference
    # omf.scan_entries it must agree with
    scan: Callable[[bytes, int, int, int, int], list[omf.CleanEntry | None]] = staticmethod(
        _replay.scan
    )

    def __init__(
        self,
        mem: DeviceMemory,
        sb: omf.Superblock,
        header: omf.LogHeader,
        coherency: cache.Policy = cache.OFF,
    ) -> None:
        self.mem = mem
        self.coherency = coherency  # whether to flush what we write, invalidate what we read
        self.sb = sb
        self.header = header
        self.namespace = Namespace.new(sb)
        self.bitmap = Bitmap(sb.dev_size, sb.alloc_unit, sb.log_offset + sb.log_len)
        self.next_index = 0  # next entry replay will look at
        self.stopped_at: int | None = None
        self.bad: dict[int, BadEntry] = {}
        self._marked_beyond = 0  # entries past a stop whose extents are already marked
        self._uncommitted: int | None = None  # in one_commit: the count its commit writes
        self.writes = self.writes_class(mem, self._flush)
        self.foreign: ForeignChange | None = None  # what another writer did, once seen
        # told (reason, remade) once, when another writer's change is first seen
        self.on_foreign: Callable[[str, bool], None] = lambda reason, remade: None

    # -- another writer ----------------------------------------------------------------
    def foreign_change(self, *, master: bool) -> ForeignChange | None:
        """What another writer did, if anything: remade the filesystem (the superblock
        changed: its fs UUID, its CRC), or changed the log's counters (on the master: any
        count but the one it wrote; on a client: a count that went back). The first change
        seen is kept, and told to `on_foreign`."""
        if self.foreign is None:
            self.foreign = self._look_for_foreign(master)
            if self.foreign is not None:
                self.on_foreign(self.foreign.reason, self.foreign.remade)
        return self.foreign

    def _look_for_foreign(self, master: bool) -> ForeignChange | None:
        self._invalidate(0, omf.SUPERBLOCK_STRUCT_SIZE)
        raw = self.mem.read(0, omf.SUPERBLOCK_STRUCT_SIZE)
        try:
            now = omf.Superblock.unpack(raw)
            problems = now.problems()
        except omf.OmfError as exc:
            problems = [str(exc)]
        if problems:
            return ForeignChange(
                f"the superblock was overwritten ({problems[0]}): the filesystem "
                f"{self.sb.fs_uuid} is gone from the device",
                remade=True,
            )
        if now != self.sb:
            if now.fs_uuid != self.sb.fs_uuid:
                what = f"remade by host {now.system_uuid} (fs UUID {now.fs_uuid})"
            else:
                what = f"given a new superblock by another writer (CRC {now.crc:#x})"
            return ForeignChange(
                f"the filesystem {self.sb.fs_uuid} was {what}; this mount serves none of "
                "it any more: unmount it and mount again",
                remade=True,
            )
        count = self.committed()
        if count < self.next_index or (master and count != self.next_index):
            change = "appended to" if count > self.next_index else "rewound"
            return ForeignChange(
                f"another writer {change} the log: it counts {count} entries, this "
                f"{'master wrote' if master else 'host replayed'} {self.next_index}; "
                "metadata is frozen: run fsck",
                remade=False,
            )
        return None

    def follow(self, *, master: bool) -> ReplayStats:
        """Look for another writer (see foreign_change), then (clients) apply the entries
        committed since the last look. Nothing more once another writer was seen or the
        device's memory was withdrawn (removal)."""
        try:
            if self.foreign_change(master=master) is not None or master:
                return ReplayStats()
            return self.replay()
        except MemoryRevoked:
            return ReplayStats()

    # -- reading -------------------------------------------------------------------------
    def committed(self) -> int:
        """Number of committed entries according to the header now in memory."""
        at = self.sb.log_offset + omf.COUNTERS_OFFSET
        self._invalidate(at, 16)
        raw = self.mem.read(at, 16)
        next_index = int.from_bytes(raw[8:16], "little")
        return min(next_index, self.header.slots)

    def _read_entries(self, start: int, stop: int) -> bytes:
        offset = self.sb.log_offset + omf.entry_offset(start)
        length = (stop - start) * omf.LOG_ENTRY_SIZE
        self._invalidate(offset, length)
        return self.mem.read(offset, length)

    def _invalidate(self, offset: int, length: int) -> None:
        if self.coherency.enabled:
            try:
                self.coherency.invalidate(self.mem.view(offset, length))
            except cache.CacheFault as exc:  # a bad page: as a read of it would fail
                raise MemoryFault(offset, length, exc) from exc

    def _flush(self, offset: int, length: int) -> None:
        if self.coherency.enabled:
            try:
                self.coherency.flush(self.mem.view(offset, length))
            except cache.CacheFault as exc:
                raise MemoryFault(offset, length, exc) from exc

    def _read_entry(self, index: int) -> bytes:
        return self._read_entries(index, index + 1)

    def _entry_or_none(self, index: int) -> bytes | None:
        """Entry `index`, or None if its memory cannot be read."""
        try:
            return self._read_entry(index)
        except MemoryFault:
            return None

    def _slot(self, raw: bytes | None, start: int, index: int) -> bytes | None:
        """Entry `index` from a bulk read starting at `start` (None: read it alone)."""
        if raw is None:
            return self._entry_or_none(index)
        size = omf.LOG_ENTRY_SIZE
        return raw[(index - start) * size : (index - start + 1) * size]

    # -- replay --------------------------------------------------------------------------
    def replay(self, *, stop_at_corrupt: bool = True, upto: int | None = None) -> ReplayStats:
        """Apply the committed entries not applied yet."""
        stats = ReplayStats()
        end = self.committed() if upto is None else upto
        if self.stopped_at is not None and stop_at_corrupt:
            # a corrupt entry may just have been completed by the master
            chunk = self._entry_or_none(self.stopped_at)
            if chunk is None or not omf.entry_crc_ok(chunk):
                return stats
            self.stopped_at = None
        start = self.next_index
        if start >= end:
            return stats
        try:
            raw: bytes | None = self._read_entries(start, end)
        except MemoryFault:
            raw = None  # some entry's memory is bad: read them one by one
        gc_was_enabled = gc.isenabled()
        if end - start > GC_PAUSE_ENTRIES:
            gc.disable()  # many long-lived objects: the cyclic GC would walk them again and again
        try:
            self._replay_range(raw, start, end, stop_at_corrupt, stats)
        finally:
            if gc_was_enabled:
                gc.enable()
        return stats

    def _replay_range(
        self, raw: bytes | None, start: int, end: int, stop_at_corrupt: bool, stats: ReplayStats
    ) -> None:
        # the common case decoded and checked in C (famfs_py.omf._replay): a clean entry is a
        # tuple; any other (None) is decoded here by famfs_py.omf, the reference
        sb = self.sb
        reserved = sb.log_offset + sb.log_len
        clean = self.scan(raw, start, sb.dev_size, sb.alloc_unit, reserved) if raw else None
        add = self.namespace.add_checked
        mark = self.bitmap.mark_range
        dev_size = sb.dev_size
        parents: dict[str, Inode] = {}
        new_inodes = stats.new_inodes
        waited = False
        for index in range(start, end):
            item = clean[index - start] if clean is not None else None
            if item is not None:
                head, name, mode, uid, gid, size, payload, extents = item
                if extents is not None:
                    for k in range(0, len(extents), 2):
                        if extents[k] + extents[k + 1] <= dev_size:
                            mark(extents[k], extents[k + 1])
                try:
                    inode = add(index, head, name, mode, uid, gid, size, payload, parents)
                except NamespaceError as exc:
                    self._record_bad(BadEntry(index, (str(exc),), False), stats)
                else:
                    new_inodes.append(inode)
                    if payload is None:
                        stats.dirs += 1
                    else:
                        stats.files += 1
                        stats.sum_file_sizes += size
                self.next_index = index + 1
                continue
            chunk = self._slot(raw, start, index)
            crc_ok = chunk is not None and omf.entry_crc_ok(chunk)
            if chunk is not None and not crc_ok:
                if not waited:  # once per pass: a scan of a ruined log must not crawl
                    time.sleep(RETRY_DELAY)
                    waited = True
                chunk = self._entry_or_none(index)
                crc_ok = chunk is not None and omf.entry_crc_ok(chunk)
            if chunk is None:
                reasons: tuple[str, ...] = ("cannot be read (memory error)",)
            else:
                entry = omf.LogEntry.unpack(chunk)
                reasons = ()
                if not crc_ok or entry.seqnum != index:  # the CRC is computed once per entry
                    reasons = tuple(omf.entry_problems(entry, index, 0, 1))
            if reasons:
                bad = BadEntry(index, reasons, True)
                self._record_bad(bad, stats)
                if stop_at_corrupt:
                    self.stopped_at = index
                    stats.stopped_at = index
                    self._mark_beyond(raw, start, index + 1, end)
                    return
                self.next_index = index + 1
                continue
            self._apply(index, entry, stats)
            self.next_index = index + 1

    def _record_bad(self, bad: BadEntry, stats: ReplayStats) -> None:
        if bad.index not in self.bad:
            log.warning("%s", bad.describe())
        self.bad[bad.index] = bad
        stats.bad.append(bad)

    def _apply(self, index: int, entry: omf.LogEntry, stats: ReplayStats) -> None:
        payload = entry.payload
        if isinstance(payload, omf.AddDaxdevMeta):
            return  # multi-device famfs is future work upstream too
        if isinstance(payload, omf.RawPayload):
            reason = f"unknown entry type {entry.entry_type}"
            self._record_bad(BadEntry(index, (reason,), False), stats)
            return
        # the CRC and seqnum were checked by replay: the path and the fmap are what is left
        why = omf.path_problem(payload.relpath)
        problems = [f"{why}: {payload.relpath!r}"] if why else []
        if isinstance(payload, omf.FileMeta):
            reserved = self.sb.log_offset + self.sb.log_len
            problems += omf.fmap_problems(payload, self.sb.dev_size, self.sb.alloc_unit, reserved)
        if isinstance(payload, omf.FileMeta) and not isinstance(payload.fmap, omf.UnknownFmap):
            for ext in omf.fmap_extents(payload.fmap):
                if ext.offset + ext.length <= self.sb.dev_size:
                    self.bitmap.mark(ext)
        if not problems:
            try:
                inode = self.namespace.add(index, payload, path_checked=True)
            except NamespaceError as exc:
                problems = [str(exc)]
            else:
                stats.new_inodes.append(inode)
                if inode.is_dir:
                    stats.dirs += 1
                else:
                    stats.files += 1
                    stats.sum_file_sizes += inode.size
                return
        self._record_bad(BadEntry(index, tuple(problems), False), stats)

    def _mark_beyond(self, raw: bytes | None, start: int, first: int, end: int) -> None:
        """Mark the extents of CRC-valid entries after a stop, so they are never reused."""
        for index in range(max(first, self._marked_beyond), end):
            chunk = self._slot(raw, start, index)
            if chunk is None or not omf.entry_crc_ok(chunk):
                continue
            payload = omf.LogEntry.unpack(chunk).payload
            if isinstance(payload, omf.FileMeta):
                for ext in omf.fmap_extents(payload.fmap):
                    if ext.offset + ext.length <= self.sb.dev_size:
                        self.bitmap.mark(ext)
        self._marked_beyond = max(self._marked_beyond, end)

    # -- appending (master) ----------------------------------------------------------------
    def append(self, payload: omf.FileMeta | omf.MkdirMeta) -> int:
        """Write one entry at the next slot, then commit it by bumping the header counters
        (a crash in between leaves a valid log without the entry); inside `one_commit`, the
        commit is the batch's. Returns its index."""
        if self._uncommitted is None:
            self._refuse_after_another_writer()
        index = self.next_index
        if index >= self.header.slots:
            raise LogFull(f"the log is full ({self.header.slots} entries)")
        raw = omf.LogEntry.new(index, payload).pack()
        self.writes.entry(self.sb.log_offset + omf.entry_offset(index), raw)
        if self._uncommitted is None:
            self._commit(index + 1)
        else:
            self._uncommitted = index + 1
        return index

    @contextlib.contextmanager
    def one_commit(self) -> Iterator[None]:
        """Appends made inside share one look for another writer (before the first) and
        one commit (after the last): a crash before that commit leaves none of them in the
        log, and after it all of them. Its MemoryFault is raised as an append's would be."""
        if self._uncommitted is not None:
            raise RuntimeError("one_commit does not nest")
        self._refuse_after_another_writer()
        start = self._uncommitted = self.next_index
        try:
            yield
        finally:
            count, self._uncommitted = self._uncommitted, None
            if count > start:
                self._commit(count)

    def _refuse_after_another_writer(self) -> None:
        change = self.foreign_change(master=True)
        if change is not None:
            raise FsError(change.reason, errno.EROFS)

    def _commit(self, count: int) -> None:
        """The header's counters say `count` entries: those before it are in the log."""
        counters = omf.pack_counters(count, count)
        self.writes.commit(self.sb.log_offset + omf.COUNTERS_OFFSET, counters)

    @property
    def slots(self) -> int:
        return self.header.slots
