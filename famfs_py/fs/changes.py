"""Change announcements between hosts: which byte ranges of which files a host changed, so
that every other host drops (or refreshes) what its page cache holds of them.

Where: in the superblock region past the superblock, at 1 MiB (`AREA`); upstream famfs reads
only the superblock struct (200 bytes) of that 2 MiB region and never writes past it, so the
image stays upstream's. Everything here is checked with a CRC-32 seeded with the
filesystem's UUID: what an earlier filesystem left in the region is never taken for ours.

No cross-host atomics: every structure has one writer.

    AREA + 0        header (the master): magic, version, slots, the filesystem's UUID
    AREA + 128      slot table (the master): slot i -> a host's system UUID (32 bytes each)
    AREA + 4032     request line: a host without a slot writes its system UUID here
    AREA + 4096     heads: one cache line per slot, the count of changes published (its host)
    AREA + 8192     rings: per slot, RING records of one cache line each (its host)

How a host gets a slot only it writes: the master owns slot 0 and the table. A host that
may write (a `--rw` client) writes its UUID into the request line, which any host may
clobber: it is a doorbell, not a record. The master, which looks at that one line, gives the
UUID the next free slot in the table; the asking host finds itself there (or asks again a
moment later: another host's request may have overwritten its own). A slot is the host's
for good (the same UUID finds the same slot at every mount).

Announcing (`Announcer`): the record goes to the ring at the next sequence number and is
flushed *before* the data is written; the data is written and flushed; then the head is
advanced and flushed. Changes already made (files `cp` wrote) are announced in batches:
their records at consecutive sequence numbers, then one head. A host that dies after the
records but before the head finds them at its next mount and publishes them then. Readers
never wait for anyone.

Listening (`Listener.wait`, then `poll`): invalidate the request line and the heads (one
cache line per slot, contiguous) and compare them with the last look, in C without the GIL
(famfs_py.dax.cache.Policy.watch): nothing changed costs that and nothing more. A head that
moved is followed through its records; a record that is torn or overwritten (the reader fell
more than RING behind), or a head that does not check, is `EVERYTHING`: drop all.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from dataclasses import dataclass
from typing import Any

AREA = 1 << 20
AREA_SIZE = 1 << 20
LINE = 64
SLOTS = 32
RING = 256
BATCH = RING // 4  # records one head publishes at most (Announcer.announce_many)
HEADS = AREA + 4096
RINGS = AREA + 8192
TABLE = AREA + 128
REQUEST = HEADS - LINE  # next to the heads: one range to watch
WATCHED = SLOTS * LINE + LINE  # the request line and the heads
TABLE_ENTRY = 32
MASTER_SLOT = 0
WHOLE = (1 << 64) - 1  # a record's length: to the end of the file
ALL_FILES = 0  # a record's inode: every file (what was changed is not known)

_HEADER = struct.Struct("<8sII16sI")
_REQUEST = struct.Struct("<8s16sI")
_ENTRY = struct.Struct("<16sI")
_HEAD = struct.Struct("<QI")
_RECORD = struct.Struct("<QQQQI")
HEADER_MAGIC = b"FPYCHG01"
REQUEST_MAGIC = b"FPYCREQ1"
VERSION = 1

assert RINGS + SLOTS * RING * LINE <= AREA + AREA_SIZE
assert TABLE + SLOTS * TABLE_ENTRY <= HEADS


@dataclass(frozen=True)
class Change:
    """Bytes [offset, offset+length) of the file with inode `ino` changed (length WHOLE:
    to its end; ino ALL_FILES: anything may have)."""

    ino: int
    offset: int
    length: int


EVERYTHING = Change(ALL_FILES, 0, WHOLE)


def head_offset(slot: int) -> int:
    return HEADS + slot * LINE


def record_offset(slot: int, seq: int) -> int:
    return RINGS + (slot * RING + seq % RING) * LINE


class Area:
    """The announcement area of one mapped device: `mem` its DeviceMemory (writable on
    hosts that write; loads and stores are kernel copies, so a bad page is an OSError, never
    a signal), `policy` the mount's cache policy."""

    def __init__(self, mem: Any, policy: Any, fs_uuid: uuid.UUID) -> None:
        self.mem = mem
        self.view = mem.view(0, mem.size)  # for the cache instructions only
        self.policy = policy
        self.fs_uuid = fs_uuid
        self.seed = zlib.crc32(fs_uuid.bytes)

    def crc(self, data: bytes | memoryview) -> int:
        return zlib.crc32(data, self.seed)

    def load(self, offset: int, length: int) -> bytes:
        self.policy.invalidate(self.view, offset, length)
        return self.mem.read(offset, length)

    def store(self, offset: int, data: bytes) -> None:
        self.mem.write(offset, data)
        self.policy.flush(self.view, offset, len(data))

    # -- header and slot table (the master writes them) ----------------------------------
    def valid(self) -> bool:
        raw = self.load(AREA, _HEADER.size)
        magic, version, slots, fs, crc = _HEADER.unpack(raw)
        return (
            magic == HEADER_MAGIC
            and version == VERSION
            and slots == SLOTS
            and fs == self.fs_uuid.bytes
            and crc == self.crc(raw[: _HEADER.size - 4])
        )

    def format(self, master: uuid.UUID) -> None:
        """Made by the master once per filesystem: an empty table (slot 0 its own), heads at
        zero; then the header, which makes it valid."""
        self.store(TABLE, bytes(SLOTS * TABLE_ENTRY))
        self.store(HEADS, b"".join(self._head(0).ljust(LINE, b"\0") for _ in range(SLOTS)))
        self.assign(MASTER_SLOT, master)
        body = _HEADER.pack(HEADER_MAGIC, VERSION, SLOTS, self.fs_uuid.bytes, 0)[:-4]
        self.store(AREA, body + struct.pack("<I", self.crc(body)))

    def table(self) -> dict[uuid.UUID, int]:
        raw = self.load(TABLE, SLOTS * TABLE_ENTRY)
        hosts = {}
        for slot in range(SLOTS):
            host, crc = _ENTRY.unpack_from(raw, slot * TABLE_ENTRY)
            if crc == self.crc(host) and host != bytes(16):
                hosts[uuid.UUID(bytes=host)] = slot
        return hosts

    def assign(self, slot: int, host: uuid.UUID) -> None:
        self.store(TABLE + slot * TABLE_ENTRY, _ENTRY.pack(host.bytes, self.crc(host.bytes)))

    # -- the request line (any host) -----------------------------------------------------
    def request(self, host: uuid.UUID) -> None:
        body = REQUEST_MAGIC + host.bytes
        self.store(REQUEST, body + struct.pack("<I", self.crc(body)))

    def requested(self) -> uuid.UUID | None:
        raw = self.load(REQUEST, _REQUEST.size)
        magic, host, crc = _REQUEST.unpack(raw)
        if magic != REQUEST_MAGIC or crc != self.crc(raw[:-4]):
            return None
        return uuid.UUID(bytes=host)

    def serve_request(self) -> tuple[uuid.UUID, int] | None:
        """The master: give a host that asked a slot. (host, slot) if one was given."""
        host = self.requested()
        if host is None:
            return None
        table = self.table()
        if host in table:
            return None
        free = sorted(set(range(SLOTS)) - set(table.values()))
        if not free:
            return None
        self.assign(free[0], host)
        return host, free[0]

    # -- heads and records ---------------------------------------------------------------
    def _head(self, seq: int) -> bytes:
        body = struct.pack("<Q", seq)
        return body + struct.pack("<I", self.crc(body))

    def head(self, slot: int, raw: bytes | None = None) -> int | None:
        if raw is None:
            raw = self.load(head_offset(slot), _HEAD.size)
        seq, crc = _HEAD.unpack_from(raw)
        return seq if crc == self.crc(raw[:8]) else None

    def record(self, slot: int, seq: int) -> Change | None:
        raw = self.load(record_offset(slot, seq), _RECORD.size)
        got, ino, offset, length, crc = _RECORD.unpack(raw)
        if got != seq or crc != self.crc(raw[:-4]):
            return None
        return Change(ino, offset, length)


