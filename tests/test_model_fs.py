"""The model tier: the filesystem model (log, allocation, namespace, health, Famfs) on real
emulated devices, in this process, with no FUSE and no daemon. `pytest -m model` runs this
tier; it passes where /dev/fuse cannot be opened."""

from __future__ import annotations

import dataclasses
import errno
import uuid

import pytest
from helpers import MASTER_UUID, GiB, MiB

from famfs_py import omf
from famfs_py.dax import emulated, failure_delivery, holder
from famfs_py.dax.memory import DeviceMemory
from famfs_py.errors import FsError, NamespaceError
from famfs_py.fs import log as log_module
from famfs_py.fs.alloc import Bitmap, Interleave, NoSpace
from famfs_py.fs.filesystem import Famfs
from famfs_py.fs.health import Health, State
from famfs_py.fs.log import Log, LogFull, read_log_header, read_superblock
from famfs_py.fs.mkfs import mkfs
from famfs_py.fs.namespace import FIRST_ENTRY_INO
from famfs_py.fs.status import PoisonedRange

pytestmark = pytest.mark.model

MASTER = uuid.UUID(MASTER_UUID)
CLIENT = uuid.UUID("0c1d2e3f-4a5b-4c6d-8e7f-901122334455")
AU = omf.ALLOC_UNIT


@pytest.fixture
def device(tmp_path):
    """A 4 GiB emulated device with a new famfs whose master is MASTER."""
    dev = emulated.create("dax0.0", 4 * GiB, tmp_path / "master")
    mkfs(dev, system_uuid=MASTER)
    yield dev
    emulated.remove(dev)


@pytest.fixture
def fs(device):
    famfs = Famfs.open(device, this_host=MASTER)
    yield famfs
    famfs.close()


@pytest.fixture
def client_device(device, tmp_path):
    dev = emulated.create("dax0.0", None, tmp_path / "client", share=str(device.node))
    yield dev
    emulated.remove(dev)


# -- the log ---------------------------------------------------------------------------------
def _log_of(device) -> Log:
    mem = DeviceMemory.of_device(device, writable=False)
    sb = read_superblock(mem)
    return Log(mem, sb, read_log_header(mem, sb))


def test_replaying_the_log_rebuilds_what_was_appended(fs, device):
    fs.mkdir("a/b", 0o750, 1, 2, parents=True)
    inode, created = fs.create_file("a/b/f", 3 * MiB + 1, 0o640, 3, 4)
    assert created and inode.ino == FIRST_ENTRY_INO + 2  # the third entry
    replayed = _log_of(device)
    stats = replayed.replay()
    assert (stats.files, stats.dirs, stats.stopped_at) == (1, 2, None)
    again = replayed.namespace.resolve("a/b/f")
    assert again is not None
    assert (again.ino, again.size, again.mode, again.uid, again.gid) == (
        inode.ino,
        3 * MiB + 1,
        0o640,
        3,
        4,
    )
    assert replayed.bitmap.used == fs.log.bitmap.used  # the same space is taken
    replayed.mem.close()


def test_an_append_commits_only_when_the_header_counts_it(fs, device):
    before = fs.log.committed()
    fs.mkdir("d", 0o755, 0, 0)
    assert fs.log.committed() == before + 1
    log = _log_of(device)
    assert log.committed() == before + 1
    log.mem.close()


def test_a_corrupt_entry_stops_replay_and_its_followers_keep_their_space(fs, device):
    one, _ = fs.create_file("one", AU, 0o644, 0, 0)
    two, _ = fs.create_file("two", AU, 0o644, 0, 0)
    first = fs.log.sb.log_offset + omf.entry_offset(0)
    with DeviceMemory.of_device(device, writable=True) as mem:
        mem.write(first + 40, b"\xff")  # inside entry 0: its CRC no longer matches
    log = _log_of(device)
    stats = log.replay()
    assert stats.stopped_at == 0 and stats.files == 0
    # entry 1 is beyond the stop, yet its extents stay marked (never handed out twice);
    # the corrupt entry's own extents cannot be trusted and are not
    assert log.bitmap.used == fs.log.bitmap.used - 1
    assert log.bitmap.mark(two.fmap.extents[0]) == 1
    assert log.bitmap.mark(one.fmap.extents[0]) == 0
    log.mem.close()


def test_a_full_log_refuses_more_entries(fs):
    fs.log.header = dataclasses.replace(fs.log.header, last_index=fs.log.next_index)
    fs.mkdir("last", 0o755, 0, 0)
    with pytest.raises(FsError) as info:
        fs.mkdir("one-too-many", 0o755, 0, 0)
    assert info.value.errno == errno.ENOSPC
    with pytest.raises(LogFull):
        fs.log.append(omf.MkdirMeta(0, 0, 0o755, "x"))


