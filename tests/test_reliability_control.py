"""Reliability campaign, security: the control channel refuses unprivileged callers and
malformed requests without the daemon dying, never reaches outside the mount, and the log's
modes and owners hold for other users."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import as_user, assert_no_traceback, is_mounted, wait_gone, wait_until

from famfs_py import channel, protocol, wire
from famfs_py.channel import Channel
from famfs_py.dax import holder
from famfs_py.dax.device import device_in_root

NOBODY = 65534
DEVICE_GROUP = 4242


@pytest.fixture
def master(fresh, mounts):
    return fresh, mounts.mount(fresh)


def _raw_request(mountpoint: Path, payload: bytes, timeout: float = 10) -> dict:
    """Send bytes as they are (no JSON encoding) and decode the daemon's answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
        sock.settimeout(timeout)
        sock.connect(str(channel.control_socket(str(mountpoint), 0)))
        sock.send(payload)
        data, fds, _flags, _addr = socket.recv_fds(sock, wire.MAX_MESSAGE, 4)
        for fd in fds:
            os.close(fd)
    return json.loads(data)


def _still_serving(host, mp: Path) -> dict:
    status = json.loads(host.ok("status", "--json", mp).stdout)
    assert status["health"] == "ok", status
    return status


def test_unprivileged_callers_may_look_but_not_change_or_map_the_device(master):
    host, mp = master
    host.ok("creat", "-s", "4k", "-m", "0600", mp / "secret")
    host.ok("creat", "-s", "4k", "-m", "0644", mp / "public")

    def call(request: protocol.Request):
        def action():
            with Channel(str(mp)) as chan:
                reply, fds = chan.call_fds(request)
            for fd in fds:
                os.close(fd)
            return sorted(reply.to_fields())[:3]

        return action

    refused = {
        "mkdir": call(protocol.Mkdir("x")),
        "mkdir -p": call(protocol.Mkdir("x/y", parents=True)),
        "creat": call(protocol.Creat("y", 4096)),
        "clone": call(protocol.Clone("public", "z")),
        "device": call(protocol.Device()),
        "map secret": call(protocol.Map("secret")),
        "map public for writing": call(protocol.Map("public", write=True)),
    }
    for what, action in refused.items():
        text = as_user(NOBODY, action)
        assert text.startswith("error"), f"{what}: {text}"
        assert "only root or the mount's owner" in text or "ermission denied" in text, text
    assert as_user(NOBODY, call(protocol.Status())).startswith("ok")
    assert as_user(NOBODY, call(protocol.Getmap("public"))).startswith("ok")  # 0644: readable
    # and its memory only for those who could open the device (test_security.py)
    assert as_user(NOBODY, call(protocol.Map("public"))).startswith(f"error {errno.EACCES}")
    status = _still_serving(host, mp)
    assert (status["files"], status["directories"]) == (2, 0)


MALFORMED: list[bytes] = [
    b"\x00",
    os.urandom(64),
    b"\xff\xfe\xfd",
    b"{",
    b"[]",
    b"null",
    b'"creat"',
    b"123",
    b"NaN",
    b'{"op": 5}',
    b'{"op": null}',
    b'{"op": "nope"}',
    b'{"op": "__init__"}',
    b'{"op": "_dispatch"}',
    b'{"op": "creat"}',
    b'{"op": "creat", "path": "f"}',
    b'{"op": "mkdir"}',
    b'{"op": "getmap", "path": ".meta"}',
    b'{"op": "map", "path": "."}',
    b'{"op": "clone", "path": "c"}',
    b'{"op": "invalidate", "path": ".meta/.log"}',
    b'{"op": "flush", "path": "."}',
    b'{"op": "flush", "path": "f", "offset": -1}',
    b'{"op": "flush", "path": "f", "offset": 4097}',
    b'{"op": "flush", "path": "f", "length": "all"}',
    b'{"op": "flush", "path": "f", "length": 1e300}',
]
FIELDS: list[dict[str, object]] = [
    {"size": "abc"},
    {"size": [1]},
    {"size": {}},
    {"size": None},
    {"size": -1},
    {"size": 0},
    {"size": 2**62},
    {"size": 2**70},
    {"size": 1e300},
    {"size": float("nan")},
    {"mode": "rwx"},
    {"mode": -1},
    {"mode": 2**40},
    {"uid": -1},
    {"uid": 2**40},
    {"gid": "zero"},
    {"gid": 2**33},
    {"nstrips": "x"},
    {"nstrips": -3, "nbuckets": 4},
    {"nstrips": 2**70, "nbuckets": 2**70},
    {"nstrips": 2, "nbuckets": 4, "chunk_size": 3},
    {"nstrips": 2, "nbuckets": 4, "chunk_size": 2**70},
    {"path": 5},
    {"path": None},
    {"path": ["a"]},
    {"path": ""},
    {"path": "/"},
    {"path": ".."},
    {"path": "../escape"},
    {"path": "a/../../escape"},
    {"path": "/etc/passwd-famfs-py-test"},
    {"path": "nul\x00byte"},
    {"path": "x" * 80},
    {"path": "x" * 100000},
    {"path": ".meta/new"},
    {"path": ".meta"},
    {"path": "missing/child"},
]


