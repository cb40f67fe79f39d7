"""The mount lifecycle: mount, umount, failures that leave nothing behind, signals, kills."""

from __future__ import annotations

import json
import os
import signal
import struct

import pytest
from helpers import as_user, assert_no_traceback, is_mounted, wait_gone

from famfs_py import omf
from famfs_py.dax import holder
from famfs_py.dax.device import device_in_root


def _claimed(host) -> bool:
    return holder.holder_info(device_in_root("dax0.0", host.root)) is not None


def _failed_mount(mounts, host, mp, *args, expect: str) -> None:
    mounts.mount(host, mp, *args, expect_ok=False)
    result = mounts.last
    assert result.returncode == 1, result.out
    assert_no_traceback(result)
    assert expect in result.stderr, result.stderr
    assert not is_mounted(mp)
    assert not _claimed(host), "a failed mount left the device claimed"


def test_mount_returns_once_the_mount_answers_and_umount_releases(fresh, mounts):
    mp = mounts.mount(fresh)
    assert is_mounted(mp)
    assert sorted(os.listdir(mp)) == [".meta"]
    assert _claimed(fresh)
    status = json.loads(fresh.ok("status", "--json", mp).stdout)
    assert status["role"] == "master" and status["holder_pid"] == status["daemon_pid"]
    fresh.ok("umount", mp)
    assert not is_mounted(mp)
    assert not _claimed(fresh)


def test_meta_files_show_the_raw_superblock_and_log(fresh, mounts):
    mp = mounts.mount(fresh)
    with open(fresh.memory(), "rb") as f:
        raw = f.read(omf.LOG_OFFSET + omf.DEFAULT_LOG_LEN)
    assert (mp / ".meta" / ".superblock").read_bytes() == raw[: omf.SUPERBLOCK_SIZE]
    assert (mp / ".meta" / ".log").read_bytes() == raw[omf.LOG_OFFSET :]
    assert os.stat(mp / ".meta" / ".log").st_mode & 0o777 == 0o444
    with pytest.raises(PermissionError), open(mp / ".meta" / ".log", "r+b"):
        pass


def test_mount_fails_cleanly_without_a_superblock(host, mounts, tmp_path):
    host.ok("dax", "create", "dax0.0", "--size", "4g")
    _failed_mount(mounts, host, tmp_path / "m", expect="no valid famfs superblock")


def test_mount_fails_cleanly_with_a_bad_log_header(fresh, mounts, tmp_path):
    with open(fresh.memory(), "r+b") as f:
        f.seek(omf.LOG_OFFSET)
        f.write(struct.pack("<Q", 0xDEAD))
    _failed_mount(mounts, fresh, tmp_path / "m", expect="bad log header")


def test_mount_fails_cleanly_on_a_busy_device(fresh, mounts, tmp_path):
    mounts.mount(fresh, tmp_path / "first")
    mounts.mount(fresh, tmp_path / "second", expect_ok=False)
    result = mounts.last
    assert result.returncode == 1 and "busy" in result.stderr
    assert not is_mounted(tmp_path / "second")
    assert _claimed(fresh)  # still the first mount's


def test_mount_fails_cleanly_on_the_wrong_mode(fresh, mounts, tmp_path):
    fresh.ok("dax", "reconfigure", "dax0.0", "--mode", "devdax")
    _failed_mount(mounts, fresh, tmp_path / "m", expect="devdax mode")


def test_mount_fails_cleanly_on_a_missing_device(host, mounts, tmp_path):
    _failed_mount(mounts, host, tmp_path / "m", expect="does not exist")


def test_mount_fails_on_a_missing_or_busy_mount_point(fresh, mounts, tmp_path):
    result = fresh.cli("mount", "dax0.0", tmp_path / "nowhere")
    assert result.returncode == 1 and "does not exist" in result.stderr
    assert_no_traceback(result)
    mp = mounts.mount(fresh, tmp_path / "m")
    result = fresh.cli("mount", "dax0.0", mp)
    assert result.returncode == 1 and "already a mount point" in result.stderr
    plain = tmp_path / "plain"
    plain.write_text("x")
    result = fresh.cli("mount", "dax0.0", plain)
    assert result.returncode == 1 and "not a directory" in result.stderr


def test_unknown_options_are_usage_errors(fresh, tmp_path):
    (tmp_path / "m").mkdir()
    result = fresh.cli("mount", "--bogus", "dax0.0", tmp_path / "m")
    assert result.returncode == 2
    result = fresh.cli("mount", "-o", "bogus=1", "dax0.0", tmp_path / "m")
    assert result.returncode == 2 and "unknown mount option" in result.stderr


def test_options_of_the_spec_are_accepted(fresh, mounts, tmp_path):
    mp = mounts.mount(
        fresh,
        tmp_path / "m",
        "-c",
        "never",
        "-t",
        "5",
        "-v",
        "-m",  # -r or -m (not both, as upstream)
        "-o",
        "defaults,_netdev,nofail,x-systemd.automount,cache=always",
    )
    status = json.loads(fresh.ok("status", "--json", mp).stdout)
    assert status["cache"] == "always"


@pytest.mark.parametrize("attr_timeout", ["30", "0"])
def test_sigterm_unmounts_cleanly(fresh, mounts, attr_timeout):
    """Also when the kernel holds no attributes of the mount's root (-t 0, or seconds after
    the last access): the daemon's teardown once looked its own mount point up after its
    FUSE loop had stopped, and waited for its own answer for ever."""
    mp = mounts.mount(fresh, None, "-t", attr_timeout)
    pid = json.loads(fresh.ok("status", "--json", mp).stdout)["daemon_pid"]
    os.kill(pid, signal.SIGTERM)
    try:
        wait_gone(pid, 30)
    except BaseException:
        os.kill(pid, signal.SIGKILL)  # a hung daemon would hang the cleanup's umount too
        raise
    assert not is_mounted(mp)
    assert not _claimed(fresh)


