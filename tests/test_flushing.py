"""CPU cache flushing where data crosses hosts: mkfs, the log (append flushes the entry, then
the header; replay invalidates), writes through the mount, cp and creat -r, verify, `famfs-py
flush`, mapped files; the mount option and the device property that turn it off, and
`status` showing which is in force. Counted by the real instructions' counters
(famfs_py.dax.cache), in this process or in the daemon's status."""

from __future__ import annotations

import ctypes
import json
import os
import uuid

import pytest
from helpers import MASTER_UUID, GiB, MiB, wait_until

import famfs_py
from famfs_py import omf
from famfs_py.cli.main import main as cli_main
from famfs_py.dax import cache, emulated
from famfs_py.fs.filesystem import Famfs
from famfs_py.fs.log import Log
from famfs_py.fs.mkfs import mkfs

MASTER = uuid.UUID(MASTER_UUID)
LINE = cache.line_size()


def _lines(op: str) -> int:
    return cache.totals()[op]["lines"]


class Recording(cache.Policy):
    """The real policy, also noting what it flushed and invalidated (device offsets)."""

    def __init__(self, base: int) -> None:
        super().__init__(True, "on (test)", resident_only=True)
        self.base = base
        self.calls: list[tuple[str, int, int]] = []

    def _note(self, op: str, target, offset: int, length: int | None) -> None:
        view = memoryview(target)
        address = ctypes.addressof(ctypes.c_char.from_buffer(view))  # a writable mapping
        self.calls.append((op, address - self.base + offset, length or view.nbytes))

    def flush(self, target, offset: int = 0, length: int | None = None) -> None:
        self._note("flush", target, offset, length)
        super().flush(target, offset, length)

    def invalidate(self, target, offset: int = 0, length: int | None = None) -> None:
        self._note("invalidate", target, offset, length)
        super().invalidate(target, offset, length)


@pytest.fixture
def device(tmp_path):
    dev = emulated.create("dax0.0", 4 * GiB, tmp_path / "master")
    yield dev
    emulated.remove(dev)


# -- the model: mkfs and the log -------------------------------------------------------------
@pytest.mark.model
def test_mkfs_flushes_the_log_then_the_superblock_unless_the_device_is_coherent(tmp_path):
    plain = emulated.create("dax0.0", 4 * GiB, tmp_path / "a")
    coherent = emulated.create("dax1.0", 4 * GiB, tmp_path / "a", coherent=True)
    try:
        assert not plain.coherent and coherent.coherent
        before = _lines("flush")
        mkfs(plain, system_uuid=MASTER)
        written = (omf.DEFAULT_LOG_LEN + omf.SUPERBLOCK_SIZE) // LINE
        assert _lines("flush") - before == written
        before = cache.totals()
        mkfs(coherent, system_uuid=MASTER)
        assert cache.totals() == before
    finally:
        emulated.remove(plain)
        emulated.remove(coherent)


@pytest.mark.model
def test_an_append_flushes_its_entry_then_the_header_and_replay_invalidates(device):
    mkfs(device, system_uuid=MASTER)
    with Famfs(device, this_host=MASTER) as fs:
        assert fs.coherency.enabled and "not known coherent" in fs.coherency.reason
        spy = Recording(fs.mem.base)
        fs.log.coherency = spy
        fs.create_file("f", 4096, 0o644, 0, 0)
        sb = fs.sb
        entry = sb.log_offset + omf.entry_offset(0)
        counters = sb.log_offset + omf.COUNTERS_OFFSET
        flushes = [(off, n) for op, off, n in spy.calls if op == "flush"]
        assert flushes == [(entry, omf.LOG_ENTRY_SIZE), (counters, 16)]
        assert ("invalidate", counters, 16) in spy.calls  # the append read the count first
        # a reader (replay) invalidates the counters, then the new entries, before reading
        spy.calls.clear()
        reader = Log(fs.mem, sb, fs.log.header, spy)
        reader.replay()
        assert spy.calls == [
            ("invalidate", counters, 16),
            ("invalidate", entry, omf.LOG_ENTRY_SIZE),
        ]


@pytest.mark.model
def test_writes_are_flushed_and_flush_off_or_a_coherent_device_does_nothing(device, tmp_path):
    mkfs(device, system_uuid=MASTER)
    with Famfs(device, this_host=MASTER) as fs:
        inode, _ = fs.create_file("f", 3 * MiB, 0o644, 0, 0)
        before = _lines("flush")
        fs.write(inode, 100, b"x" * 1000)
        assert _lines("flush") - before == 17  # bytes 100..1099: lines 1..17 of the file
        assert fs.status()["cache_flush"]["enabled"] is True
    with Famfs(device, this_host=MASTER, flush="off") as fs:
        assert not fs.coherency.enabled and fs.coherency.reason == "off (flush=off)"
        before = cache.totals()
        inode, _ = fs.create_file("g", 4096, 0o644, 0, 0)
        fs.write(inode, 0, b"y" * 4096)
        assert cache.totals() == before
    shared = emulated.create("dax0.0", None, tmp_path / "other", share=str(device.node))
    coherent = emulated.create("dax1.0", 4 * GiB, tmp_path / "other", coherent=True)
    try:
        assert not shared.coherent  # a shared device takes the property of the one it shares
        mkfs(coherent, system_uuid=MASTER)
        with Famfs(coherent, this_host=MASTER) as fs:
            assert not fs.coherency.enabled and "is coherent" in fs.coherency.reason
        with Famfs(coherent, this_host=MASTER, flush="on") as fs:
            assert fs.coherency.enabled and fs.coherency.reason == "on (flush=on)"
    finally:
        emulated.remove(shared)
        emulated.remove(coherent)


