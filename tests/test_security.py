"""Least privilege: an unprivileged user of a shared mount gets what the file modes allow and
nothing more: no device memory or descriptor unless it could open the device itself, every
control op under its rule, and commands that fall back to the mount where they may."""

from __future__ import annotations

import contextlib
import errno
import importlib
import io
import os
import tempfile
from pathlib import Path

import pytest
from helpers import MiB, as_user

import famfs_py
from famfs_py import protocol
from famfs_py.channel import Channel

NOBODY = 65534
DEVICE_GROUP = 4242  # a group the tests give the device to

# the forked children run as nobody, who may not read this interpreter's own files where it
# lives under /root: everything they use is imported here, first
from famfs_py.cli.main import COMMANDS  # noqa: E402

for _module, _summary in COMMANDS.values():
    importlib.import_module(f"famfs_py.cli.{_module}")
importlib.import_module("famfs_py.fs.pattern")
importlib.import_module("famfs_py.api")


def _ask(mp: Path, request: protocol.Request):
    def action():
        with Channel(str(mp)) as chan:
            reply, fds = chan.call_fds(request)
        for fd in fds:
            os.close(fd)
        return sorted(reply.to_fields())[:2]

    return action


def _cli(*argv: str):
    """The real command line, in this (forked) process: its exit code and its stderr."""

    def action():
        from famfs_py.cli.main import main

        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(list(argv))
        return f"{code} {err.getvalue().strip()}"

    return action


def _device_mappings(memory: str) -> list[str]:
    inode = os.stat(memory).st_ino
    with open("/proc/self/maps") as f:
        return [line for line in f if len(line.split()) >= 6 and int(line.split()[4]) == inode]


def _device_fds(memory: str) -> list[str]:
    real = os.path.realpath(memory)
    fds = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.path.realpath(f"/proc/self/fd/{fd}") == real:
                fds.append(fd)
    return fds


@pytest.fixture
def shared(public_mount):
    host, mp = public_mount
    host.ok("creat", "-s", "1m", "-m", "0644", mp / "public")
    host.ok("creat", "-s", "1m", "-m", "0600", mp / "secret")
    host.ok("mkdir", "-m", "0700", mp / "closed")
    host.ok("creat", "-s", "1m", "-m", "0644", mp / "closed" / "inside")
    host.ok("mkdir", "-m", "0755", "-u", str(NOBODY), "-g", str(NOBODY), mp / "theirs")
    assert os.stat(host.node()).st_mode & 0o077 == 0  # emulated memory is private, as devdax
    return host, mp


def test_open_mapped_leaves_no_device_memory_with_a_user_who_cannot_open_the_device(shared):
    host, mp = shared
    memory = os.path.realpath(host.node())

    def try_it():
        try:
            famfs_py.open_mapped(mp / "public")
        except PermissionError as exc:
            left = _device_mappings(memory) + _device_fds(memory)
            return f"refused {exc.errno} {exc} left={left}"
        return "mapped"

    text = as_user(NOBODY, try_it)
    assert text.startswith(f"ok refused {errno.EACCES}"), text
    assert "left=[]" in text
    assert "needs read access to the device" in text and "through the mount" in text
    assert as_user(NOBODY, lambda: len(open(mp / "public", "rb").read())) == f"ok {MiB}"


def test_a_member_of_the_devices_group_gets_the_zero_copy_view(shared):
    host, mp = shared
    memory = os.path.realpath(host.node())
    os.chown(memory, 0, DEVICE_GROUP)
    os.chmod(memory, 0o640)  # the group may read, not write
    with open(mp / "public", "r+b") as f:
        f.write(b"shared bytes")

    def read():
        with famfs_py.open_mapped(mp / "public") as m:
            return m[:12]

    def write():
        with famfs_py.open_mapped(mp / "theirs" / "f", "r+") as m:
            m[:3] = b"abc"
            return "wrote"

    assert as_user(NOBODY, read, groups=(DEVICE_GROUP,)) == "ok b'shared bytes'"
    assert as_user(NOBODY, read).startswith(f"error {errno.EACCES}")  # not in the group
    host.ok("creat", "-s", "4k", "-m", "0600", "-u", str(NOBODY), mp / "theirs" / "f")
    assert as_user(NOBODY, write, groups=(DEVICE_GROUP,)).startswith(f"error {errno.EACCES}")
    os.chmod(memory, 0o660)  # now the group may write too
    assert as_user(NOBODY, write, groups=(DEVICE_GROUP,)) == "ok wrote"
    assert (mp / "theirs" / "f").read_bytes()[:3] == b"abc"