def test_kill_9_then_umount_cleans_the_stale_mount_and_a_new_mount_works(fresh, mounts):
    mp = mounts.mount(fresh)
    fresh.ok("mkdir", mp / "kept")
    pid = json.loads(fresh.ok("status", "--json", mp).stdout)["daemon_pid"]
    os.kill(pid, signal.SIGKILL)
    wait_gone(pid)
    assert is_mounted(mp)  # stale: listed, its daemon gone
    result = fresh.ok("umount", mp)
    assert "stale" in result.stdout
    assert not is_mounted(mp)
    mounts.mount(fresh, mp)
    assert os.path.isdir(mp / "kept")


def test_remount_shows_the_same_tree_with_the_same_inode_numbers(fresh, mounts):
    mp = mounts.mount(fresh)
    fresh.ok("mkdir", "-p", mp / "d1" / "d2")
    fresh.ok("creat", "-s", "100", mp / "d1" / "d2" / "f")
    fresh.ok("creat", "-s", "3m", "-m", "0600", mp / "top")
    before = {
        p: (os.stat(mp / p).st_ino, os.stat(mp / p).st_mode, os.stat(mp / p).st_size)
        for p in ("d1", "d1/d2", "d1/d2/f", "top")
    }
    fresh.ok("umount", mp)
    mounts.mount(fresh, mp)
    after = {
        p: (os.stat(mp / p).st_ino, os.stat(mp / p).st_mode, os.stat(mp / p).st_size)
        for p in before
    }
    assert after == before


def test_a_handler_bug_answers_eio_and_the_daemon_keeps_serving(fresh, mounts, monkeypatch):
    monkeypatch.setenv("FAMFS_PY_TEST_FAULT", "read")
    mp = mounts.mount(fresh)
    fresh.ok("creat", "-s", "4096", mp / "f")
    with pytest.raises(OSError) as info:
        (mp / "f").read_bytes()
    assert info.value.errno == 5  # EIO
    assert os.stat(mp / "f").st_size == 4096  # still serving
    fresh.ok("status", mp)
    assert "fault injected into read" in mounts.logs()


def test_unprivileged_users_cannot_create_in_roots_directories(fresh, mounts):
    from famfs_py import protocol
    from famfs_py.channel import Channel

    mp = mounts.mount(fresh)

    def mkdir():
        with Channel(str(mp)) as chan:
            return chan.call(protocol.Mkdir("x"))

    def creat():
        with Channel(str(mp)) as chan:
            return chan.call(protocol.Creat("y", 4096))

    def status():
        with Channel(str(mp)) as chan:
            return chan.call(protocol.Status()).role

    assert "permission denied (no write permission on /)" in as_user(65534, mkdir)
    assert "permission denied (no write permission on /)" in as_user(65534, creat)
    assert as_user(65534, status) == "ok master"  # reading the state is fine
    assert not (mp / "x").exists() and not (mp / "y").exists()


def test_a_client_host_cannot_create(pair, mounts, tmp_path):
    _, client = pair
    mp = mounts.mount(client, tmp_path / "c")
    result = client.cli("mkdir", mp / "d")
    assert result.returncode == 1
    assert "read-only here because this host is a client" in result.stderr
    result = client.cli("creat", "-s", "1m", mp / "f")
    assert "this host is a client" in result.stderr


def test_other_users_meet_the_logged_modes_unless_nouseraccess(fresh, mounts, public_dir):
    """As upstream: a mount made by root lets other users in (FUSE allow_other), the log's
    modes enforced for them by the kernel; -u/--nouseraccess keeps them out."""
    tmp_path = public_dir
    mp = mounts.mount(fresh, tmp_path / "shared")
    fresh.ok("creat", "-s", "4k", "-m", "0644", mp / "open")
    fresh.ok("creat", "-s", "4k", "-m", "0600", mp / "closed")

    def read(name):
        return lambda: len(open(mp / name, "rb").read())

    assert as_user(65534, read("open")) == "ok 4096"
    assert "Permission denied" in as_user(65534, read("closed"))
    fresh.ok("umount", mp)
    for flag in ("-u", "--nouseraccess"):
        mp = mounts.mount(fresh, tmp_path / "private", flag)
        assert as_user(65534, read("open")).startswith("error")  # not even the open one
        fresh.ok("umount", mp)


def test_the_mount_reads_ahead_in_large_requests(fresh, mounts, tmp_path):
    def readahead(mp) -> int:
        dev = os.stat(mp).st_dev
        path = f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb"
        with open(path) as f:
            return int(f.read())

    mp = mounts.mount(fresh, tmp_path / "a")
    assert readahead(mp) == 4096
    fresh.ok("umount", mp)
    assert readahead(mounts.mount(fresh, tmp_path / "b", "-o", "readahead=512")) == 512


def test_mount_fails_cleanly_when_the_superblock_claims_no_room_for_the_log(
    fresh, mounts, tmp_path
):
    with open(fresh.memory(), "r+b") as f:
        f.seek(112)  # daxdev.size: not covered by the superblock's CRC
        f.write(struct.pack("<Q", 0))
    _failed_mount(mounts, fresh, tmp_path / "m", expect="the superblock says the device holds 0")