class Announcer:
    """One host's side of its slot: records and head, written by this host only."""

    def __init__(self, area: Area, slot: int) -> None:
        self.area = area
        self.slot = slot
        self.seq = area.head(slot) or 0
        self.recovered = False
        # died between the records (one, or a batch's) and the head: publish them now
        while area.record(slot, self.seq) is not None:
            self.publish()
            self.recovered = True

    def prepare(self, change: Change, ahead: int = 0) -> None:
        """Write (and flush) the record of a change about to be made (`ahead`: the record
        that many after the next, for a batch published at once)."""
        seq = self.seq + ahead
        body = struct.pack("<QQQQ", seq, change.ino, change.offset, change.length)
        self.area.store(record_offset(self.slot, seq), body + struct.pack(
            "<I", self.area.crc(body)))  # fmt: skip

    def publish(self, count: int = 1) -> None:
        """The prepared change (or `count` of them) is made: advance (and flush) the head."""
        self.seq += count
        self.area.store(head_offset(self.slot), self.area._head(self.seq))

    def announce(self, change: Change) -> None:
        self.prepare(change)
        self.publish()

    def announce_many(self, changes: list[Change]) -> None:
        """Changes already made, announced together: their records, then one head (at
        most BATCH at a time, so that a reader less than a ring behind keeps up)."""
        for start in range(0, len(changes), BATCH):
            batch = changes[start : start + BATCH]
            for ahead, change in enumerate(batch):
                self.prepare(change, ahead)
            self.publish(len(batch))