OP_FIELDS: dict[str, set[str]] = {
    "creat": {"path", "size", "mode", "uid", "gid", "nstrips", "nbuckets", "chunk_size"},
    "mkdir": {"path", "mode", "uid", "gid"},
    "clone": {"path"},
    "getmap": {"path"},
    "map": {"path"},
    "invalidate": {"path"},
}


def test_malformed_requests_are_answered_and_the_daemon_keeps_serving(master, tmp_path):
    host, mp = master
    host.ok("creat", "-s", "4k", mp / "f")
    sent = 0
    for payload in MALFORMED:
        reply = _raw_request(mp, payload)
        assert reply["ok"] is False and "internal error" not in reply["error"], (payload, reply)
        sent += 1
    created = []
    for op, uses in OP_FIELDS.items():
        for k, fields in enumerate(FIELDS):
            if not set(fields) <= uses:
                continue  # a field this request ignores
            request = {"op": op, "path": f"{op}{k}", "size": 4096, "source": "f", **fields}
            reply = _raw_request(mp, json.dumps(request).encode())
            assert "internal error" not in reply.get("error", ""), (request, reply)
            if reply["ok"] and op in ("creat", "mkdir", "clone"):
                created.append(reply.get("path") or reply["created"][0])
            sent += 1
    # every field above is wrong: nothing may have been created
    assert created == [], created
    for request in ({"op": "fsck", "nbuckets": 10**9}, {"op": "fsck", "nbuckets": -5}):
        reply = _raw_request(mp, json.dumps(request).encode())
        assert reply["ok"] is False and reply["errno"] == errno.EINVAL, reply
    # a message larger than the daemon reads: refused, or cut and answered as malformed
    try:
        reply = _raw_request(mp, b'{"op": "status", "pad": "' + b"x" * (4 << 20) + b'"}')
    except OSError as exc:
        assert exc.errno == errno.EMSGSIZE
    else:
        assert reply["ok"] is False
    # nothing was created, inside the mount or outside it
    status = _still_serving(host, mp)
    assert sorted(os.listdir(mp)) == [".meta", "f"]
    assert (status["files"], status["directories"]) == (1, 0)
    assert not Path("/etc/passwd-famfs-py-test").exists()
    assert not (mp.parent / "escape").exists()
    assert sent >= 100


def test_a_silent_or_flooding_client_does_not_stop_the_daemon(master):
    host, mp = master
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    silent.connect(str(channel.control_socket(str(mp), 0)))  # connects and never speaks
    errors: list[BaseException] = []

    def flood() -> None:
        try:
            for _ in range(25):
                with Channel(str(mp), timeout=10) as chan:
                    chan.call(protocol.Status())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=flood) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    silent.close()
    assert not errors, errors
    _still_serving(host, mp)


@pytest.fixture
def shared_mount(fresh, mounts):
    """A master mount with --allow-other in a directory other users can reach."""
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="famfs-py-public-", dir="/tmp"))
    os.chmod(path, 0o755)
    try:
        yield fresh, mounts.mount(fresh, path / "shared", "--allow-other")
    finally:
        mounts.cleanup()  # unmount before the directory goes
        shutil.rmtree(path, ignore_errors=True)


def test_other_users_meet_the_logged_modes_and_owners_on_every_path(shared_mount):
    host, mp = shared_mount
    host.ok("mkdir", "-m", "0700", mp / "private")
    host.ok("creat", "-s", "4k", mp / "private" / "inside")
    host.ok("mkdir", "-m", "0755", mp / "open")
    host.ok("creat", "-s", "4k", "-m", "0644", mp / "open" / "readable")
    host.ok("creat", "-s", "4k", "-m", "0600", mp / "open" / "roots")
    host.ok("creat", "-s", "4k", "-m", "0600", "-u", str(NOBODY), mp / "open" / "nobodys")

    def read(path: Path):
        return lambda: len(path.read_bytes())

    def write(path: Path):
        def action():
            with open(path, "r+b") as f:
                return f.write(b"x")

        return action

    def listdir(path: Path):
        return lambda: sorted(os.listdir(path))

    import famfs_py.api  # imported here: the unprivileged child cannot read the interpreter's lib

    def mapped(path: Path, mode: str):
        def action():
            with famfs_py.api.open_mapped(str(path), mode) as m:
                return len(m)

        return action

    memory = os.path.realpath(host.node())
    os.chown(memory, 0, DEVICE_GROUP)
    os.chmod(memory, 0o660)  # a group that may use the device (the mapped views)
    allowed = {
        "read 0644": read(mp / "open" / "readable"),
        "read own 0600": read(mp / "open" / "nobodys"),
        "write own 0600": write(mp / "open" / "nobodys"),
        "list 0755": listdir(mp / "open"),
        "map 0644 r": mapped(mp / "open" / "readable", "r"),
        "map own 0600 r+": mapped(mp / "open" / "nobodys", "r+"),
    }
    denied = {
        "write 0644": write(mp / "open" / "readable"),
        "read root's 0600": read(mp / "open" / "roots"),
        "list 0700": listdir(mp / "private"),
        "read inside 0700": read(mp / "private" / "inside"),
        "map 0644 r+": mapped(mp / "open" / "readable", "r+"),
        "map root's 0600 r": mapped(mp / "open" / "roots", "r"),
    }
    for what, action in allowed.items():
        assert as_user(NOBODY, action, (DEVICE_GROUP,)).startswith("ok"), what
    for what, action in denied.items():
        text = as_user(NOBODY, action, (DEVICE_GROUP,))
        assert text.startswith("error") and ("ermission" in text or "13" in text), (what, text)
    assert (mp / "open" / "readable").read_bytes() == bytes(4096)  # nothing was written
    _still_serving(host, mp)


