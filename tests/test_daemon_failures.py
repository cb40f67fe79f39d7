"""Memory failures and device lifecycle through real mounts: a bad page costs one file."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from helpers import MiB, is_mounted, wait_until

from famfs_py import omf
from famfs_py.dax import holder
from famfs_py.dax.device import device_in_root


@pytest.fixture
def mounted(fresh, mounts):
    return fresh, mounts.mount(fresh)


def _status(host, mp) -> dict:
    return json.loads(host.cli("status", "--json", mp).stdout)


def _extent(host, path) -> int:
    """Device offset of a file's first extent (asked of its daemon)."""
    from famfs_py import protocol
    from famfs_py.channel import Channel, locate

    where = locate(str(path))
    with Channel(where.mountpoint) as chan:
        return omf.fmap_extents(chan.call(protocol.Getmap(where.relpath)).fmap)[0].offset


def _fill(path, size: int) -> bytes:
    data = os.urandom(size)
    with open(path, "r+b") as f:
        f.write(data)
    return data


def _read_errno(path, offset: int = 0, length: int = -1) -> int | None:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            f.read(length)
    except OSError as exc:
        return exc.errno
    return None


def test_an_error_in_one_file_costs_that_file_only(mounted):
    host, mp = mounted
    contents = {}
    for i in range(5):
        host.ok("creat", "-s", "4m", mp / f"f{i}")
        contents[i] = _fill(mp / f"f{i}", 4 * MiB)
    victim = _extent(host, mp / "f2")
    result = host.cli(
        "dax", "inject-error", "dax0.0", "--offset", str(victim + 3 * MiB), "--length", "4096"
    )
    assert result.returncode == 0, result.out  # the holder (the daemon) handled it
    assert _read_errno(mp / "f2") == errno.EIO
    assert _read_errno(mp / "f2", 3 * MiB, 4096) == errno.EIO
    # the rest of the file, and every other file, stay byte-exact
    with open(mp / "f2", "rb") as f:
        assert f.read(3 * MiB) == contents[2][: 3 * MiB]
        f.seek(3 * MiB + 4096)
        assert f.read() == contents[2][3 * MiB + 4096 :]
    head = mp.parent / "head"
    head.write_bytes(contents[2][: 3 * MiB])
    subprocess.run(["cmp", "-n", str(3 * MiB), str(head), str(mp / "f2")], check=True)
    for i in (0, 1, 3, 4):
        assert (mp / f"f{i}").read_bytes() == contents[i]
    # writes into the bad page fail too; metadata is fine
    fd = os.open(mp / "f2", os.O_RDWR)
    try:
        with pytest.raises(OSError) as info:
            os.pwrite(fd, b"x" * 4096, 3 * MiB)
        assert info.value.errno == errno.EIO
        assert os.pwrite(fd, b"ok", 0) == 2  # outside the bad page: fine
    finally:
        os.close(fd)
    assert os.stat(mp / "f2").st_size == 4 * MiB
    assert sorted(os.listdir(mp)) == [".meta", "f0", "f1", "f2", "f3", "f4"]
    status = _status(host, mp)
    assert status["health"] == "degraded"
    assert status["poisoned"] == [{"offset": victim + 3 * MiB, "length": 4096, "files": ["f2"]}]
    assert host.cli("status", mp).returncode == 3


def test_an_error_in_the_log_makes_the_mount_failsafe(mounted):
    host, mp = mounted
    host.ok("creat", "-s", "1m", mp / "f")
    data = _fill(mp / "f", MiB)
    host.ok("dax", "inject-error", "dax0.0", "--offset", str(2 * MiB + 8192), "--length", "4096")
    result = host.cli("creat", "-s", "1m", mp / "g")
    assert result.returncode == 1 and "failsafe" in result.stderr
    assert "memory error in the superblock or log" in result.stderr
    assert host.cli("mkdir", mp / "d").returncode == 1
    assert (mp / "f").read_bytes() == data
    assert _status(host, mp)["health"] == "failsafe"


def test_an_error_in_free_space_is_only_recorded(mounted):
    host, mp = mounted
    host.ok("dax", "inject-error", "dax0.0", "--offset", str(3 << 30), "--length", "4096")
    host.ok("creat", "-s", "1m", mp / "f")
    status = _status(host, mp)
    assert status["poisoned"][0]["files"] == []
    assert status["failsafe"] is None


def test_poison_is_applied_again_at_the_next_mount_and_cleared_when_unclaimed(mounted, mounts):
    host, mp = mounted
    host.ok("creat", "-s", "1m", mp / "f")
    data = _fill(mp / "f", MiB)
    offset = _extent(host, mp / "f")
    host.ok("dax", "inject-error", "dax0.0", "--offset", str(offset), "--length", "4096")
    assert _read_errno(mp / "f") == errno.EIO
    result = host.cli("dax", "clear-errors", "dax0.0")
    assert result.returncode == 1 and "unmount it first" in result.stderr
    host.ok("umount", mp)
    mounts.mount(host, mp)
    assert _read_errno(mp / "f") == errno.EIO  # from badblocks
    host.ok("umount", mp)
    host.ok("dax", "clear-errors", "dax0.0")
    mounts.mount(host, mp)
    assert (mp / "f").read_bytes() == data