class Listener:
    """One host's view of everyone else's announcements."""

    RETRIES = 2  # looks again at a record that does not check (its line may be in flight)

    def __init__(self, area: Area, own_slot: int | None = None) -> None:
        self.area = area
        self.own_slot = own_slot
        self.watched = area.load(REQUEST, WATCHED)
        self.heads = self.watched[LINE:]
        self.seen = [area.head(s, self._line(s)) for s in range(SLOTS)]

    def wait(self, interval: float, timeout: float) -> bool:
        """Until the request line or a head differs from the last look (True) or `timeout`
        seconds passed (False), looking every `interval` seconds."""
        area = self.area
        return area.policy.watch(area.view, REQUEST, WATCHED, self.watched, interval, timeout)

    def _line(self, slot: int, heads: bytes | None = None) -> bytes:
        raw = self.heads if heads is None else heads
        return raw[slot * LINE : slot * LINE + _HEAD.size]

    def poll(self) -> list[Change]:
        """The changes other hosts published since the last look ([] if none: the cost is
        one invalidate and compare of the heads)."""
        self.watched = self.area.load(REQUEST, WATCHED)
        heads = self.watched[LINE:]
        if heads == self.heads:
            return []
        changes: list[Change] = []
        for slot in range(SLOTS):
            line = self._line(slot, heads)
            if line == self._line(slot) or slot == self.own_slot:
                continue
            changes += self._follow(slot, self.area.head(slot, line))
        self.heads = heads
        return changes

    def _follow(self, slot: int, seq: int | None) -> list[Change]:
        seen = self.seen[slot] or 0
        if seq is None:  # a head that does not check (torn, or a slot being formatted)
            return [EVERYTHING]
        self.seen[slot] = seq
        if seq < seen or seq - seen > RING:
            return [EVERYTHING]  # fell behind the ring (or the slot started again)
        out = []
        for s in range(seen, seq):
            change = None
            for _ in range(1 + self.RETRIES):
                change = self.area.record(slot, s)
                if change is not None:
                    break
            if change is None:
                return [EVERYTHING]  # overwritten already, or torn
            out.append(change)
        return out
