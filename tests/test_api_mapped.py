"""famfs_py.open_mapped: files as memory, straight onto (emulated) DAX."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import pytest
from helpers import MiB, as_user, manifest, readme_block, wait_until

import famfs_py
from famfs_py import omf


@pytest.fixture
def fs(fresh, mounts):
    return fresh, mounts.mount(fresh)


def test_fuse_and_mapped_views_show_the_same_bytes(fs):
    host, mp = fs
    host.ok("creat", "-s", "3m", mp / "f")
    data = os.urandom(3 * MiB)
    (mp / "f").open("r+b").write(data)
    with famfs_py.open_mapped(mp / "f") as m:
        assert len(m) == 3 * MiB and m[:] == data
        assert memoryview(m).readonly
        assert m.read_range(MiB, 10) == data[MiB : MiB + 10]
    fresh = os.urandom(3 * MiB)
    with famfs_py.open_mapped(mp / "f", "r+") as m:
        m[:] = fresh
        m.flush()
    assert (mp / "f").read_bytes() == fresh


def test_interleaved_files_are_one_contiguous_view(fs):
    host, mp = fs
    host.ok("creat", "-s", "20983865", "-N", "3", "-B", "4", "-C", "2m", mp / "s")
    data = os.urandom(20983865)
    (mp / "s").open("r+b").write(data)
    with famfs_py.open_mapped(mp / "s") as m:
        assert len(m.pieces) > 3  # stitched from many chunks
        assert m[:] == data
        assert bytes(memoryview(m)[2 * MiB - 3 : 2 * MiB + 3]) == data[2 * MiB - 3 : 2 * MiB + 3]


def test_reference_image_c_reads_exactly_through_mapped_views(ref_device, mounts):
    host = ref_device("C")
    mp = mounts.mount(host)
    for entry in manifest("C")["entries"]:
        if entry["type"] == omf.LOG_FILE:
            with famfs_py.open_mapped(mp / entry["path"]) as m:
                assert zlib.crc32(m) == entry["data"]["content_crc32"], entry["path"]


def test_numpy_sees_the_memory(fs):
    numpy = pytest.importorskip("numpy")
    host, mp = fs
    host.ok("creat", "-s", "8m", mp / "array")
    with famfs_py.open_mapped(mp / "array", "r+") as m:
        arr = numpy.frombuffer(m, dtype=numpy.uint64)
        arr[:] = numpy.arange(len(arr), dtype=numpy.uint64)
        del arr
    with famfs_py.open_mapped(mp / "array") as m:
        arr = numpy.frombuffer(m, dtype=numpy.uint64)
        assert int(arr[12345]) == 12345 and not arr.flags.writeable
        del arr


EXCHANGE = textwrap.dedent(
    """
    import sys
    import famfs_py
    from famfs_py.dax import cache
    LINE = 64  # each host writes only its own cache line
    path, role = sys.argv[1], sys.argv[2]
    with famfs_py.open_mapped(path, "r+") as m:
        assert m.cache_policy.enabled, m.cache_policy   # the README's example, flushing
        if role == "ping":
            for i in range(1, 51):
                m[0:4] = i.to_bytes(4, "little")          # a store, no syscall
                m.flush(0, 4)                             # ... written back to memory
                while True:                               # wait for the echo
                    m.invalidate(LINE, 4)
                    if int.from_bytes(m[LINE : LINE + 4], "little") == i:
                        break
            done = cache.totals()
            assert done["flush"]["calls"] >= 50 and done["invalidate"]["calls"] >= 50, done
            print("done", flush=True)
        else:
            last = 0
            while last < 50:
                m.invalidate(0, 4)
                seen = int.from_bytes(m[0:4], "little")
                if seen != last:
                    m[LINE : LINE + 4] = seen.to_bytes(4, "little")
                    m.flush(LINE, 4)
                    last = seen
    """
)


def test_two_hosts_exchange_data_through_mapped_views(pair, mounts, tmp_path):
    master, client = pair
    mmp = mounts.mount(master, tmp_path / "m1")
    cmp_ = mounts.mount(client, tmp_path / "m2", "--rw")
    master.ok("creat", "-s", "4k", mmp / "mailbox")
    wait_until((cmp_ / "mailbox").exists, what="the client seeing the mailbox")
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    echo = subprocess.Popen(
        [sys.executable, "-c", EXCHANGE, str(cmp_ / "mailbox"), "echo"], env=env
    )
    ping = subprocess.run(
        [sys.executable, "-c", EXCHANGE, str(mmp / "mailbox"), "ping"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert ping.stdout.strip() == "done", ping.stderr
    assert echo.wait(timeout=10) == 0


def test_the_daemon_checks_the_callers_permissions(fs):
    host, mp = fs
    os.chmod(mp.parent, 0o755)
    host.ok("creat", "-s", "4k", "-m", "0600", mp / "private")
    host.ok("creat", "-s", "4k", "-m", "0644", mp / "shared")
    host.ok("creat", "-s", "4k", "-m", "0600", "-u", "65534", mp / "theirs")

    def read(name):
        return lambda: len(famfs_py.open_mapped(mp / name))

    def write(name):
        return lambda: len(famfs_py.open_mapped(mp / name, "r+"))

    assert as_user(65534, read("shared")).startswith(f"error {errno.EACCES}")  # no device
    memory = os.path.realpath(host.node())
    os.chown(memory, 0, 4242)
    os.chmod(memory, 0o660)  # the device's group may use it
    group = (4242,)
    assert as_user(65534, read("private"), group).startswith(f"error {errno.EACCES}")
    assert as_user(65534, read("shared"), group) == "ok 4096"
    assert as_user(65534, write("shared"), group).startswith(f"error {errno.EACCES}")
    assert as_user(65534, write("theirs"), group) == "ok 4096"


def test_client_without_rw_gets_read_only_mappings(pair, mounts, tmp_path):
    master, client = pair
    mmp = mounts.mount(master, tmp_path / "m1")
    cmp_ = mounts.mount(client, tmp_path / "m2")
    master.ok("creat", "-s", "4k", mmp / "f")
    master.ok("logplay", mmp)
    client.ok("logplay", cmp_)
    with pytest.raises(OSError) as info:
        famfs_py.open_mapped(cmp_ / "f", "r+")
    assert info.value.errno == errno.EROFS
    with famfs_py.open_mapped(cmp_ / "f") as m:
        assert len(m) == 4096


def test_a_poisoned_file_cannot_be_mapped(fs):
    host, mp = fs
    host.ok("creat", "-s", "1m", mp / "f")
    offset = famfs_py.open_mapped(mp / "f").pieces[0][2]
    host.ok("dax", "inject-error", "dax0.0", "--offset", str(offset), "--length", "4096")
    with pytest.raises(OSError) as info:
        famfs_py.open_mapped(mp / "f")
    assert info.value.errno == errno.EIO


def test_pre_remove_revokes_live_mappings(fs):
    host, mp = fs
    host.ok("creat", "-s", "1m", mp / "f")
    m = famfs_py.open_mapped(mp / "f")
    assert m.read_range(0, 4) == bytes(4)
    host.ok("dax", "remove", "dax0.0")
    wait_until(lambda: m.revoked, what="the mapping's revocation")
    with pytest.raises(OSError) as info:
        m.read_range(0, 4)
    assert info.value.errno == errno.EIO
    m.close()
    assert host.cli("status", mp).returncode == 3  # removed, the daemon still answers


def test_the_readmes_numpy_example_runs_as_written(fs):
    host, mp = fs
    host.ok("mkdir", mp / "data")
    host.ok("creat", "-s", "64m", mp / "data" / "buf")
    code = readme_block("numpy.frombuffer").replace("/mnt/famfs", str(mp))
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    assert run.returncode == 0, run.stderr
    with open(mp / "data" / "buf", "rb") as f:
        head = f.read(16)
    assert head == b"\x00\x00\x80\x3f" * 4  # float32 1.0, through FUSE


def test_views_outlive_the_with_block_and_unmap_when_released(fs):
    import numpy

    host, mp = fs
    host.ok("creat", "-s", "4m", mp / "f")
    memory = os.path.realpath(host.node())
    with famfs_py.open_mapped(mp / "f", "r+") as m:
        arr = numpy.frombuffer(m, dtype=numpy.uint8)
        arr[:4] = 7
    assert m.closed and not m.unmapped  # the block ended; the array still holds the memory
    assert int(arr[3]) == 7
    assert _maps_of(memory)
    del arr
    assert m.unmapped and not _maps_of(memory)
    assert (mp / "f").read_bytes()[:5] == b"\x07\x07\x07\x07\x00"


def _maps_of(memory: str) -> list[str]:
    inode = os.stat(memory).st_ino
    with open("/proc/self/maps") as f:
        return [line for line in f if len(line.split()) >= 6 and int(line.split()[4]) == inode]


def test_closing_ends_the_removal_watch(fs):
    """Each mapping's watch thread and channel end with it (before, a thread waiting for an
    event outlived close() by the channel's 60 s timeout, holding a closed descriptor)."""
    import threading

    host, mp = fs
    host.ok("creat", "-s", "4k", mp / "f")

    def watching() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == f"famfs-map {mp / 'f'}"]

    m = famfs_py.open_mapped(mp / "f")
    (watcher,) = watching()
    wchan = Path(f"/proc/self/task/{watcher.native_id}/wchan")
    wait_until(lambda: "poll" in wchan.read_text(), timeout=30, what="the watch thread waiting")
    m.close()
    wait_until(lambda: not watching(), timeout=30, what="the watch thread ending")
