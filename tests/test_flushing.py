"""CPU cache flushing where data crosses hosts: mkfs, the log (append flushes the entry, then
the header; replay invalidates), writes through the mount, cp and creat -r, verify, `famfs-py
flush`, mapped files; the mount option and the device property that turn it off, and
`status` showing which is in force. Counted by the real instructions' counters
(famfs_py.dax.cache), in this process or in the daemon's status."""

from __future__ import annotations

import contextlib
import ctypes
import io
import json
import os
import uuid

import pytest
from helpers import MASTER_UUID, GiB, MiB, as_user, assert_no_traceback, wait_until

import famfs_py
from famfs_py import omf
from famfs_py.cli.main import main as cli_main
from famfs_py.dax import cache, emulated
from famfs_py.fs.filesystem import Famfs
from famfs_py.fs.log import Log
from famfs_py.fs.mkfs import mkfs

MASTER = uuid.UUID(MASTER_UUID)
LINE = cache.line_size()
NOBODY = 65534


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

    def flush(self, target, offset: int = 0, length: int | None = None) -> int:
        self._note("flush", target, offset, length)
        return super().flush(target, offset, length)

    def invalidate(self, target, offset: int = 0, length: int | None = None) -> int:
        self._note("invalidate", target, offset, length)
        return super().invalidate(target, offset, length)


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
    with Famfs.open(device, this_host=MASTER) as fs:
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
    with Famfs.open(device, this_host=MASTER) as fs:
        inode, _ = fs.create_file("f", 3 * MiB, 0o644, 0, 0)
        before = _lines("flush")
        fs.write(inode, 100, b"x" * 1000)
        assert _lines("flush") - before == 17  # bytes 100..1099: lines 1..17 of the file
        status = fs.status()
        assert status.cache_flush is not None and status.cache_flush.enabled is True
    with Famfs.open(device, this_host=MASTER, flush="off") as fs:
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
        with Famfs.open(coherent, this_host=MASTER) as fs:
            assert not fs.coherency.enabled and "is coherent" in fs.coherency.reason
        with Famfs.open(coherent, this_host=MASTER, flush="on") as fs:
            assert fs.coherency.enabled and fs.coherency.reason == "on (flush=on)"
    finally:
        emulated.remove(shared)
        emulated.remove(coherent)


# -- mounts: the daemon, the commands, mapped files ------------------------------------------
def _status(host, mp) -> dict:
    return json.loads(host.ok("status", "--json", mp).stdout)["cache_flush"]


def _daemon_lines(host, mp, op: str) -> int:
    """Cache lines the mount's daemon has flushed or invalidated so far (its counters)."""
    return _status(host, mp)["counters"][op]["lines"]


def _status_line(host, mp) -> str:
    text = host.ok("status", mp).stdout
    return next(ln for ln in text.splitlines() if ln.startswith("flushing:"))


def _flushed_lines(stdout: str) -> int:
    """N of `famfs-py flush -v`'s "flushed FILE (N cache lines)"."""
    return int(stdout.rsplit("(", 1)[1].split()[0])


def test_status_shows_flushing_and_the_daemons_counters(fresh, mounts, tmp_path):
    mp = mounts.mount(fresh)
    info = _status(fresh, mp)
    assert info["enabled"] and info["flush_instruction"] == cache.chosen().flush
    assert info["invalidate_instruction"] == cache.chosen().invalidate
    assert info["reason"] == "on (flush=auto: the emulated device dax0.0 is not known coherent)"
    start = info["counters"]["flush"]
    fresh.ok("creat", "-s", "1m", mp / "f")  # one append: the entry, then the header
    with open(mp / "f", "r+b") as f:
        f.write(b"z" * 8192)
    after = _status(fresh, mp)["counters"]["flush"]
    assert after["calls"] >= start["calls"] + 3
    assert after["lines"] - start["lines"] >= 8192 // LINE + 2  # the data, an entry, a header
    line = _status_line(fresh, mp)
    assert line.startswith("flushing:   on (flush=auto: the emulated device dax0.0 is not known")
    assert f"{cache.chosen().flush}/{cache.chosen().invalidate}" in line and "flushes" in line


def test_flush_off_is_a_mount_option_and_mapped_files_follow_the_mount(fresh, mounts):
    mp = mounts.mount(fresh, None, "-o", "flush=off")
    info = _status(fresh, mp)
    assert not info["enabled"] and info["reason"] == "off (flush=off)"
    assert _status_line(fresh, mp).startswith("flushing:   off (flush=off); daemon: 0 flushes")
    fresh.ok("creat", "-s", "1m", mp / "f")
    with open(mp / "f", "r+b") as f:
        f.write(b"w" * 8192)
    said = fresh.ok("flush", "-v", mp / "f").stdout
    assert "nothing to flush, flushing is off (flush=off)" in said
    counters = _status(fresh, mp)["counters"]
    assert counters["flush"]["calls"] == 0 and counters["invalidate"]["calls"] == 0
    with famfs_py.open_mapped(mp / "f", "r+") as m:
        assert not m.cache_policy.enabled
        before = cache.totals()
        m[0:4] = b"abcd"
        m.flush(0, 4)
        m.invalidate()
        assert cache.totals() == before


