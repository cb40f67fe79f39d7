"""Upstream famfs's producer/consumer queue (pcq) over two famfs files, byte for byte.

A queue QUEUE is two files (upstream's markdown/pcq_guide.md and src/pcq.h):

  QUEUE           2 MiB of metadata, then `nbuckets` buckets of `bucket_size` bytes
                  (size 2 MiB + nbuckets * bucket_size). Metadata, u64 each, native order:
                  0 magic 0xBEEBEE3, 8 nbuckets, 16 bucket_size, 24 bucket_array_offset
                  (2 MiB), 32 producer_index, [1024 bytes of padding], 1064 next_seq,
                  1072 pcq_size (the file's size).
  QUEUE.consumer  2 MiB: 0 magic 0xBEEBEE4 (u32), 4 padding (u32), 8 consumer_index,
                  [1 MiB of padding], 1048592 next_seq, 1048600 pcqc_size (2 MiB).

A bucket is the payload (bucket_size - 16 bytes), its sequence number (u64) and the CRC-32
(zlib's, stored in a u64) of payload and sequence number. The queue is empty when the two
indexes are equal and full when producer_index + 1 == consumer_index (mod nbuckets), so it
holds nbuckets - 1 messages. Only the producer writes QUEUE and only the consumer writes
QUEUE.consumer: each maps its own file "r+" and the other "r".

Cache discipline (the guide's section 6, for memory that is not coherent between hosts):
the producer writes a bucket, flushes it, then stores and flushes producer_index; the
consumer invalidates producer_index before each look at it, reads the bucket without
invalidating and, if its CRC is bad, invalidates the bucket and reads it again (twice at
most, counted in `retries`), then stores and flushes consumer_index; a producer that finds the
queue full invalidates consumer_index before it looks again. famfs-py adds two things upstream
leaves out: opening a queue invalidates both files' metadata (another host may have written
it), and each run flushes its next_seq when it ends (so `info` and a later run on another host
read the real value). `flush=False` (`pcq --dontflush`) skips every flush and invalidate.

The seeded payload is upstream's randomize_buffer pattern (famfs_py.fs.pattern) from offset
0 of the payload, the same in every message; without a seed the payload is zeros.
"""

from __future__ import annotations

import errno
import os
import struct
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the API is loaded when a queue is opened
    from famfs_py.api import MappedFile

PCQ_MAGIC = 0xBEEBEE3
PCQ_CONSUMER_MAGIC = 0xBEEBEE4
BUCKET_ARRAY_OFFSET = 2 << 20
CONSUMER_SIZE = 2 << 20
TRAILER = 16  # sequence number (u64) and CRC (unsigned long) at a bucket's end

# producer file (struct pcq)
P_MAGIC, P_NBUCKETS, P_BUCKET_SIZE, P_ARRAY_OFFSET, P_INDEX = 0, 8, 16, 24, 32
P_NEXT_SEQ = P_INDEX + 8 + 1024
P_SIZE = P_NEXT_SEQ + 8
P_END = P_SIZE + 8
# consumer file (struct pcq_consumer)
C_MAGIC, C_INDEX = 0, 8
C_NEXT_SEQ = C_INDEX + 8 + (1 << 20)
C_SIZE = C_NEXT_SEQ + 8
C_END = C_SIZE + 8

CONSUMER_RETRIES = 2  # reads of a bucket after the first, when its CRC is bad
SPIN_YIELDS = 2000  # waits that only yield the CPU before waits start to sleep
MAX_NAP = 0.001  # seconds: the longest sleep between two looks at an idle queue

_U64 = struct.Struct("=Q")

PRODUCER, CONSUMER, READONLY = "producer", "consumer", "readonly"