def test_every_control_op_follows_its_rule_for_an_unprivileged_caller(shared):
    host, mp = shared
    ok = {
        "status": protocol.Status(),
        "getmap of a readable file": protocol.Getmap("public"),
        "creat in a directory of one's own": protocol.Creat("theirs/mine", 4096),
        "mkdir in a directory of one's own": protocol.Mkdir("theirs/sub/deeper", parents=True),
        "mkdir -p of what is there": protocol.Mkdir("theirs", parents=True),
        "invalidate of a readable file": protocol.Invalidate("public"),
        "flush of a readable file": protocol.Flush("public"),
    }
    refused = {
        "getmap of a 0600 file": (protocol.Getmap("secret"), errno.EACCES),
        "getmap through a 0700 directory": (protocol.Getmap("closed/inside"), errno.EACCES),
        "creat in a root directory": (protocol.Creat("mine", 4096), errno.EACCES),
        "mkdir in a root directory": (protocol.Mkdir("d"), errno.EACCES),
        "creat for another owner": (protocol.Creat("theirs/x", 4096, uid=0), errno.EPERM),
        "creat for another group": (protocol.Creat("theirs/y", 4096, gid=0), errno.EPERM),
        "map without device access": (protocol.Map("public"), errno.EACCES),
        "flush of a 0600 file": (protocol.Flush("secret"), errno.EACCES),
        "flush through a 0700 directory": (protocol.Flush("closed/inside"), errno.EACCES),
        "fsck": (protocol.Fsck(), errno.EPERM),
        "logplay": (protocol.Logplay(), errno.EPERM),
        "clone": (protocol.Clone("public", "theirs/c"), errno.EPERM),
        "device": (protocol.Device(), errno.EPERM),
    }
    for what, request in ok.items():
        assert as_user(NOBODY, _ask(mp, request)).startswith("ok"), what
    for what, (request, code) in refused.items():
        text = as_user(NOBODY, _ask(mp, request))
        assert text.startswith(f"error {code}"), (what, text)
    assert os.stat(mp / "theirs" / "mine").st_uid == NOBODY  # the caller owns what it made
    assert os.stat(mp / "theirs" / "sub" / "deeper").st_uid == NOBODY
    assert not (mp / "mine").exists() and not (mp / "d").exists()


def test_fsck_through_the_daemon_is_for_root_and_the_owner(shared):
    host, mp = shared
    text = as_user(NOBODY, _cli("fsck", str(mp)))
    assert text.startswith("ok ") and not text.startswith("ok 0"), text
    assert "only root or the mount's owner may use fsck" in text
    host.ok("fsck", mp)


def test_cp_creat_and_verify_work_through_the_mount_for_a_user_without_the_device(shared):
    host, mp = shared
    with tempfile.NamedTemporaryFile(dir="/tmp", delete=False) as src:
        src.write(os.urandom(3 * MiB + 5))
    try:
        os.chmod(src.name, 0o644)
        dest = mp / "theirs" / "copy"
        assert as_user(NOBODY, _cli("cp", src.name, str(dest))) == "ok 0 ", "cp"
        assert dest.read_bytes() == Path(src.name).read_bytes()
        assert os.stat(dest).st_uid == NOBODY
        filled = mp / "theirs" / "filled"
        assert as_user(NOBODY, _cli("creat", "-s", "2m", "-r", "-S", "9", str(filled))) == "ok 0 "
        assert as_user(NOBODY, _cli("verify", "-S", "9", "-f", str(filled))) == "ok 0 "
        host.ok("verify", "-S", "9", "-f", filled)  # the same bytes as root sees them in memory
        text = as_user(NOBODY, _cli("cp", src.name, str(mp / "nope")))
        assert text.startswith("ok 1") and "permission denied" in text, text
    finally:
        os.unlink(src.name)
