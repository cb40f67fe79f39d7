"""Least privilege: an unprivileged user of a shared mount gets what the file modes allow and
nothing more: no device memory or descriptor unless it could open the device itself, every
control op under its rule, and commands that fall back to the mount where they may."""

from __future__ import annotations

import contextlib
import errno
import importlib
import io
import json
import os
import socket
import tempfile
from pathlib import Path

import pytest
from helpers import MiB, as_user

import famfs_py
from famfs_py import channel, credentials, protocol, wire
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


MEMBER = 65533  # a user in the device's group (the pid-reuse test)


def _take_pid(pid: int, groups: tuple[int, ...], uid: int, attempts: int = 200) -> tuple[int, int]:
    """Start a process of `uid` with `groups` at exactly `pid` (ns_last_pid, as root; other
    processes on the machine may take it first, hence the retries). Returns its pid and a
    pipe to close to let it exit."""
    for _ in range(attempts):
        ready_r, ready_w = os.pipe()
        hold_r, hold_w = os.pipe()
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:
            f.write(str(pid - 1))
        child = os.fork()
        if child == 0:
            try:
                os.close(hold_w)
                os.close(ready_r)
                os.setgroups(list(groups))
                os.setgid(uid)
                os.setuid(uid)
                os.write(ready_w, b"x")
                os.read(hold_r, 1)
            finally:
                os._exit(0)
        os.close(ready_w)
        os.close(hold_r)
        os.read(ready_r, 1)
        os.close(ready_r)
        if child == pid:
            return child, hold_w
        os.close(hold_w)
        os.waitpid(child, 0)
    pytest.fail(f"could not start a process at pid {pid} in {attempts} attempts")


def _groups_of(pid: int) -> set[int]:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Groups:"):
                return {int(g) for g in line.split()[1:]}
    return set()


def test_a_reused_pid_gives_a_strangers_connection_no_groups(shared):
    """Issue 28 item 1: a stranger connects from a child that exits; a process of a member of
    the device's group is made to take that pid; the stranger then asks for `map` on the
    connection it kept. The daemon judges the connection by who connected, not by whoever
    holds the pid now."""
    host, mp = shared
    memory = os.path.realpath(host.node())
    os.chown(memory, 0, DEVICE_GROUP)
    os.chmod(memory, 0o640)  # members of the group may map files (read)
    path = str(channel.control_socket(str(mp), channel.mount_owner(str(mp))))
    to_test, to_attacker = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)

    attacker = os.fork()
    if attacker == 0:  # the stranger: nobody, in no group
        try:
            to_test.close()
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            connector = os.fork()
            if connector == 0:  # connects, makes sure it was accepted, and exits
                sock.connect(path)
                sock.send(protocol.Status().encode())
                sock.recv(wire.MAX_MESSAGE)
                os._exit(0)
            os.waitpid(connector, 0)
            to_attacker.send(str(connector).encode())  # its pid is free now
            to_attacker.recv(16)  # ... and taken by a member's process
            sock.send(protocol.Map("public").encode())
            data, fds, _, _ = socket.recv_fds(sock, wire.MAX_MESSAGE, wire.MAX_FDS)
            try:
                reply = wire.decode_answer(data)
                text = f"mapped {sorted(reply)[:2]} fds={len(fds)}"
            except Exception as exc:
                text = f"error {getattr(exc, 'errno', None)} {exc}"
            to_attacker.send(text.encode())
        finally:
            os._exit(0)
    to_attacker.close()
    try:
        freed = int(to_test.recv(16))
        member, release = _take_pid(freed, (DEVICE_GROUP,), MEMBER)
        try:
            assert DEVICE_GROUP in _groups_of(freed)  # the pid is a member's now
            to_test.send(b"go")
            text = to_test.recv(4096).decode()
        finally:
            os.close(release)
            os.waitpid(member, 0)
    finally:
        to_test.close()
        os.waitpid(attacker, 0)
    assert text.startswith(f"error {errno.EACCES}"), text
    assert "needs read access to the device" in text


def test_groups_are_those_the_peer_had_at_connect_time_even_hundreds():
    """SO_PEERGROUPS, past the 256 groups Python's getsockopt can read."""
    groups = (*range(100000, 100299), DEVICE_GROUP)

    def peer():
        left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with left, right:
            caller = credentials.peer_credentials(left)
        return sorted(caller.groups) == sorted({NOBODY, *groups})

    assert as_user(NOBODY, peer, groups=groups) == "ok True"
    assert as_user(NOBODY, peer, groups=()) == "ok False"


def test_meta_hides_the_log_from_other_users(shared):
    """Issue 28 item 6: .meta/.log lists the names, owners and extents of files in 0700
    directories; .meta is 0700, as upstream's is."""
    host, mp = shared
    assert os.stat(mp / ".meta").st_mode & 0o777 == 0o700
    assert b"inside" in (mp / ".meta" / ".log").read_bytes()  # root (the owner) reads it
    for action in (
        lambda: os.listdir(mp / ".meta"),
        lambda: len(open(mp / ".meta" / ".log", "rb").read()),
        _ask(mp, protocol.Getmap(".meta/.log")),
    ):
        assert as_user(NOBODY, action).startswith(f"error {errno.EACCES}")


def test_deeply_nested_requests_cost_one_answer_and_no_log(shared, mounts):
    """Issue 28 item 5: a request of 60,000 '[' logged a whole traceback as 'internal
    error' (20,000 of them: 20 MB of log in 4 s). It is answered as malformed; the
    daemon's log does not grow."""
    host, mp = shared
    (daemon_log,) = mounts.log_dir.glob("*.log")
    before = daemon_log.stat().st_size
    path = str(channel.control_socket(str(mp), 0))
    for _ in range(200):
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
            sock.settimeout(10)
            sock.connect(path)
            sock.send(b"[" * 60000)
            reply = json.loads(sock.recv(wire.MAX_MESSAGE))
        assert reply["ok"] is False and reply["errno"] == errno.EINVAL, reply
        assert "nested too deeply" in reply["error"], reply
    grown = daemon_log.stat().st_size - before
    print(f"daemon log growth over 200 nested requests: {grown} bytes")
    assert grown == 0


def test_a_user_over_the_connection_cap_hears_the_daemons_reason(shared):
    """Issue 28 item 10: the 65th connection heard 'internal error: ConnectionResetError'
    (the daemon's refusal was never read)."""
    host, mp = shared

    def over_the_cap():
        held = [Channel(str(mp)) for _ in range(64)]
        try:
            with Channel(str(mp)) as chan:
                chan.call(protocol.Status())
        finally:
            for chan in held:
                chan.close()
        return "served"

    text = as_user(NOBODY, over_the_cap)
    assert text.startswith(f"error {errno.EAGAIN}") and "connections open" in text, text


def test_chkread_without_permission_says_so_not_miscompare(shared):
    host, mp = shared
    text = as_user(NOBODY, _cli("chkread", str(mp / "secret")))
    assert text.startswith("ok 1") and "cannot compare" in text, text
    assert "miscompare" not in text