def test_a_coherent_device_turns_auto_off_and_flush_on_forces_it(host, mounts):
    host.ok("dax", "create", "dax0.0", "--size", "4g", "--coherent")
    host.ok("mkfs", "dax0.0")
    mp = mounts.mount(host)
    assert _status_line(host, mp).startswith(
        "flushing:   off (flush=auto: the emulated device dax0.0 is coherent); daemon: 0"
    )
    host.ok("umount", mp)
    mp = mounts.mount(host, mp, "--flush", "on")
    line = _status_line(host, mp)
    assert line.startswith(f"flushing:   on (flush=on), {cache.chosen().flush}/"), line
    host.ok("creat", "-s", "1m", mp / "f")
    assert _daemon_lines(host, mp, "flush") >= 2  # the entry, then the header


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
    with famfs_py.open_mapped(mp / "seeded", "r+") as m:
        assert m.cache_policy.enabled and m.cache_policy.reason == "on (the mount flushes)"
        before = cache.totals()
        m[LINE + 1 : LINE + 3] = b"hi"
        m.flush(LINE + 1, 2)
        m.invalidate(0, 3 * LINE)
        after = cache.totals()
        assert after["flush"]["lines"] - before["flush"]["lines"] == 1
        assert after["invalidate"]["lines"] - before["invalidate"]["lines"] == 3
        with pytest.raises(ValueError, match="outside"):
            m.flush(2 * MiB - 1, 2)


def test_famfs_py_flush_has_the_daemon_write_back_and_evict_each_file(fresh, mounts, tmp_path):
    mp = mounts.mount(fresh)
    src = tmp_path / "src"
    src.write_bytes(os.urandom(3 * MiB + 100))
    fresh.ok("cp", src, mp / "copy")
    fresh.ok("mkdir", mp / "d")
    before = _daemon_lines(fresh, mp, "invalidate")
    said = fresh.ok("flush", "-v", mp / "copy").stdout  # upstream's hard flush, by the daemon
    lines = -(-(3 * MiB + 100) // LINE)
    assert said == f"famfs-py flush: flushed {mp / 'copy'} ({lines} cache lines)\n"
    assert _daemon_lines(fresh, mp, "invalidate") - before >= _flushed_lines(said)
    stray = tmp_path / "not-famfs"
    stray.write_bytes(b"x")
    result = fresh.cli("flush", mp / "copy", mp / "d", mp / "missing", stray)
    assert result.returncode == 3, result.out
    assert_no_traceback(result)
    errors = result.stderr.splitlines()
    assert len(errors) == 4 and errors[-1] == "famfs-py flush: 3 errors were detected"
    assert f"{mp / 'd'}: d is a directory" in errors[0]
    assert str(mp / "missing") in errors[1] and str(stray) in errors[2]
    assert "is not in a famfs-py mount" in errors[2]


def test_a_user_without_the_device_flushes_what_it_may_read(public_mount):
    host, mp = public_mount
    host.ok("creat", "-s", "1m", "-m", "0644", mp / "public")
    host.ok("creat", "-s", "1m", "-m", "0600", mp / "secret")
    for name in ("public", "secret"):
        with open(mp / name, "r+b") as f:  # memory that holds data (the pages are resident)
            f.write(os.urandom(MiB))
    assert os.stat(host.memory()).st_mode & 0o077 == 0  # nobody may not open the device

    def flush(name: str):
        def action():
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = cli_main(["flush", "-v", str(mp / name)])
            return f"{code} {out.getvalue().strip()} {err.getvalue().strip()}"

        return action

    before = _daemon_lines(host, mp, "invalidate")
    said = as_user(NOBODY, flush("public"))
    assert said == f"ok 0 famfs-py flush: flushed {mp / 'public'} ({MiB // LINE} cache lines) "
    assert _daemon_lines(host, mp, "invalidate") - before >= MiB // LINE
    said = as_user(NOBODY, flush("secret"))  # the rule of the flush op: who may read the file
    assert said.startswith("ok 1 ") and "secret: permission denied" in said, said
    host.ok("flush", mp / "secret")  # root may


def test_a_client_invalidates_the_log_it_follows_and_flushes_what_it_writes(pair, mounts, tmp_path):
    master, client = pair
    mmp = mounts.mount(master, tmp_path / "m")
    cmp_ = mounts.mount(client, tmp_path / "c", "--rw")
    start = _status(client, cmp_)["counters"]
    master.ok("creat", "-s", "4k", mmp / "new")
    wait_until((cmp_ / "new").exists, 10, "the client seeing the new file")
    assert _status(client, cmp_)["counters"]["invalidate"]["calls"] > start["invalidate"]["calls"]
    with open(cmp_ / "new", "r+b") as f:  # a --rw client's writes cross hosts too
        f.write(b"c" * 4096)
    flushed = _status(client, cmp_)["counters"]["flush"]["lines"] - start["flush"]["lines"]
    # the client appends nothing to the log: the data, and (once the master gave it a slot)
    # its change announcement, a record and a head of one line each; its request for a slot
    # (one line) may fall inside this window too, depending on when its propagation thread
    # wakes (every client now also looks at the superblock each tick: issue 28)
    assert flushed - 4096 // LINE in (0, 1, 2, 3), flushed
    master.ok("flush", mmp / "new")  # the master's view after its own invalidate
    assert (mmp / "new").read_bytes() == b"c" * 4096