def _impostor(path: Path, ready_fd: int) -> None:
    """In a forked child: bind a socket at `path` as root, give the file to nobody, become
    nobody, and answer every request with a convincing lie."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as listener:
        listener.bind(str(path))
        os.chown(path, NOBODY, NOBODY)
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
        listener.listen(8)
        os.write(ready_fd, b"ready")
        while True:
            conn, _ = listener.accept()
            with conn:
                while conn.recv(wire.MAX_MESSAGE):
                    lie = {"ok": True, "role": "master", "daemon_pid": 1, "health": "ok"}
                    conn.send(json.dumps(lie).encode())


@contextlib.contextmanager
def _impostor_at(where: str | Path) -> Iterator[int]:
    path = Path(where)
    read_fd, write_fd = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            _impostor(path, write_fd)
        finally:
            os._exit(0)
    try:
        os.close(write_fd)
        assert os.read(read_fd, 5) == b"ready"
        yield child
    finally:
        os.kill(child, 9)
        os.waitpid(child, 0)
        os.close(read_fd)
        path.unlink(missing_ok=True)


def _kill_daemon(host, mp: Path) -> None:
    pid = json.loads(host.ok("status", "--json", mp).stdout)["daemon_pid"]
    os.kill(pid, 9)
    wait_gone(pid)


def test_another_user_cannot_take_a_dead_daemons_socket(master):
    host, mp = master
    path = Path(channel.control_socket(str(mp), 0))
    _kill_daemon(host, mp)
    assert path.exists()  # the dead daemon's socket file, which nobody listens on

    def squat():
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
            for attempt in (lambda: path.unlink(), lambda: sock.bind(str(path))):
                try:
                    attempt()
                except OSError as exc:
                    if exc.errno not in (errno.EACCES, errno.EPERM, errno.EADDRINUSE):
                        raise
                else:
                    return "taken"
        return "refused"

    assert as_user(NOBODY, squat) == "ok refused"
    result = host.cli("status", mp)
    assert result.returncode == 1 and "stale mount" in result.stderr, result.out
    assert "stale" in host.ok("umount", mp).stdout


def test_commands_refuse_a_socket_that_is_not_the_mount_owners(master):
    host, mp = master
    path = Path(channel.control_socket(str(mp), 0))
    _kill_daemon(host, mp)
    path.unlink()  # as if the dead daemon's file were gone and someone put theirs there
    with _impostor_at(path):
        for args in (("status", "--json", mp), ("creat", "-s", "4k", mp / "f"), ("logplay", mp)):
            result = host.cli(*args)
            assert_no_traceback(result)
            assert result.returncode != 0, (args, result.out)
            assert "belongs to uid 65534" in result.stderr, (args, result.out)
        result = host.ok("umount", mp)  # still cleaned up as the stale mount it is
        assert "stale" in result.stdout


def test_a_mount_fails_loudly_when_another_process_holds_its_socket(fresh, mounts, tmp_path):
    mp = tmp_path / "mnt"
    mp.mkdir()
    with _impostor_at(channel.control_socket(str(mp), 0)) as child:
        mounts.mount(fresh, mp, expect_ok=False)
        result = mounts.last
        assert result.returncode == 1, result.out
        assert_no_traceback(result)
        assert f"in use by pid {child} (uid {NOBODY})" in result.stderr, result.out
        assert not is_mounted(mp)
        assert holder.holder_info(device_in_root("dax0.0", fresh.root)) is None


def test_descriptors_sent_to_the_daemon_cost_it_nothing(master):
    host, mp = master
    pid = json.loads(host.ok("status", "--json", mp).stdout)["daemon_pid"]
    before = len(os.listdir(f"/proc/{pid}/fd"))
    spare = [os.open("/dev/null", os.O_RDONLY) for _ in range(4)]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
            sock.settimeout(10)
            sock.connect(str(channel.control_socket(str(mp), 0)))
            for _ in range(200):
                socket.send_fds(sock, [protocol.Status().encode()], spare)
                assert json.loads(sock.recv(wire.MAX_MESSAGE))["ok"]
    finally:
        for fd in spare:
            os.close(fd)
    # none of the 800 was kept (the connection's own descriptor goes once the daemon sees it
    # closed)
    wait_until(lambda: len(os.listdir(f"/proc/{pid}/fd")) <= before, what="the fds going")
    _still_serving(host, mp)