class PcqError(Exception):
    """A queue that cannot be made, opened or used, with a message naming it."""

    def __init__(self, message: str, errno_: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errno = errno_


def consumer_name(queue: str) -> str:
    return f"{queue}.consumer"


def producer_size(nbuckets: int, bucket_size: int) -> int:
    return BUCKET_ARRAY_OFFSET + nbuckets * bucket_size


def check_geometry(nbuckets: int, bucket_size: int) -> None:
    if bucket_size <= 0 or bucket_size & (bucket_size - 1):
        raise PcqError(f"bucket size {bucket_size} must be a power of 2")
    if bucket_size <= TRAILER:
        raise PcqError(f"bucket size {bucket_size} leaves no payload (give at least 32)")
    if nbuckets < 2:
        raise PcqError(f"{nbuckets} buckets: a queue needs at least 2 (it holds nbuckets - 1)")


# -- making a queue --------------------------------------------------------------------------


def create(
    queue: str,
    nbuckets: int,
    bucket_size: int,
    *,
    uid: int | None = None,
    gid: int | None = None,
    flush: bool = True,
) -> None:
    """Create QUEUE and QUEUE.consumer through the master's daemon (mode 0644, owned by
    uid:gid, default the caller) and write their metadata. Fails if either exists."""
    from famfs_py import channel, protocol
    from famfs_py.errors import FamfsError

    check_geometry(nbuckets, bucket_size)
    cname = consumer_name(queue)
    for name in (queue, cname):
        if os.path.lexists(name):
            raise PcqError(f"cannot create pcq {queue}: {name} already exists", errno.EEXIST)
    where = channel.locate(queue)
    try:
        with channel.Channel(where.mountpoint) as chan:
            for name, size in (
                (cname, CONSUMER_SIZE),
                (queue, producer_size(nbuckets, bucket_size)),
            ):
                relpath = channel.locate(name).relpath
                chan.call(protocol.Creat(relpath, size, 0o644, uid, gid))
    except FamfsError as exc:
        raise PcqError(f"cannot create pcq {queue}: {exc.message}", exc.errno) from None
    with _map(cname, True) as c:
        _put(c, C_MAGIC, PCQ_CONSUMER_MAGIC)  # u32 magic + u32 pad of 0
        _put(c, C_INDEX, 0)
        _put(c, C_NEXT_SEQ, 0)
        _put(c, C_SIZE, len(c))
        if flush:
            c.flush(0, C_INDEX + 8)
            c.flush(C_NEXT_SEQ, C_END - C_NEXT_SEQ)
    with _map(queue, True) as p:
        for offset, value in (
            (P_MAGIC, PCQ_MAGIC),
            (P_NBUCKETS, nbuckets),
            (P_BUCKET_SIZE, bucket_size),
            (P_ARRAY_OFFSET, BUCKET_ARRAY_OFFSET),
            (P_INDEX, 0),
            (P_NEXT_SEQ, 0),
            (P_SIZE, len(p)),
        ):
            _put(p, offset, value)
        if flush:
            p.flush(0, P_END)


def _put(mapped: Any, offset: int, value: int) -> None:
    _U64.pack_into(mapped, offset, value)


def _get(mapped: Any, offset: int) -> int:
    return _U64.unpack_from(mapped, offset)[0]


def _map(path: str, write: bool) -> MappedFile:
    from famfs_py import api
    from famfs_py.errors import FamfsError

    try:
        return api.open_mapped(path, "r+" if write else "r")
    except FamfsError as exc:
        raise PcqError(f"{path}: {exc.message}", exc.errno) from None
    except PermissionError as exc:
        how = "write" if write else "read"
        why = exc.strerror or "permission denied"
        raise PcqError(f"{path}: {why} (this role must {how} it)", errno.EACCES) from None
    except OSError as exc:
        if exc.errno == errno.EROFS:
            raise PcqError(
                f"{path}: file data is read-only on this host (mount the client with --rw)",
                exc.errno,
            ) from None
        if exc.errno == errno.ENOENT:
            raise PcqError(
                f"{path}: no such file (is the queue created and visible here?)", exc.errno
            ) from None
        raise PcqError(f"{path}: {exc.strerror or exc}", exc.errno) from None


# -- an open queue ---------------------------------------------------------------------------


@dataclass
class Stats:
    """Upstream's per-role counters."""

    nsent: int = 0
    nreceived: int = 0
    nerrors: int = 0
    nfull: int = 0  # puts that found the queue full (once per put)
    nempty: int = 0  # gets that found the queue empty (once per get)
    retries: int = 0  # gets whose first read had a bad CRC (once per get)
    cache: str = ""  # the cache policy the run applied (why flushing was on or off)


class Stop:
    """A flag the run loops look at (a timer or the other role sets it)."""

    now = False


def _nothing(offset: int = 0, size: int | None = None) -> None:
    return None


class Queue:
    """Both files of a queue, mapped for one role (PRODUCER writes QUEUE, CONSUMER writes
    QUEUE.consumer, READONLY writes neither)."""

    def __init__(self, queue: str, role: str, *, flush: bool = True) -> None:
        if sys.byteorder != "little":
            raise PcqError("pcq queues are little-endian; this host is not")
        self.name = queue
        self.role = role
        cname = consumer_name(queue)
        if not os.path.exists(cname):
            raise PcqError(f"pcq files not found for queue {queue} (no {cname})", errno.ENOENT)
        self.p = _map(queue, role == PRODUCER)
        try:
            self.c = _map(cname, role == CONSUMER)
        except BaseException:
            self.p.close()
            raise
        self._views: list[memoryview] = []
        try:
            self._setup(flush)
        except BaseException:
            self.close()
            raise

    def _setup(self, flush: bool) -> None:
        p, c = self.p, self.c
        self.cache = p.cache_policy.reason if flush else "off (--dontflush)"
        self.p_flush: Callable[..., None] = p.flush if flush else _nothing
        self.p_invalidate: Callable[..., None] = p.invalidate if flush else _nothing
        self.c_flush: Callable[..., None] = c.flush if flush else _nothing
        self.c_invalidate: Callable[..., None] = c.invalidate if flush else _nothing
        if len(p) < P_END or len(c) < C_END:
            raise PcqError(f"{self.name}: too small to be a pcq")
        self.p_invalidate(0, P_END)
        self.c_invalidate(0, C_INDEX + 8)
        self.c_invalidate(C_NEXT_SEQ, C_END - C_NEXT_SEQ)
        if _get(p, P_MAGIC) != PCQ_MAGIC:
            raise PcqError(f"{self.name}: not a pcq (bad magic)")
        if _get(c, C_MAGIC) & 0xFFFFFFFF != PCQ_CONSUMER_MAGIC:
            raise PcqError(f"{consumer_name(self.name)}: not a pcq consumer file (bad magic)")
        self.nbuckets = _get(p, P_NBUCKETS)
        self.bucket_size = _get(p, P_BUCKET_SIZE)
        self.array_offset = _get(p, P_ARRAY_OFFSET)
        try:
            check_geometry(self.nbuckets, self.bucket_size)
        except PcqError as exc:
            raise PcqError(f"{self.name}: bad metadata: {exc.message}") from None
        end = self.array_offset + self.nbuckets * self.bucket_size
        if self.array_offset < P_END or end > len(p):
            raise PcqError(f"{self.name}: bad metadata: buckets end at {end}, file is {len(p)}")
        self.payload_size = self.bucket_size - TRAILER
        self.seq_offset = self.bucket_size - TRAILER
        self.crc_offset = self.bucket_size - 8
        # u64 views of the fields the loops use (plain loads and stores of the memory)
        pview, cview = memoryview(p), memoryview(c)
        self._views += [pview, cview]
        self.p_index = pview[P_INDEX : P_INDEX + 8].cast("Q")
        self.p_next_seq = pview[P_NEXT_SEQ : P_NEXT_SEQ + 8].cast("Q")
        self.c_index = cview[C_INDEX : C_INDEX + 8].cast("Q")
        self.c_next_seq = cview[C_NEXT_SEQ : C_NEXT_SEQ + 8].cast("Q")
        self.buckets = pview[self.array_offset : end]
        self._views += [self.p_index, self.p_next_seq, self.c_index, self.c_next_seq]
        self._views.append(self.buckets)
        for name, index in (("producer", self.p_index[0]), ("consumer", self.c_index[0])):
            if index >= self.nbuckets:
                raise PcqError(f"{self.name}: bad metadata: {name} index {index} >= nbuckets")

    def messages(self) -> int:
        """Messages in the queue now (after invalidating both indexes)."""
        self.p_invalidate(P_INDEX, 8)
        self.c_invalidate(C_INDEX, 8)
        return (self.p_index[0] - self.c_index[0]) % self.nbuckets

    def close(self) -> None:
        for view in reversed(self._views):
            view.release()
        self._views = []
        self.c.close()
        self.p.close()

    def __enter__(self) -> Queue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _nap(waits: int) -> None:
    """Wait a little before looking at the queue again: yield the CPU for the first
    SPIN_YIELDS looks (as upstream does, every time), then sleep, longer and longer up to
    MAX_NAP, so an idle peer does not hold a CPU of a shared machine."""
    if waits < SPIN_YIELDS:
        os.sched_yield()
    else:
        time.sleep(min(MAX_NAP, 1e-5 * (waits - SPIN_YIELDS + 1)))


# put / get results
GOOD, FULL, EMPTY, STOPPED, BAD = "good", "full", "empty", "stopped", "bad"


class Producer:
    """Puts messages into a queue opened for the producer role."""

    def __init__(self, q: Queue, stats: Stats, stop: Stop, *, seed: int = 0, verbose: int = 0):
        self.q, self.stats, self.stop, self.verbose = q, stats, stop, verbose
        self.entry = bytearray(q.bucket_size)
        self._entry = memoryview(self.entry)
        if seed:
            from famfs_py.fs.pattern import fill

            fill(self._entry[: q.payload_size], seed, 0)

    def put(self, wait: bool = True) -> str:
        """Put one message (the entry with the next sequence number and its CRC)."""
        q, stats = self.q, self.stats
        nbuckets = q.nbuckets
        full = False
        waits = 0
        while True:
            put_index = q.p_index[0]
            if (put_index + 1) % nbuckets != q.c_index[0]:
                break
            if not full:
                full = True
                stats.nfull += 1
            if self.stop.now:
                return STOPPED
            if not wait:
                return FULL
            q.c_invalidate(C_INDEX, 8)
            _nap(waits)
            waits += 1
        seq = q.p_next_seq[0]
        q.p_next_seq[0] = seq + 1
        entry = self.entry
        _U64.pack_into(entry, q.seq_offset, seq)
        _U64.pack_into(entry, q.crc_offset, zlib.crc32(self._entry[: q.crc_offset]))
        start = put_index * q.bucket_size
        q.buckets[start : start + q.bucket_size] = entry
        q.p_flush(q.array_offset + start, q.bucket_size)
        q.p_index[0] = (put_index + 1) % nbuckets
        q.p_flush(P_INDEX, 8)
        stats.nsent += 1
        if self.verbose:
            print(f"pcq_producer_put: put_index={put_index} seq={seq}", flush=True)
        return GOOD

    def finish(self) -> None:
        self.q.p_flush(P_NEXT_SEQ, 8)


class Consumer:
    """Gets messages from a queue opened for the consumer role, checking CRC, sequence
    number and (with a seed) the payload."""

    def __init__(self, q: Queue, stats: Stats, stop: Stop, *, seed: int = 0, verbose: int = 0):
        self.q, self.stats, self.stop, self.verbose = q, stats, stop, verbose
        self.entry = bytearray(q.bucket_size)
        self._entry = memoryview(self.entry)
        self.seq = -1  # sequence number of the last message got
        self.expected: bytes | None = None
        if seed:
            from famfs_py.fs.pattern import pattern_bytes

            self.expected = bytes(pattern_bytes(seed, 0, q.payload_size))
        self.seed = seed
        self.errors: list[str] = []

    def get(self, wait: bool = True) -> str:
        q, stats = self.q, self.stats
        empty = False
        waits = 0
        while True:
            get_index = q.c_index[0]
            q.p_invalidate(P_INDEX, 8)  # our copy of producer_index is likely stale
            if get_index != q.p_index[0]:
                break
            if not empty:
                empty = True
                stats.nempty += 1
            if self.stop.now:
                return STOPPED
            if not wait:
                if self.verbose > 1:
                    print("pcq_consumer_get: queue empty", flush=True)
                return EMPTY
            _nap(waits)
            waits += 1
        bsize = q.bucket_size
        start = get_index * bsize
        seq_expect = q.c_next_seq[0]
        q.c_next_seq[0] = seq_expect + 1
        entry, view = self.entry, self._entry
        tries = CONSUMER_RETRIES
        retried = False
        good_crc = True
        while True:
            view[:] = q.buckets[start : start + bsize]  # first without invalidating
            if zlib.crc32(view[: q.crc_offset]) == _U64.unpack_from(entry, q.crc_offset)[0]:
                break
            # a stale line of our own cache where the producer's message is: drop and retry
            q.p_invalidate(q.array_offset + start, bsize)
            if not retried:
                retried = True
                stats.retries += 1
            if not tries:
                good_crc = False
                break
            tries -= 1
        seq = _U64.unpack_from(entry, q.seq_offset)[0]
        if not good_crc or seq != seq_expect:
            why = "bad crc" if not good_crc else f"seq mismatch {seq} / {seq_expect}"
            self.errors.append(
                f"pcq_consumer_get: {why} at bucket {get_index} after {CONSUMER_RETRIES} "
                f"retries (seq={seq_expect}); cache coherency suspicious"
            )
            stats.nerrors += 1
            self.stop.now = True
            return BAD
        if self.verbose:
            print(f"pcq_consumer_get: bucket={get_index} seq={seq}", flush=True)
        q.c_index[0] = (get_index + 1) % q.nbuckets
        q.c_flush(C_INDEX, 8)
        stats.nreceived += 1
        self.seq = seq
        if self.expected is not None and bytes(view[: q.payload_size]) != self.expected:
            from famfs_py.fs.pattern import first_mismatch

            bad = first_mismatch(view[: q.payload_size], self.seed, 0) or 0
            self.errors.append(f"run_consumer: miscompare seq={seq} ofs={bad - bad % 4}")
            stats.nerrors += 1
        return GOOD

    def finish(self) -> None:
        self.q.c_flush(C_NEXT_SEQ, 8)


# -- runs ------------------------------------------------------------------------------------


def run_producer(
    queue: str,
    stats: Stats,
    stop: Stop,
    *,
    nmessages: int | None,
    seed: int = 0,
    flush: bool = True,
    verbose: int = 0,
) -> None:
    """Put messages until `nmessages` are sent (None: until `stop.now`)."""
    with Queue(queue, PRODUCER, flush=flush) as q:
        stats.cache = q.cache
        producer = Producer(q, stats, stop, seed=seed, verbose=verbose)
        try:
            while nmessages is None or stats.nsent < nmessages:
                if producer.put() == STOPPED or stop.now:
                    break
        finally:
            producer.finish()


def run_consumer(
    queue: str,
    stats: Stats,
    stop: Stop,
    *,
    nmessages: int | None,
    drain: bool = False,
    seed: int = 0,
    flush: bool = True,
    verbose: int = 0,
    errors: list[str] | None = None,
) -> None:
    """Get messages until `nmessages` are received (None: until `stop.now`), or with
    `drain` until the queue is empty. Error messages go to `errors`."""
    with Queue(queue, CONSUMER, flush=flush) as q:
        stats.cache = q.cache
        consumer = Consumer(q, stats, stop, seed=seed, verbose=verbose)
        try:
            while nmessages is None or stats.nreceived < nmessages:
                result = consumer.get(wait=not drain)
                if result in (STOPPED, BAD) or (drain and result == EMPTY):
                    break
                if stop.now:
                    break
        finally:
            consumer.finish()
            if errors is not None:
                errors.extend(consumer.errors)


@dataclass(frozen=True)
class Info:
    messages: int
    producer_next_seq: int
    consumer_next_seq: int
    nbuckets: int
    bucket_size: int


def info(queue: str, *, flush: bool = True) -> Info:
    with Queue(queue, READONLY, flush=flush) as q:
        q.p_invalidate(P_NEXT_SEQ, 8)
        q.c_invalidate(C_NEXT_SEQ, 8)
        return Info(q.messages(), q.p_next_seq[0], q.c_next_seq[0], q.nbuckets, q.bucket_size)
