"""Replay's bulk decoder (famfs_py/omf/_replay.c) against its pure-Python reference
(omf.scan_entries, built on the checks fsck uses), and replay through it against replay with
every entry decoded one by one in Python (the way replay worked before the decoder): the
same entries accepted, the same bad entries with the same reasons, the same namespace and
bitmap, on 2 MiB and 4 KiB filesystems and on upstream's reference images."""

from __future__ import annotations

import random
import struct
import uuid
import zlib

import pytest
from helpers import MASTER_UUID, GiB, decompress_image

from famfs_py import omf
from famfs_py.dax import emulated
from famfs_py.dax.memory import DeviceMemory
from famfs_py.fs.log import Log, read_log_header, read_superblock
from famfs_py.fs.mkfs import mkfs
from famfs_py.fs.namespace import Namespace
from famfs_py.omf import _replay

pytestmark = pytest.mark.model

DEV_SIZE = 4 * GiB
LOG_LEN = omf.DEFAULT_LOG_LEN
RESERVED = omf.LOG_OFFSET + LOG_LEN
PATHS = [
    "", "/a", "a/", "a//b", "./a", "a/.", "a/..", "..", ".", ".a", "a/.b", "...", "a/...",
    "x" * 79, ".meta", ".meta/x", "d0/é", "d0/" + "y" * 76, "d0/sub/f", "d1", "d0",
]  # fmt: skip


class Entry:
    """One entry's 536 CRC-covered bytes, written field by field (crafted entries too)."""

    def __init__(self, index: int, kind: int, path: bytes | str, au: int) -> None:
        self.body = bytearray(omf.LOG_ENTRY_SIZE - 8)
        self.kind = kind
        self.au = au
        self.set(0, "<Q", index)
        self.set(8, "<I", kind)
        self.path(path)
        self.set(16 + (12 if kind == omf.LOG_FILE else 0), "<III", 0o1000 + index % 7, 7, 0o644)

    def set(self, at: int, fmt: str, *values: int) -> None:
        struct.pack_into(fmt, self.body, at, *values)

    def path(self, path: bytes | str) -> None:
        raw = path.encode("utf-8", "surrogateescape") if isinstance(path, str) else path
        at = 16 + (24 if self.kind == omf.LOG_FILE else 12)
        self.body[at : at + omf.MAX_PATHLEN] = raw[: omf.MAX_PATHLEN].ljust(omf.MAX_PATHLEN, b"\0")

    def file(self, size: int, extents: list[tuple[int, int]]) -> None:
        self.set(16, "<QI", size, omf.FM_ALL_HOSTS_RW)
        self.set(120, "<II", omf.EXT_SIMPLE, 0)
        self.set(128, "<I", len(extents))
        for i, (off, length) in enumerate(extents):
            self.set(136 + 24 * i, "<3Q", 0, off, length)

    def interleaved(self, size: int, chunk: int, strips: list[tuple[int, int]]) -> None:
        self.set(16, "<QI", size, omf.FM_ALL_HOSTS_RW)
        self.set(120, "<IIII", omf.EXT_INTERLEAVE, 0, 1, 0)
        self.set(136, "<QQ", len(strips), chunk)
        for i, (off, length) in enumerate(strips):
            self.set(152 + 24 * i, "<3Q", 0, off, length)

    def pack(self, crc_right: bool = True) -> bytes:
        crc = zlib.crc32(self.body) ^ (0 if crc_right else 1)
        return bytes(self.body) + struct.pack("<Q", crc)


