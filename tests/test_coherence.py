"""Files shared through the mount (issue 23): what one host writes, the other host's programs
read — through open descriptors, existing MAP_SHARED mappings and fresh opens of its mount.

Two emulated hosts on one memory: the master and a client with another system UUID. The
test process plays the programs on both hosts (it opens and maps files in both mounts).
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import pytest
from helpers import as_user, resident, wait_until

import famfs_py

PAGE = 4096
NOBODY = 65534
OLD, NEW = b"old-data", b"NEW-DATA"


class Reader:
    """A program on one host holding a file open and mapped MAP_SHARED (read once)."""

    def __init__(self, path: Path, writable: bool = False) -> None:
        self.fd = os.open(path, os.O_RDWR if writable else os.O_RDONLY)
        size = os.fstat(self.fd).st_size
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
        self.map = mmap.mmap(self.fd, size, mmap.MAP_SHARED, prot)
        self.pread(0, 8), self.mapped(0, 8)  # cached now

    def pread(self, offset: int, n: int) -> bytes:
        return os.pread(self.fd, n, offset)

    def mapped(self, offset: int, n: int) -> bytes:
        return self.map[offset : offset + n]

    def close(self) -> None:
        self.map.close()
        os.close(self.fd)


@pytest.fixture
def shared_file(pair, mounts, tmp_path):
    """(master, client, master's path, client's path) of a 4 MiB file holding OLD at 0."""

    def make(*client_args: str, master_args: tuple[str, ...] = ()):
        master, client = pair
        mmp = mounts.mount(master, tmp_path / "mnt-master", *master_args)
        cmp_ = mounts.mount(client, tmp_path / "mnt-client", *client_args)
        master.ok("creat", "-s", "4m", mmp / "f")
        with open(mmp / "f", "r+b") as f:
            f.write(OLD)
        wait_until((cmp_ / "f").exists, 10, "the client seeing f")
        return master, client, mmp / "f", cmp_ / "f"

    return make


def _pwrite(path: Path, offset: int, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        assert os.pwrite(fd, data, offset) == len(data)
    finally:
        os.close(fd)


# -- the explicit path: famfs-py flush ---------------------------------------------------------
def test_flush_makes_this_hosts_descriptors_and_mappings_current(shared_file):
    master, client, mf, cf = shared_file("--changes-interval", "0")  # flush alone, no listening
    reader = Reader(cf)
    try:
        _pwrite(mf, 0, NEW)
        client.ok("flush", cf)
        assert reader.pread(0, 8) == NEW and reader.mapped(0, 8) == NEW
        _pwrite(mf, 0, b"py-flush")
        famfs_py.flush(cf)  # the same from Python, for a mount path
        assert reader.pread(0, 8) == b"py-flush" and reader.mapped(0, 8) == b"py-flush"
    finally:
        reader.close()


def test_flush_writes_a_shared_mappings_dirty_pages_back_first(shared_file):
    master, client, mf, cf = shared_file("--rw")
    program = Reader(cf, writable=True)
    try:
        program.map[PAGE : PAGE + 8] = NEW  # a store, never msync'd
        client.ok("flush", cf)  # written back (as a write to the daemon), then dropped
        assert program.mapped(PAGE, 8) == NEW
        with open(mf, "rb") as f:
            assert os.pread(f.fileno(), 8, PAGE) == NEW  # it reached memory
    finally:
        program.close()


def test_a_change_to_a_file_not_open_here_puts_nothing_in_this_hosts_page_cache(shared_file):
    """Only a file open on this host (a descriptor or a mapping) gets a change stored into
    its pages: a file the host merely looked up (stat, ls) stays out of its DRAM. (-c always:
    with auto, the open that fincore makes to count the pages would drop them.)"""
    master, client, mf, cf = shared_file("-c", "always")
    master.ok("creat", "-s", "4m", mf.parent / "g")
    wait_until((cf.parent / "g").exists, 10, "the client seeing g")
    os.stat(cf)  # the client's kernel knows f; nothing of it is read
    assert resident(cf) == 0
    reader = Reader(cf.parent / "g")
    try:
        _pwrite(mf, 0, NEW * (PAGE // len(NEW)))  # a whole page, announced first ...
        _pwrite(mf.parent / "g", 0, NEW)  # ... so once g shows it, f's change was applied
        wait_until(lambda: reader.mapped(0, 8) == NEW, 10, "the client applying the changes")
        assert resident(cf) == 0
        assert cf.read_bytes()[:8] == NEW
    finally:
        reader.close()


def test_a_user_without_the_device_flushes_what_it_may_read_on_a_client(pair, mounts, public_dir):
    master, client = pair
    mmp = mounts.mount(master, public_dir / "m", "--allow-other")
    cmp_ = mounts.mount(client, public_dir / "c", "--allow-other", "--changes-interval", "0")
    master.ok("creat", "-s", "2m", "-m", "0644", mmp / "f")
    wait_until((cmp_ / "f").exists, 10, "the client seeing f")
    reader = Reader(cmp_ / "f")
    try:
        _pwrite(mmp / "f", 0, NEW)
        said = as_user(NOBODY, lambda: famfs_py.flush(cmp_ / "f"))
        assert said.startswith("ok "), said
        assert reader.pread(0, 8) == NEW and reader.mapped(0, 8) == NEW
    finally:
        reader.close()


# -- automatic propagation -------------------------------------------------------------------
def _shows(reader: Reader, offset: int, data: bytes, what: str, fresh: Path | None = None):
    n = len(data)
    wait_until(lambda: reader.pread(offset, n) == data, 10, f"{what}: the descriptor")
    wait_until(lambda: reader.mapped(offset, n) == data, 10, f"{what}: the mapping")
    if fresh is not None:
        with open(fresh, "rb") as f:
            assert os.pread(f.fileno(), n, offset) == data, f"{what}: a fresh open"


@pytest.mark.parametrize("mode", ["auto", "always"])
def test_a_write_on_one_host_reaches_the_others_descriptors_mappings_and_opens(shared_file, mode):
    master, client, mf, cf = shared_file("-c", mode)
    reader = Reader(cf)
    try:
        _pwrite(mf, 0, NEW)
        _shows(reader, 0, NEW, f"-c {mode}, the master's pwrite", cf)
        big = os.urandom(2 << 20)  # a large range: dropped, not stored
        _pwrite(mf, 2 << 20, big)
        _shows(reader, 2 << 20, big, f"-c {mode}, a 2 MiB pwrite", cf)
        assert reader.mapped(0, 8) == NEW  # the rest stays as it was
    finally:
        reader.close()


# -- the contract table: every cell (README, "Files shared through the mount") ---------------
def _by_write(mf: Path, offset: int, data: bytes) -> None:
    _pwrite(mf, offset, data)


def _by_msync(mf: Path, offset: int, data: bytes) -> None:
    """A program on the writing host stores into its MAP_SHARED mapping and msyncs."""
    with open(mf, "r+b") as f, mmap.mmap(f.fileno(), 0, mmap.MAP_SHARED) as m:
        m[offset : offset + len(data)] = data
        m.flush()


def _by_mapped_api(mf: Path, offset: int, data: bytes) -> None:
    """famfs_py.open_mapped: stores into device memory, flushed; then famfs_py.flush so
    the mounts hear of it."""
    with famfs_py.open_mapped(mf, "r+") as m:
        m[offset : offset + len(data)] = data
        m.flush(offset, len(data))
    famfs_py.flush(mf, offset, len(data))


ACTIONS = {"write": _by_write, "msync": _by_msync, "mapped-api+flush": _by_mapped_api}


@pytest.mark.parametrize("action", list(ACTIONS))
@pytest.mark.parametrize("mode", ["auto", "always", "never"])
def test_contract(shared_file, mode, action):
    """The client (B) holds f open (and mapped, where the mode allows) and the mapped API
    view; the master (A) changes 8 bytes by `action`; every way B reads shows them."""
    master, client, mf, cf = shared_file("-c", mode)
    if mode == "never":
        with open(cf, "rb") as f, pytest.raises(OSError) as info:
            mmap.mmap(f.fileno(), 0, mmap.MAP_SHARED, mmap.PROT_READ)
        assert info.value.errno == 19  # ENODEV: direct I/O, no shared mapping through FUSE
        fd = os.open(cf, os.O_RDONLY)
        assert os.pread(fd, 8, 0) == OLD
        reader = None
    else:
        reader = Reader(cf)
    api = famfs_py.open_mapped(cf)
    try:
        ACTIONS[action](mf, 0, NEW)
        if reader is not None:
            _shows(reader, 0, NEW, f"-c {mode}, {action}", cf)
        else:
            assert os.pread(fd, 8, 0) == NEW  # at once: every read goes to memory
        api.invalidate(0, 8)
        assert api[0:8] == NEW  # the mapped API reads memory
    finally:
        api.close()
        reader.close() if reader is not None else os.close(fd)


# -- upstream's mmap rules (test_mmap.sh), judged on the other host ---------------------------
@pytest.mark.parametrize("offset, length", [(0, PAGE), (2 << 20, 2 << 20)])
def test_shared_msynced_stores_reach_memory_and_private_ones_never(shared_file, offset, length):
    master, client, mf, cf = shared_file("--rw")
    private, shared = os.urandom(length), os.urandom(length)
    with open(mf, "r+b") as f, mmap.mmap(f.fileno(), 0, mmap.MAP_PRIVATE) as m:
        m[offset : offset + length] = private
        m.flush()  # msync of a private mapping: nothing to write
    reader = Reader(cf)
    try:
        _by_msync(mf, 0, b"marker!!")  # an announced change, after the private store
        _shows(reader, 0, b"marker!!", "the marker")
        assert reader.pread(offset + 8, length - 8) == bytes(length - 8)  # private: never
        with open(cf, "rb") as f:
            assert os.pread(f.fileno(), length - 8, offset + 8) == bytes(length - 8)
        _by_msync(mf, offset, shared)
        _shows(reader, offset, shared, "the msync'd MAP_SHARED store", cf)
        # and the other way: the client's msync'd store, read on the master
        back = os.urandom(PAGE)
        _by_msync(cf, offset, back)
        with open(mf, "rb") as f, mmap.mmap(f.fileno(), 0, mmap.MAP_SHARED, mmap.PROT_READ) as m:
            wait_until(lambda: m[offset : offset + PAGE] == back, 10, "the master's mapping")
    finally:
        reader.close()


# -- failures: a writer killed mid-announcement, a host mounting late, a host falling behind --
def test_a_writer_killed_mid_announcement_leaves_nobody_stuck_and_catches_up(
    pair, mounts, tmp_path, monkeypatch
):
    master, client = pair
    monkeypatch.setenv("FAMFS_PY_TEST_ANNOUNCE_CRASH", "3")  # the first two: setup
    mmp = mounts.mount(master, tmp_path / "mnt-master")
    monkeypatch.delenv("FAMFS_PY_TEST_ANNOUNCE_CRASH")
    cmp_ = mounts.mount(client, tmp_path / "mnt-client")
    master.ok("creat", "-s", "4m", mmp / "f")  # cp-free: no announcement
    _pwrite(mmp / "f", 0, OLD)  # 1
    _pwrite(mmp / "f", PAGE, OLD)  # 2
    wait_until((cmp_ / "f").exists, 10, "the client seeing f")
    reader = Reader(cmp_ / "f")
    try:
        _shows(reader, PAGE, OLD, "the setup")
        with pytest.raises(OSError):
            _pwrite(mmp / "f", 0, NEW)  # the master's daemon dies before the head moves
        assert reader.pread(PAGE, 8) == OLD  # the client goes on serving, not stuck
        master.ok("umount", mmp)  # the stale mount
        mounts.mount(master, mmp)  # the master comes back: publishes what it had recorded
        _shows(reader, 0, NEW, "the change recorded before the crash", cmp_ / "f")
        _pwrite(mmp / "f", PAGE, NEW)  # and announcing goes on
        _shows(reader, PAGE, NEW, "a change after the restart")
    finally:
        reader.close()


def test_a_host_mounting_after_changes_reads_them(pair, mounts, tmp_path):
    master, client = pair
    mmp = mounts.mount(master, tmp_path / "mnt-master")
    cmp_ = mounts.mount(client, tmp_path / "mnt-client")
    master.ok("creat", "-s", "2m", mmp / "f")
    wait_until((cmp_ / "f").exists, 10, "the client seeing f")
    assert (cmp_ / "f").read_bytes()[:8] == bytes(8)  # read once at the first mount
    client.ok("umount", cmp_)
    for i in range(300):  # more than a ring holds
        _pwrite(mmp / "f", i * 8, NEW)
    mounts.mount(client, cmp_)
    reader = Reader(cmp_ / "f")
    try:
        assert reader.pread(0, 300 * 8) == NEW * 300 and reader.mapped(8, 8) == NEW
        _pwrite(mmp / "f", 0, b"after!!!")
        _shows(reader, 0, b"after!!!", "a change after the late mount")
    finally:
        reader.close()


def test_a_host_that_fell_behind_the_ring_drops_its_cached_pages(pair, mounts, tmp_path):
    master, client = pair
    mmp = mounts.mount(master, tmp_path / "mnt-master")
    cmp_ = mounts.mount(client, tmp_path / "mnt-client", "-c", "always", "--changes-interval", "3")
    master.ok("creat", "-s", "2m", mmp / "f")
    wait_until((cmp_ / "f").exists, 10, "the client seeing f")
    reader = Reader(cmp_ / "f")
    try:
        for i in range(300):  # more than the ring holds, before the client's next look
            _pwrite(mmp / "f", i * 8, NEW)
        _shows(reader, 0, NEW * 300, "300 changes, fallen behind", cmp_ / "f")
    finally:
        reader.close()


def test_files_cp_rewrites_reach_the_other_hosts_cached_pages(pair, mounts, tmp_path):
    """cp asks for its copied files' invalidations together (one InvalidateFiles, one
    announcement batch); each file's new bytes still reach the client's cached pages."""
    master, client = pair
    mmp = mounts.mount(master, tmp_path / "mnt-master")
    cmp_ = mounts.mount(client, tmp_path / "mnt-client", "-c", "always")
    src = tmp_path / "src"
    src.mkdir()
    names = [f"f{i}" for i in range(5)]
    for name in names:
        (src / name).write_bytes(OLD * 512)
    master.ok("cp", "-r", src, mmp / "d")
    wait_until(lambda: all((cmp_ / "d" / n).exists() for n in names), 10, "the client's files")
    readers = [Reader(cmp_ / "d" / name) for name in names]
    try:
        for name in names:  # same sizes: cp rewrites the files in place
            (src / name).write_bytes(NEW * 512)
        master.ok("cp", "-r", src, mmp / "d")
        for name, reader in zip(names, readers, strict=True):
            _shows(reader, 4088, NEW, f"cp -r rewrote {name}", cmp_ / "d" / name)
    finally:
        for reader in readers:
            reader.close()
