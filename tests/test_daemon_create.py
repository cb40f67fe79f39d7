"""Creating through the master's mount (issue 24): mkdir, and files that ordinary programs
write, logged once complete (the commit rule: famfs_py/daemon/creating.py, README).

Each test mounts real filesystems and uses real system calls; the client is a second
emulated host sharing the master's memory."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import threading
import time

import pytest
from helpers import MiB, as_user, wait_until

from famfs_py import omf


@pytest.fixture
def mounted_pair(pair, mounts, tmp_path):
    master, client = pair
    mmp = mounts.mount(master, tmp_path / "mnt-master")
    cmp = mounts.mount(client, tmp_path / "mnt-client")
    return master, client, mmp, cmp


def _status(host, mp) -> dict:
    return json.loads(host.ok("status", "--json", mp).stdout)


def _allocated(host, mp) -> int:
    return int(_status(host, mp)["capacity"]["allocated"])


def _log_used(host, mp) -> int:
    return int(_status(host, mp)["log"]["used"])


def _errno_of(action) -> int | None:
    try:
        action()
    except OSError as exc:
        return exc.errno
    return None


# -- mkdir ------------------------------------------------------------------------------------
def test_mkdir_through_the_mount_is_logged_with_the_callers_mode_under_umask(mounted_pair):
    master, client, mmp, cmp = mounted_pair
    old = os.umask(0o027)
    try:
        os.mkdir(mmp / "d", 0o777)
    finally:
        os.umask(old)
    st = os.stat(mmp / "d")
    assert st.st_mode & 0o7777 == 0o750 and (st.st_uid, st.st_gid) == (0, 0)
    subprocess.run(["mkdir", "-p", str(mmp / "a/b/c")], check=True)
    wait_until(
        timeout=30, condition=lambda: (cmp / "a/b/c").is_dir(), what="the client seeing mkdir -p"
    )
    assert os.stat(cmp / "d").st_mode & 0o7777 == 0o750
    assert _errno_of(lambda: os.mkdir(mmp / "d")) == errno.EEXIST
    long_name = "x" * 80
    assert _errno_of(lambda: os.mkdir(mmp / long_name)) == errno.ENAMETOOLONG


def test_a_path_longer_than_the_format_allows_is_enametoolong(fresh, mounts):
    mp = mounts.mount(fresh)
    os.mkdir(mp / ("d" * 40))
    name = "f" * 39  # 40 + 1 + 39 = 80 bytes: one more than the format's 79
    assert _errno_of(lambda: open(mp / ("d" * 40) / name, "wb")) == errno.ENAMETOOLONG
    (mp / ("d" * 40) / name[:-1]).write_bytes(b"fits")  # 79 bytes: fine


def test_a_client_refuses_every_create_with_erofs_and_says_where(pair, mounts, tmp_path):
    master, client = pair
    mounts.mount(master, tmp_path / "mnt-master")
    cmp = mounts.mount(client, tmp_path / "mnt-client", "--rw")
    for action in (
        lambda: os.mkdir(cmp / "d"),
        lambda: open(cmp / "f", "wb"),
        lambda: os.mknod(cmp / "n"),
    ):
        assert _errno_of(action) == errno.EROFS
    assert "this host is a client; create on the master" in mounts.logs()


# -- files --------------------------------------------------------------------------------------
def test_fsync_commits_at_once_and_the_client_sees_the_whole_file(mounted_pair):
    master, client, mmp, cmp = mounted_pair
    data = os.urandom(5 * MiB + 123)
    used = _log_used(master, mmp)
    with open(mmp / "f.bin", "wb") as f:
        f.write(data)
        f.flush()
        assert not (cmp / "f.bin").exists()  # pending: not in the log
        os.fsync(f.fileno())
        assert _log_used(master, mmp) == used + 1  # committed before fsync returned
        wait_until(
            timeout=30, condition=lambda: (cmp / "f.bin").exists(), what="the client seeing f.bin"
        )
        assert (cmp / "f.bin").read_bytes() == data
        # committed: it cannot grow any more; rewriting within its size works
        assert _errno_of(lambda: os.pwrite(f.fileno(), b"x", len(data))) == errno.EFBIG
        assert os.pwrite(f.fileno(), b"HEAD", 0) == 4
    assert (cmp / "f.bin").read_bytes() == b"HEAD" + data[4:]
    st = os.stat(cmp / "f.bin")
    assert st.st_size == len(data) and st.st_mode & 0o777 == 0o644 - (0o644 & os.umask(0o022))


def test_the_unused_tail_is_given_back_at_commit(fresh, mounts):
    mp = mounts.mount(fresh)
    before = _allocated(fresh, mp)
    fd = os.open(mp / "grown", os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        for _ in range(9):  # grows in doubling runs: 2, 4, 8, 16 MiB allocated
            assert os.write(fd, os.urandom(MiB)) == MiB
        assert _allocated(fresh, mp) - before == 16 * MiB
        os.fsync(fd)
    finally:
        os.close(fd)
    assert _allocated(fresh, mp) - before == 10 * MiB  # 9 MiB in whole 2 MiB units
    out = fresh.ok("getmap", mp / "grown").stdout
    assert out.count("offset") <= omf.MAX_SIMPLE_EXTENTS


def test_a_closed_file_is_committed_after_the_delay_with_its_final_attributes(mounted_pair, mounts):
    master, client, mmp, cmp = mounted_pair
    path = mmp / "late.txt"
    path.write_bytes(b"written then chmod+chown")
    os.chmod(path, 0o600)  # a pending file's mode and owner are its entry's
    os.chown(path, 1234, 4321)
    wait_until(
        timeout=30,
        condition=lambda: (cmp / "late.txt").exists(),
        what="the commit after the last close",
    )
    st = os.stat(cmp / "late.txt")
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o600, 1234, 4321)
    assert (cmp / "late.txt").read_bytes() == b"written then chmod+chown"
    # committed: what the log cannot record is refused, and the daemon says why
    assert _errno_of(lambda: os.chmod(path, 0o644)) == errno.EPERM
    assert _errno_of(lambda: os.unlink(path)) == errno.EPERM
    assert _errno_of(lambda: os.rename(path, mmp / "other")) == errno.EPERM
    assert _errno_of(lambda: os.truncate(path, 1)) == errno.EPERM
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        assert _errno_of(lambda: os.write(fd, b"more")) == errno.EFBIG
    finally:
        os.close(fd)
    logs = mounts.logs()
    for why in ("cannot record a mode change", "cannot record removing", "cannot grow"):
        assert why in logs


def test_a_full_device_is_enospc_and_leaves_no_file_and_no_space(fresh, mounts):
    mp = mounts.mount(fresh)
    before = _allocated(fresh, mp)
    free = os.statvfs(mp).f_bavail * os.statvfs(mp).f_frsize
    result = subprocess.run(
        ["dd", "if=/dev/zero", f"of={mp / 'huge'}", "bs=4M", f"count={free // (4 * MiB) + 4}"],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0 and "No space left on device" in result.stderr
    wait_until(
        timeout=30,
        condition=lambda: not (mp / "huge").exists(),
        what="the failed file being dropped",
    )
    assert _allocated(fresh, mp) == before
    (mp / "small").write_bytes(b"still works")
    assert (mp / "small").read_bytes() == b"still works"


def test_removing_or_renaming_a_pending_file_changes_its_pending_entry(mounted_pair):
    master, client, mmp, cmp = mounted_pair
    before = _allocated(master, mmp)
    with open(mmp / ".tmp-x", "wb") as f:
        f.write(b"x" * 100)
    os.unlink(mmp / ".tmp-x")  # before its commit: gone, its space back
    assert _allocated(master, mmp) == before
    with open(mmp / ".tmp-y", "wb") as f:
        f.write(b"final bytes")
    os.rename(mmp / ".tmp-y", mmp / "final")  # closed and renamed: committed at once
    wait_until(
        timeout=30,
        condition=lambda: (cmp / "final").exists(),
        what="the renamed file on the client",
    )
    assert (cmp / "final").read_bytes() == b"final bytes"
    assert not (cmp / ".tmp-y").exists() and not (cmp / ".tmp-x").exists()


def test_a_client_never_sees_a_partial_file(mounted_pair):
    master, client, mmp, cmp = mounted_pair
    chunks = [os.urandom(256 * 1024) for _ in range(24)]
    whole = b"".join(chunks)
    seen: list[int] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            try:
                seen.append(len((cmp / "slow.bin").read_bytes()))
            except FileNotFoundError:
                pass

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        with open(mmp / "slow.bin", "wb") as f:
            for chunk in chunks:
                f.write(chunk)
                f.flush()
                time.sleep(0.02)  # the master writes slowly; the client keeps looking
        wait_until(lambda: bool(seen), timeout=30, what="the client seeing slow.bin")
    finally:
        stop.set()
        poller.join()
    assert set(seen) == {len(whole)}
    assert (cmp / "slow.bin").read_bytes() == whole


def test_posix_rules_decide_who_creates_where(public_mount):
    host, mp = public_mount
    os.mkdir(mp / "mine", 0o755)  # root's, 0755: others may not create in it
    old = os.umask(0)
    try:
        os.mkdir(mp / "world", 0o777)
    finally:
        os.umask(old)

    def create_in(directory: str) -> str:
        os.umask(0o022)
        path = mp / directory / "by-nobody"
        with open(path, "wb") as f:
            f.write(b"mine")
        st = os.stat(path)
        return f"{st.st_uid}:{st.st_gid}:{st.st_mode & 0o777:o}"

    assert as_user(65534, lambda: create_in("mine")).startswith(f"error {errno.EACCES}")
    assert as_user(65534, lambda: create_in("world")) == "ok 65534:65534:644"
    assert as_user(65534, lambda: os.mkdir(mp / "x")).startswith(f"error {errno.EACCES}")

    def change_own_file() -> str:
        path = mp / "world" / "nobodys"
        path.write_bytes(b"x")
        os.chmod(path, 0o600)  # the owner may, before the commit
        try:
            os.chown(path, 0, 0)  # giving it away: only root (chown(2))
        except OSError as exc:
            return f"chown {exc.errno}"
        return "chown allowed"

    assert as_user(65534, change_own_file) == f"ok chown {errno.EPERM}"
    wait_until(
        timeout=30,
        condition=lambda: os.stat(mp / "world" / "nobodys").st_mode & 0o777 == 0o600,
        what="nobody's file with its mode",
    )
    assert os.stat(mp / "world" / "nobodys").st_uid == 65534


def test_a_directory_takes_the_mode_set_after_filling_it(mounted_pair):
    """tar -x, cp -a and rsync make a directory, fill it, then set its mode: a pending
    directory takes it, and is logged (before what is in it) once its tree is quiet."""
    master, client, mmp, cmp = mounted_pair
    os.mkdir(mmp / "tree", 0o700)
    (mmp / "tree" / "f").write_bytes(b"inside")
    os.chmod(mmp / "tree", 0o755)
    wait_until(
        timeout=30, condition=lambda: (cmp / "tree" / "f").exists(), what="the tree on the client"
    )
    assert os.stat(cmp / "tree").st_mode & 0o7777 == 0o755
    os.mkdir(mmp / "empty")
    os.rmdir(mmp / "empty")  # pending: removable
    assert _errno_of(lambda: os.rmdir(mmp / "tree")) == errno.EPERM  # logged: not


def test_famfs_py_creat_in_a_pending_directory_logs_the_directory_first(mounted_pair):
    master, client, mmp, cmp = mounted_pair
    os.makedirs(mmp / "p" / "q")
    master.ok("creat", "-s", "4096", mmp / "p" / "q" / "c")
    wait_until(
        timeout=30,
        condition=lambda: (cmp / "p" / "q" / "c").exists(),
        what="c and its parents on the client",
    )
    assert os.stat(cmp / "p" / "q" / "c").st_size == 4096


def test_commands_on_a_file_still_being_written_say_it_is_not_logged(fresh, mounts):
    mp = mounts.mount(fresh)
    fd = os.open(mp / "open.bin", os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.write(fd, b"pending")
        for args in (("getmap", mp / "open.bin"), ("verify", "-S", "1", "-f", mp / "open.bin")):
            result = fresh.cli(*args)
            assert result.returncode != 0 and "Traceback" not in result.out, result.out
        assert "not a logged file" in fresh.cli("getmap", mp / "open.bin").out
    finally:
        os.close(fd)