def _mutated(rng: random.Random, index: int, au: int, next_free: list[int], corrupt: bool) -> bytes:
    """A valid entry, or one with one to three things wrong with it (`corrupt`: a wrong CRC
    or seqnum among them)."""
    kind = omf.LOG_MKDIR if rng.random() < 0.2 else omf.LOG_FILE
    entry = Entry(
        index, kind, f"d{index % 3}/f{index}" if kind == omf.LOG_FILE else f"d{index}", au
    )
    if kind == omf.LOG_FILE:
        size = rng.choice([1, au, 3 * au - 5])
        length = -(-size // au) * au
        entry.file(size, [(next_free[0], length)])
        next_free[0] += length
    crc_right = True
    for _ in range(rng.choice([0, 0, 1, 1, 2, 3])):
        what = rng.randrange(12)
        if not corrupt and what in (1, 3):
            continue
        if what == 0:
            entry.path(rng.choice([*PATHS, b"x" * 80, b"\xff\xfe/z", b"a\0b"]))
        elif what == 1:
            entry.set(0, "<Q", index + rng.choice([1, -1 if index else 5, 1 << 40]))
        elif what == 2:
            entry.set(8, "<I", rng.choice([omf.LOG_DELETE, omf.LOG_ADD_DAXDEV, 4, 99]))
        elif what == 3:
            crc_right = False
        elif kind != omf.LOG_FILE:
            entry.path(rng.choice(PATHS))
        elif what == 4:
            entry.set(16, "<Q", rng.choice([0, 2**64 - 1, 16 * au + 1]))
        elif what == 5:
            off = rng.choice(
                [0, au, RESERVED - au, RESERVED + 1, DEV_SIZE, DEV_SIZE - au, 2**64 - au]
            )
            entry.file(au, [(off, rng.choice([0, au, au + 1, 2 * au]))])
        elif what == 6:
            n = rng.choice([0, 2, 16, 17])
            entry.file(au, [(RESERVED + 2 * i * au, au) for i in range(min(n, 16))])
            entry.set(128, "<I", n)
        elif what == 7:
            entry.set(120, "<I", rng.choice([2, 7]))
        elif what == 8:
            n = rng.choice([0, 1, 2, 4, 16, 17])
            chunk = rng.choice([0, au, 2 * au, au + 4096, 2 * omf.ALLOC_UNIT])
            strips = [
                (RESERVED + i * 64 * au, rng.choice([8 * au, 8 * au, 4 * au]))
                for i in range(min(n, 16))
            ]
            entry.interleaved(rng.choice([1, 10 * au, 64 * au]), chunk, strips)
            entry.set(136, "<Q", n)
        elif what == 9:
            entry.set(128, "<I", rng.choice([0, 1, 2]))  # interleave's extent count
            entry.set(120, "<I", omf.EXT_INTERLEAVE)
        elif what == 10:
            entry.path(rng.choice(PATHS))
        else:
            entry.set(28, "<III", rng.randrange(2**32), rng.randrange(2**32), rng.randrange(2**32))
    return entry.pack(crc_right)


def _crafted_log(au: int, count: int, seed: int, corrupt: bool = True) -> bytes:
    rng = random.Random(seed)
    next_free = [-(-RESERVED // au) * au]
    return b"".join(_mutated(rng, index, au, next_free, corrupt) for index in range(count))


@pytest.mark.parametrize("au", [omf.ALLOC_UNIT, omf.SMALL_ALLOC_UNIT], ids=["2m", "4k"])
@pytest.mark.parametrize("first", [0, 1234])
def test_the_c_decoder_agrees_with_the_reference_entry_for_entry(au, first):
    raw = _crafted_log(au, 4000, seed=au + first)
    # the entries carry seqnums from 0: with first != 0 every one is refused on its seqnum
    args = (first, DEV_SIZE, au, RESERVED)
    fast, reference = _replay.scan(raw, *args), omf.scan_entries(raw, *args)
    assert len(fast) == len(reference) == 4000
    for index, (got, want) in enumerate(zip(fast, reference, strict=True)):
        assert got == want, f"entry {index}: {got} != {want}"
    clean = sum(item is not None for item in fast)
    if first == 0:
        assert 1000 < clean < 3500  # both kinds well represented
    else:
        assert clean == 0


@pytest.mark.parametrize("name", ["A", "B", "C", "D", "E"])
def test_the_c_decoder_agrees_with_the_reference_on_upstreams_images(name):
    with open(decompress_image(name), "rb") as image:
        sb = omf.Superblock.unpack(image.read(omf.SUPERBLOCK_STRUCT_SIZE))
        image.seek(sb.log_offset)
        header = omf.LogHeader.unpack(image.read(omf.LOG_HEADER_SIZE))
        raw = image.read(omf.LOG_ENTRY_SIZE * header.next_index)
    args = (0, sb.dev_size, sb.alloc_unit, sb.log_offset + sb.log_len)
    fast = _replay.scan(raw, *args)
    assert fast == omf.scan_entries(raw, *args)
    refused = [i for i, item in enumerate(fast) if item is None]
    assert refused == ([3] if name == "E" else [])


def test_the_decoder_refuses_a_buffer_of_partial_entries():
    with pytest.raises(ValueError, match="whole log entries"):
        _replay.scan(bytes(omf.LOG_ENTRY_SIZE + 1), 0, DEV_SIZE, omf.ALLOC_UNIT, RESERVED)


# -- replay through the decoder, against replay entry by entry ---------------------------------
class ReferenceScanLog(Log):
    scan = staticmethod(omf.scan_entries)


class OneByOneLog(Log):
    """Replay as it was before the bulk decoder: every entry decoded and checked alone."""

    @staticmethod
    def scan(buf: bytes, first: int, dev_size: int, au: int, reserved: int) -> list[None]:
        return [None] * (len(buf) // omf.LOG_ENTRY_SIZE)


def _namespace_facts(ns: Namespace) -> dict:
    out = {}
    for ino, inode in ns.inodes.items():
        allocated = inode.allocated  # before anything decodes the entry: from its extents
        out[ino] = (ns.path_of(ino), inode.is_dir, inode.mode, inode.uid, inode.gid, inode.size)
        out[ino] += (allocated,)
        out[ino] += (inode.entry_index, inode.meta, inode.children)
        if inode.filemap is not None:
            out[ino] += (inode.filemap.pieces,)
    return out


def _replayed(cls: type[Log], device, fix: tuple[int, bytes] | None, **kwargs) -> tuple:
    """What replaying the device's log builds; then, with `fix` (the corrupt entry made
    whole), what a second replay adds."""
    mem = DeviceMemory.of_device(device, writable=False)
    try:
        sb = read_superblock(mem)
        log = cls(mem, sb, read_log_header(mem, sb))
        stats = log.replay(**kwargs)
        if fix is not None:
            with DeviceMemory.of_device(device, writable=True) as writable:
                writable.write(sb.log_offset + omf.entry_offset(fix[0]), fix[1])
        later = log.replay(**kwargs)
        return (
            stats.files, stats.dirs, stats.sum_file_sizes, stats.bad, stats.stopped_at,
            [i.ino for i in stats.new_inodes], later.files, later.bad, later.stopped_at,
            [i.ino for i in later.new_inodes], log.next_index,
            log.bitmap.used, log.bitmap.collisions, log.bitmap.find_free(1),
            _namespace_facts(log.namespace),
        )  # fmt: skip
    finally:
        mem.close()


def _write_log(device, au: int, entries: list[bytes]) -> None:
    with DeviceMemory.of_device(device, writable=True) as mem:
        sb = read_superblock(mem)
        mem.write(sb.log_offset + omf.entry_offset(0), b"".join(entries))
        mem.write(
            sb.log_offset + omf.COUNTERS_OFFSET, omf.pack_counters(len(entries), len(entries))
        )


@pytest.mark.parametrize("au", [omf.ALLOC_UNIT, omf.SMALL_ALLOC_UNIT], ids=["2m", "4k"])
@pytest.mark.parametrize(
    "count, corrupt_at",
    [(900, None), (900, 450), (9000, 6000)],
    ids=["whole", "crc-failure", "past-a-chunk"],
)
def test_replay_through_the_decoder_is_replay_entry_by_entry(tmp_path, au, count, corrupt_at):
    """Also across the chunks replay reads at a time (Log.REPLAY_CHUNK entries), and when
    the corrupt entry it stopped at is made whole and replay goes on."""
    device = emulated.create("dax0.0", DEV_SIZE, tmp_path / "root")
    try:
        mkfs(device, system_uuid=uuid.UUID(MASTER_UUID), alloc_unit=au)
        base = -(-RESERVED // au) * au
        entries = []
        for index, path in enumerate(["d0", "d1", "d2"]):
            entries.append(Entry(index, omf.LOG_MKDIR, path, au).pack())
        rest = _crafted_log(au, count, seed=au, corrupt=False)
        entries += [rest[i * 544 : (i + 1) * 544] for i in range(3, count)]
        dup = Entry(count, omf.LOG_FILE, "d0/f10", au)  # a name taken, space another's
        dup.file(au, [(base, au)])
        entries.append(dup.pack())
        fix = None
        if corrupt_at is not None:
            bad = Entry(corrupt_at, omf.LOG_FILE, "d1/fresh", au)
            bad.file(au, [(base + 4096 * au, au)])
            entries[corrupt_at] = bad.pack(crc_right=False)
            fix = (corrupt_at, bad.pack())
        _write_log(device, au, entries)
        results = {}
        for stop in (True, False):
            results[stop] = []
            for cls in (Log, ReferenceScanLog, OneByOneLog):
                _write_log(device, au, entries)  # corrupt again
                results[stop].append(_replayed(cls, device, fix, stop_at_corrupt=stop))
        for stop, (fast, reference, one_by_one) in results.items():
            assert fast == reference, f"stop_at_corrupt={stop}"
            assert fast == one_by_one, f"stop_at_corrupt={stop}"
            files, dirs, _, bad, stopped_at = fast[:5]
            assert files > 100 and dirs > 3 and len(bad) > 100  # every kind of entry is there
            assert stopped_at == (corrupt_at if stop else None)
            assert [b.index for b in bad if b.corrupt] == (
                [] if corrupt_at is None else [corrupt_at]
            )
            if corrupt_at is not None and stop:  # made whole: replay goes on from there
                assert fast[6] > 10 and fast[8] is None
            assert fast[12] > 0  # the duplicate's extent collides
    finally:
        emulated.remove(device)