# -- allocation ------------------------------------------------------------------------------
def test_allocation_is_first_fit_in_whole_units_and_counts_collisions():
    bitmap = Bitmap(64 * AU, AU, 2 * AU)  # two units reserved (superblock, log)
    first = bitmap.allocate(1)
    second = bitmap.allocate(AU + 1)
    assert (first.offset, first.length) == (2 * AU, AU)
    assert (second.offset, second.length) == (3 * AU, 2 * AU)
    assert bitmap.used == 5 and bitmap.free == 59
    assert bitmap.mark(omf.Extent(3 * AU, AU)) == 1 and bitmap.collisions == 1
    with pytest.raises(NoSpace):
        bitmap.allocate(60 * AU)


def test_interleaved_strips_land_in_different_buckets_and_a_failure_leaves_nothing():
    bitmap = Bitmap(4 * GiB, AU, AU)  # buckets of 1 GiB, as upstream requires
    bucket = GiB // AU
    fmap = bitmap.allocate_interleaved(8 * AU, Interleave(2, 4))
    assert isinstance(fmap, omf.InterleavedFmap) and fmap.nstrips == 2
    buckets = {s.offset // GiB for s in fmap.strips}
    assert len(buckets) == 2
    used = bitmap.used
    with pytest.raises(NoSpace):
        bitmap.allocate_interleaved(4 * (bucket - 1) * AU, Interleave(4, 4))
    assert bitmap.used == used  # the strips that fit were given back


# -- namespace -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("missing/child", errno.ENOENT),
        ("f/child", errno.ENOTDIR),
        ("f", errno.EEXIST),
        (".meta/x", errno.EPERM),
        (".meta", errno.EPERM),
        ("x" * 300, errno.ENAMETOOLONG),
    ],
)
def test_the_namespace_refuses_paths_that_cannot_be_created(fs, path, code):
    fs.create_file("f", AU, 0o644, 0, 0)
    with pytest.raises(NamespaceError) as info:
        fs.namespace.check_new(path)
    assert info.value.errno == code


def test_mkdir_with_parents_creates_what_is_missing_only(fs):
    assert fs.mkdir("a/b/c", 0o755, 0, 0, parents=True) == ["a", "a/b", "a/b/c"]
    assert fs.mkdir("a/b/d", 0o755, 0, 0, parents=True) == ["a/b/d"]
    assert fs.mkdir("", 0o755, 0, 0, parents=True) == []  # the root is there
    with pytest.raises(FsError) as info:
        fs.mkdir("a", 0o755, 0, 0)
    assert info.value.errno == errno.EEXIST


