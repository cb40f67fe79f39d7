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
from helpers import as_user, wait_until

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
    master, client, mf, cf = shared_file()
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


def test_a_user_without_the_device_flushes_what_it_may_read_on_a_client(pair, mounts, public_dir):
    master, client = pair
    mmp = mounts.mount(master, public_dir / "m", "--allow-other")
    cmp_ = mounts.mount(client, public_dir / "c", "--allow-other")
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