def test_delivery_return_codes(mounted):
    host, mp = mounted
    assert (
        host.cli(
            "dax", "inject-error", "dax0.0", "--offset", "0x40000000", "--length", "4096"
        ).returncode
        == 0
    )  # the holder's answer
    host.ok("umount", mp)
    assert (
        host.cli(
            "dax", "inject-error", "dax0.0", "--offset", "0x40000000", "--length", "4096"
        ).returncode
        == errno.EOPNOTSUPP
    )
    host.ok("dax", "reconfigure", "dax0.0", "--mode", "disabled")
    assert (
        host.cli(
            "dax", "inject-error", "dax0.0", "--offset", "0x40000000", "--length", "4096"
        ).returncode
        == errno.ENXIO
    )


def test_mapped_readers_see_the_poison(mounted):
    host, mp = mounted
    host.ok("creat", "-s", "1m", mp / "f")
    _fill(mp / "f", MiB)
    offset = _extent(host, mp / "f")
    reader = textwrap.dedent(
        """
        import mmap, sys
        with open(sys.argv[1], "rb") as f:
            m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
            m[0]  # the page is now cached and mapped
            print("mapped", flush=True)
            sys.stdin.readline()
            m[0]  # after the error: the page must fault
            print("still readable", flush=True)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", reader, str(mp / "f")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "mapped"
        host.ok("dax", "inject-error", "dax0.0", "--offset", str(offset), "--length", "4096")
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.wait(timeout=10) == -signal.SIGBUS
    finally:
        proc.kill()
        proc.wait()


def test_pre_remove_during_a_running_dd(mounted):
    host, mp = mounted
    host.ok("creat", "-s", "512m", mp / "big")
    dd = subprocess.Popen(
        [
            "sh",
            "-c",
            f"while :; do dd if={mp / 'big'} of=/dev/null bs=1M status=none || exit 7; done",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:  # dd has the file open and is reading when the device goes
        wait_until(lambda: _status(host, mp)["open_files"] >= 1, what="dd opening the file")
        assert dd.poll() is None
        started = time.monotonic()
        out = host.ok("dax", "remove", "dax0.0").stdout
        assert "pre-remove delivered" in out
        assert dd.wait(timeout=10) == 7
        assert time.monotonic() - started < 5
        assert "Input/output error" in dd.stderr.read()
    finally:
        dd.kill()
        dd.wait()
    assert os.listdir(mp) == ["big"] or sorted(os.listdir(mp)) == [".meta", "big"]
    status = _status(host, mp)
    assert status["removed"] and status["health"] == "removed"
    assert status["holder_pid"] is None
    assert _read_errno(mp / "big", 0, 4096) == errno.EIO
    host.ok("umount", mp)
    assert not is_mounted(mp)


def test_reconfigure_of_a_claimed_device_delivers_pre_remove(mounted):
    host, mp = mounted
    host.ok("creat", "-s", "1m", mp / "f")
    host.ok("dax", "reconfigure", "dax0.0", "--mode", "devdax")
    assert _read_errno(mp / "f") == errno.EIO
    assert _status(host, mp)["removed"]
    assert holder.holder_info(device_in_root("dax0.0", host.root)) is None  # released


def test_hot_unplug_without_notice_is_detected_within_a_second(mounted):
    host, mp = mounted
    host.ok("creat", "-s", "1m", mp / "f")
    os.unlink(host.node())  # the node vanishes; nobody tells the holder
    wait_until(lambda: _status(host, mp)["removed"], timeout=3, what="noticing the removal")
    assert _read_errno(mp / "f") == errno.EIO
    assert os.path.exists(mp / "f")
    host.ok("umount", mp)


def test_a_real_sigbus_under_the_daemon_becomes_eio(host, mounts):
    host.ok("dax", "create", "dax0.0", "--size", "4g")
    host.ok("mkfs", "dax0.0")
    mp = mounts.mount(host)
    host.ok("creat", "-s", "1m", mp / "small")
    small = _fill(mp / "small", MiB)
    host.ok("creat", "-s", "2g", mp / "big")
    big_offset = _extent(host, mp / "big")
    with open(mp / "big", "r+b") as f:
        f.seek(1 << 30)
        f.write(b"z" * 4096)
    # shrink the memory under the daemon's live mapping: the end of "big" is gone
    os.truncate(host.memory(), big_offset + (1 << 30) - 4096)
    assert _read_errno(mp / "big", 1 << 30, 4096) == errno.EIO
    assert (mp / "small").read_bytes() == small  # the daemon survived and serves
    status = _status(host, mp)
    assert any(p["files"] == ["big"] for p in status["poisoned"]), status