# -- mounts: the daemon, the commands, mapped files ------------------------------------------
def _status(host, mp) -> dict:
    return json.loads(host.ok("status", "--json", mp).stdout)["cache_flush"]


def test_status_shows_flushing_and_the_daemons_counters(fresh, mounts, tmp_path):
    mp = mounts.mount(fresh)
    info = _status(fresh, mp)
    assert info["enabled"] and info["flush_instruction"] == cache.chosen().flush
    assert info["invalidate_instruction"] == cache.chosen().invalidate
    start = info["counters"]["flush"]["calls"]
    fresh.ok("creat", "-s", "1m", mp / "f")  # one append: the entry, then the header
    with open(mp / "f", "r+b") as f:
        f.write(b"z" * 8192)
    after = _status(fresh, mp)["counters"]["flush"]
    assert after["calls"] >= start + 3
    text = fresh.ok("status", mp).stdout
    line = next(ln for ln in text.splitlines() if ln.startswith("flushing:"))
    assert "on (flush=auto" in line and cache.chosen().flush in line and "flushes" in line


def test_flush_off_is_a_mount_option_and_mapped_files_follow_the_mount(fresh, mounts):
    mp = mounts.mount(fresh, None, "-o", "flush=off")
    info = _status(fresh, mp)
    assert not info["enabled"] and info["reason"] == "off (flush=off)"
    fresh.ok("creat", "-s", "1m", mp / "f")
    assert _status(fresh, mp)["counters"]["flush"]["calls"] == 0
    with famfs_py.open_mapped(mp / "f", "r+") as m:
        assert not m.cache_policy.enabled
        before = cache.totals()
        m[0:4] = b"abcd"
        m.flush(0, 4)
        m.invalidate()
        assert cache.totals() == before


def test_commands_and_mapped_files_flush_what_they_write(fresh, mounts, tmp_path):
    mp = mounts.mount(fresh)
    src = tmp_path / "src"
    src.write_bytes(os.urandom(3 * MiB + 100))
    before = _lines("flush")
    assert cli_main(["cp", str(src), str(mp / "copy")]) == 0  # in this process: its counters
    assert _lines("flush") - before == -(-(3 * MiB + 100) // LINE)
    before = _lines("flush")
    assert cli_main(["creat", "-r", "-S", "7", "-s", "2m", str(mp / "seeded")]) == 0
    assert _lines("flush") - before == 2 * MiB // LINE
    before = _lines("invalidate")
    assert cli_main(["verify", "-S", "7", "-f", str(mp / "seeded")]) == 0
    assert _lines("invalidate") - before == 2 * MiB // LINE
    before = _lines("invalidate")
    assert cli_main(["flush", str(mp / "copy")]) == 0  # upstream's: write back and evict
    assert _lines("invalidate") - before == -(-(3 * MiB + 100) // LINE)
    flushed = fresh.ok("flush", "-v", mp / "seeded").stdout
    assert f"({2 * MiB // LINE} cache lines)" in flushed
    with famfs_py.open_mapped(mp / "seeded", "r+") as m:
        assert m.cache_policy.enabled
        before = cache.totals()
        m[LINE + 1 : LINE + 3] = b"hi"
        m.flush(LINE + 1, 2)
        m.invalidate(0, 3 * LINE)
        after = cache.totals()
        assert after["flush"]["lines"] - before["flush"]["lines"] == 1
        assert after["invalidate"]["lines"] - before["invalidate"]["lines"] == 3
        with pytest.raises(ValueError, match="outside"):
            m.flush(2 * MiB - 1, 2)


def test_a_client_invalidates_the_log_it_follows(pair, mounts, tmp_path):
    master, client = pair
    mmp = mounts.mount(master, tmp_path / "m")
    cmp_ = mounts.mount(client, tmp_path / "c")
    start = _status(client, cmp_)["counters"]["invalidate"]["calls"]
    master.ok("creat", "-s", "4k", mmp / "new")
    wait_until((cmp_ / "new").exists, 10, "the client seeing the new file")
    assert _status(client, cmp_)["counters"]["invalidate"]["calls"] > start