# -- Famfs: roles, data, space ---------------------------------------------------------------
def test_bytes_written_are_read_back_across_extents_and_strips(fs):
    plain, _ = fs.create_file("plain", 3 * MiB, 0o644, 0, 0)
    striped, _ = fs.create_file("striped", 9 * MiB, 0o644, 0, 0, Interleave(3, 4, AU))
    for inode in (plain, striped):
        data = bytes(range(256)) * (inode.size // 256)
        assert fs.write(inode, 0, data) == len(data)
        assert bytes(fs.read(inode, 0, inode.size)) == data
        assert bytes(fs.read(inode, AU - 5, 10)) == data[AU - 5 : AU + 5]
    with pytest.raises(FsError) as info:
        fs.write(plain, plain.size, b"x")
    assert info.value.errno == errno.EFBIG


def test_a_client_follows_the_masters_log_and_cannot_create(fs, client_device):
    client = Famfs.open(client_device, this_host=CLIENT)
    try:
        assert client.role == "client" and not client.writable
        fs.create_file("late", AU, 0o644, 0, 0)
        assert client.namespace.resolve("late") is None
        stats = client.follow()
        assert stats.files == 1 and client.namespace.resolve("late") is not None
        with pytest.raises(FsError) as info:
            client.mkdir("nope", 0o755, 0, 0)
        assert info.value.errno == errno.EROFS
    finally:
        client.close()


def test_space_adds_up(fs):
    before = fs.space()
    fs.create_file("f", 5 * MiB, 0o644, 0, 0)
    after = fs.space()
    assert after.allocated - before.allocated == 3 * AU
    assert after.free == before.free - 3 * AU
    assert after.log_used == before.log_used + 1
    assert after.allocated + after.free == after.units * after.alloc_unit


# -- health ----------------------------------------------------------------------------------
def test_the_health_ladder():
    health = Health("dax0.0")
    assert health.state is State.OK and health.summary() == "ok"
    assert health.poison(0x1000, 0x1000) and not health.poison(0x1000, 0x1000)
    assert health.state is State.DEGRADED and health.summary() == "degraded (1 poisoned ranges)"
    assert health.hits([(0x1800, 16)]) and not health.hits([(0x2000, 16)])
    assert health.go_failsafe("first") and not health.go_failsafe("second")
    assert health.state is State.FAILSAFE and health.failsafe == "first"
    assert health.mark_removed() and not health.mark_removed()
    assert health.state is State.REMOVED


def test_poison_costs_the_files_it_hits_only(fs):
    bad, _ = fs.create_file("bad", AU, 0o644, 0, 0)
    good, _ = fs.create_file("good", AU, 0o644, 0, 0)
    page = bad.fmap.extents[0].offset + 4096
    assert fs.failures.notify_failure(page, 4096, failure_delivery.MF_ACTION_REQUIRED) == 0
    with pytest.raises(FsError) as info:
        fs.read(bad, 4000, 200)  # touches the bad page
    assert info.value.errno == errno.EIO
    assert bytes(fs.read(bad, 0, 4096)) == bytes(4096)  # the rest of the file is fine
    assert bytes(fs.read(good, 0, 10)) == bytes(10)
    assert fs.health.state is State.DEGRADED
    assert fs.status().poisoned == [
        PoisonedRange(offset=bad.fmap.extents[0].offset + 4096, length=4096, files=["bad"])
    ]


def test_poison_in_the_log_makes_the_filesystem_failsafe(fs):
    fs.failures.notify_failure(fs.sb.log_offset, 4096, 0)
    assert fs.health.state is State.FAILSAFE
    with pytest.raises(FsError) as info:
        fs.create_file("f", AU, 0o644, 0, 0)
    assert info.value.errno == errno.EROFS


def test_pre_remove_stops_data_and_releases_the_claim(fs, device):
    inode, _ = fs.create_file("f", AU, 0o644, 0, 0)
    fs.failures.notify_failure(0, failure_delivery.WHOLE_DEVICE, failure_delivery.MF_MEM_PRE_REMOVE)
    assert fs.health.state is State.REMOVED
    with pytest.raises(FsError) as info:
        fs.read(inode, 0, 1)
    assert info.value.errno == errno.EIO
    assert holder.holder_info(device) is None  # released: another holder may claim it
    assert fs.namespace.resolve("f") is inode  # the namespace stays


def test_a_failure_reported_while_opening_is_applied_once_open(device):
    """notify_failure can come at once after the claim, before the superblock is read: it
    is delivered for real (the holder's socket) right after the claim."""
    with Famfs.open(device, this_host=MASTER) as first:
        inode, _ = first.create_file("f", AU, 0o644, 0, 0)
    bad_at = inode.fmap.extents[0].offset

    def deliver() -> None:
        assert holder.notify_failure(device, bad_at, 4096, 0) == 0  # arrives mid-open

    early = Famfs.open(device, this_host=MASTER, on_claimed=deliver)
    try:
        assert early.health.state is State.DEGRADED
        with pytest.raises(FsError):
            early.read(early.namespace.resolve("f"), 0, 1)
    finally:
        early.close()


def test_an_append_is_an_entry_write_then_a_commit_through_the_log_writes(device, monkeypatch):
    """The contract the crash campaign's switch (tests/plugins/famfs_switches.py) relies on:
    every append writes its entry, then the header's counters, through `Log.writes_class`
    and nothing else. A refactor of the append that writes otherwise fails here, instead of
    silently changing what the crash tests interrupt."""
    calls: list[tuple[str, int, int]] = []

    class Recording(log_module.LogWrites):
        def entry(self, offset: int, raw: bytes) -> None:
            calls.append(("entry", offset, len(raw)))
            super().entry(offset, raw)

        def commit(self, offset: int, counters: bytes) -> None:
            calls.append(("commit", offset, len(counters)))
            super().commit(offset, counters)

    monkeypatch.setattr(log_module.Log, "writes_class", Recording)
    with Famfs.open(device, this_host=MASTER) as fs:
        before = bytes(fs.mem.read(0, fs.sb.log_offset + fs.sb.log_len))
        fs.mkdir("d", 0o755, 0, 0)
        fs.create_file("d/f", AU, 0o644, 0, 0)
        after = bytes(fs.mem.read(0, fs.sb.log_offset + fs.sb.log_len))
        log_at, counters_at = fs.sb.log_offset, fs.sb.log_offset + omf.COUNTERS_OFFSET
    assert calls == [
        ("entry", log_at + omf.entry_offset(0), omf.LOG_ENTRY_SIZE),
        ("commit", counters_at, 16),
        ("entry", log_at + omf.entry_offset(1), omf.LOG_ENTRY_SIZE),
        ("commit", counters_at, 16),
    ]
    pages = [p for p in range(0, len(before), 4096) if before[p : p + 4096] != after[p : p + 4096]]
    changed = [i for p in pages for i in range(p, p + 4096) if before[i] != after[i]]
    written = [(o, o + n) for _, o, n in calls]
    assert all(any(lo <= i < hi for lo, hi in written) for i in changed)  # nothing else
