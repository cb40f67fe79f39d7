"""The daemon's two adapters called in this process, under trio, with no mount: the pyfuse3
handlers (FamfsOperations) and the control server's answers, including its authorization
table for an unprivileged caller. Part of the model tier (no /dev/fuse needed)."""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
import tracemalloc
import types

import pyfuse3
import pytest
import trio
from helpers import MiB

from famfs_py import protocol, replies
from famfs_py.credentials import Credentials
from famfs_py.daemon.control import ControlServer, DaemonFacts, Rule
from famfs_py.daemon.operations import FamfsOperations
from famfs_py.dax import cache
from famfs_py.fs.namespace import META_INO, ROOT_INO

pytestmark = pytest.mark.model

ROOT = Credentials(os.getpid(), 0, 0)
NOBODY = Credentials(os.getpid(), 65534, 65534)
CTX = pyfuse3.RequestContext()
FLUSHING_ON = "on (flush=auto: the emulated device dax0.0 is not known coherent)"


@pytest.fixture
def fs(master_famfs):
    return master_famfs


@pytest.fixture
def ops(fs):
    return FamfsOperations(fs, cache="auto")


async def _fuse_errno(call) -> int:
    with pytest.raises(pyfuse3.FUSEError) as info:
        await call
    return info.value.errno


async def test_lookup_getattr_open_read_write_release(fs, ops):
    inode, _ = fs.create_file("f", MiB, 0o640, 7, 8)
    attr = await ops.lookup(ROOT_INO, b"f", CTX)
    assert (attr.st_ino, attr.st_size, attr.st_uid, attr.st_gid) == (inode.ino, MiB, 7, 8)
    assert (await ops.getattr(META_INO, CTX)).st_ino == META_INO
    info = await ops.open(inode.ino, os.O_RDWR, CTX)
    assert await ops.write(info.fh, 10, b"hello") == 5
    assert bytes(await ops.read(info.fh, 8, 9)) == b"\0\0hello\0\0"
    await ops.release(info.fh)
    assert ops.handles == {}
    assert await _fuse_errno(ops.lookup(ROOT_INO, b"missing", CTX)) == errno.ENOENT


async def test_what_the_log_cannot_record_is_refused(fs, ops):
    inode, _ = fs.create_file("f", MiB, 0o644, 0, 0)
    mode = stat.S_IFIFO | 0o644
    assert await _fuse_errno(ops.mknod(ROOT_INO, b"fifo", mode, 0, CTX)) == errno.EPERM
    assert await _fuse_errno(ops.unlink(ROOT_INO, b"f", CTX)) == errno.EPERM
    assert await _fuse_errno(ops.open(inode.ino, os.O_RDWR | os.O_TRUNC, CTX)) == errno.EPERM
    # pyfuse3's SetattrFields cannot be filled from Python: what the kernel would send
    fields = types.SimpleNamespace(
        update_size=True, update_mode=False, update_uid=False, update_gid=False
    )
    attr = await ops.getattr(inode.ino, CTX)
    attr.st_size = 2 * MiB
    assert await _fuse_errno(ops.setattr(inode.ino, attr, fields, None, CTX)) == errno.EPERM


async def test_a_handler_bug_answers_eio(fs, ops, monkeypatch):
    inode, _ = fs.create_file("f", MiB, 0o644, 0, 0)

    def broken(*args: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(fs, "read", broken)
    info = await ops.open(inode.ino, os.O_RDONLY, CTX)
    assert await _fuse_errno(ops.read(info.fh, 0, 10)) == errno.EIO
    assert (await ops.getattr(inode.ino, CTX)).st_size == MiB  # the others still work


async def test_statfs_reports_the_models_space(fs, ops):
    fs.create_file("f", 5 * MiB, 0o644, 0, 0)
    data = await ops.statfs(CTX)
    space = fs.space()
    assert data.f_bsize == space.alloc_unit and data.f_blocks == space.units
    assert data.f_bfree == space.free_units and data.f_ffree == space.log_slots - space.log_used


# -- the control server ----------------------------------------------------------------------
@pytest.fixture
def control(fs):
    invalidated: list[list[int]] = []

    async def invalidate(inos: list[int]) -> None:
        invalidated.append(inos)

    facts = DaemonFacts(
        mountpoint="/nowhere", daemon_pid=1, cache="auto", open_files=0, kernel_lookups=0
    )
    server = ControlServer(fs, "/nowhere", lambda: facts, invalidate)
    server.invalidated = invalidated  # type: ignore[attr-defined]
    yield server
    server.close()


async def _ask(control, request: protocol.Request, caller=ROOT) -> dict:
    payload, fds, _watch = await control.answer(request.encode(), caller)
    for fd in fds:
        os.close(fd)
    return json.loads(payload)


async def test_every_op_has_a_rule_and_owner_ops_refuse_others(fs, control):
    assert set(control.ops) == set(protocol.REQUESTS.values())
    fs.create_file("public", MiB, 0o644, 0, 0)
    requests = {
        protocol.Mkdir: protocol.Mkdir("d"),
        protocol.Creat: protocol.Creat("f", 4096),
        protocol.Clone: protocol.Clone("public", "c"),
        protocol.Device: protocol.Device(),
        protocol.Fsck: protocol.Fsck(),
        protocol.Logplay: protocol.Logplay(),
    }
    for cls, (rule, _handler) in control.ops.items():
        if rule is Rule.OWNER:
            reply = await _ask(control, requests[cls], NOBODY)
            assert reply["ok"] is False and reply["errno"] == errno.EPERM, (cls, reply)
    assert (await _ask(control, protocol.Status(), NOBODY))["ok"]
    assert (await _ask(control, protocol.Getmap("public"), NOBODY))["ok"]
    refused = await _ask(control, protocol.Map("public"), NOBODY)  # the device is root's only
    assert refused["errno"] == errno.EACCES and "access to the device" in refused["error"]


async def test_flush_writes_back_and_evicts_a_files_range_and_says_the_policy(fs, control):
    line = cache.line_size()
    inode, _ = fs.create_file("f", 3 * MiB, 0o644, 0, 0)
    fs.write(inode, 0, b"d" * (3 * MiB))  # resident pages: emulated memory skips absent ones
    fs.mkdir("d", 0o755, 0, 0)
    whole = await _ask(control, protocol.Flush("f"), NOBODY)  # a reader needs no device
    assert whole == {"ok": True, "lines": 3 * MiB // line, "enabled": True, "reason": FLUSHING_ON}
    part = await _ask(control, protocol.Flush("f", MiB + 1, line), NOBODY)
    assert part["lines"] == 2  # the range's first byte is past a line's start: two lines
    rest = await _ask(control, protocol.Flush("f", 3 * MiB - line), NOBODY)
    assert rest["lines"] == 1
    for request, code in (
        (protocol.Flush("f", 3 * MiB + 1), errno.EINVAL),
        (protocol.Flush("f", -1), errno.EINVAL),
        (protocol.Flush("d"), errno.EISDIR),
        (protocol.Flush("missing"), errno.ENOENT),
    ):
        reply = await _ask(control, request)
        assert reply["ok"] is False and reply["errno"] == code, (request, reply)


async def test_invalidate_files_does_what_it_may_and_names_the_first_refusal(fs, control):
    """cp's batched invalidation: one trip for every file, each path authorized as its own
    Invalidate; what the caller may not read (or what is not there) is refused by name,
    after the rest are done."""
    public, _ = fs.create_file("public", 4096, 0o644, 0, 0)
    also, _ = fs.create_file("also", 4096, 0o644, 0, 0)
    fs.create_file("private", 4096, 0o600, 0, 0)
    reply = await _ask(control, protocol.InvalidateFiles(("public", "also")), NOBODY)
    assert reply == {"ok": True} and control.invalidated == [[public.ino, also.ino]]
    control.invalidated.clear()
    paths = ("public", "private", "missing", "also")
    reply = await _ask(control, protocol.InvalidateFiles(paths), NOBODY)
    assert reply["ok"] is False and reply["errno"] == errno.EACCES and "private" in reply["error"]
    assert control.invalidated == [[public.ino, also.ino]]
    reply = await _ask(control, protocol.InvalidateFiles(("missing",)))
    assert reply["errno"] == errno.ENOENT and "missing" in reply["error"]


async def test_requests_change_the_model_and_answer_with_maps(fs, control):
    reply = await _ask(control, protocol.Mkdir("a/b", parents=True))
    assert reply == {"ok": True, "created": ["a", "a/b"]}
    reply = await _ask(control, protocol.Creat("a/b/f", 3 * MiB, 0o600))
    grant = replies.FileMapReply.from_fields(reply)
    assert grant.created and grant.size == 3 * MiB and grant.path == "a/b/f"
    again = replies.FileMapReply.from_fields(await _ask(control, protocol.Getmap("a/b/f")))
    assert again.fmap == grant.fmap and not again.created
    payload, fds, watch = await control.answer(protocol.Map("a/b/f", watch=True).encode(), ROOT)
    try:
        assert watch and len(fds) == 1 and json.loads(payload)["align"] == 2 * MiB
    finally:
        for fd in fds:
            os.close(fd)
    await _ask(control, protocol.Invalidate("a/b/f"))
    assert control.invalidated == [[fs.namespace.resolve("a/b/f").ino]]


@pytest.mark.parametrize(
    "payload",
    [b"", b"{", b"[]", b'{"op": "nope"}', b'{"op": "creat", "size": "x", "path": "f"}',
     b'{"op": "creat", "path": "../x", "size": 1}', b'{"op": "mkdir", "bogus": 1}'],
)  # fmt: skip
async def test_malformed_requests_are_answered_einval(control, payload):
    reply_bytes, fds, _ = await control.answer(payload, ROOT)
    reply = json.loads(reply_bytes)
    assert fds == () and reply["ok"] is False and reply["errno"] == errno.EINVAL, reply


async def test_an_fsck_through_the_daemon_runs_off_the_event_loop(fs, control):
    fs.create_file("f", MiB, 0o644, 0, 0)
    with trio.fail_after(30):
        reply = await _ask(control, protocol.Fsck(verbose=True))
    assert reply["report"]["files"] == 1 and reply["report"]["problems"] == 0


async def test_a_silent_connection_is_closed_and_a_user_cannot_hold_too_many(
    fs, control, monkeypatch
):
    from famfs_py.daemon import control as control_module

    monkeypatch.setattr(control_module, "IDLE_TIMEOUT", 0.2)
    monkeypatch.setattr(control_module, "MAX_CONNECTIONS_PER_USER", 2)
    control.mountpoint = f"/nowhere-{os.getpid()}-{id(control)}"
    control.bind()

    def connect_as_nobody() -> socket.socket:  # SO_PEERCRED is fixed at connect: as nobody
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            os.setuid(65534)
            try:
                sock.connect(str(control.path))
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        return sock

    async with trio.open_nursery() as nursery:
        nursery.start_soon(control.serve)
        first, second = connect_as_nobody(), connect_as_nobody()
        third = connect_as_nobody()
        third.settimeout(5)
        refused = json.loads(await trio.to_thread.run_sync(third.recv, 4096))
        assert refused["errno"] == errno.EAGAIN and "connections open" in refused["error"]
        first.settimeout(5)
        assert await trio.to_thread.run_sync(first.recv, 4096) == b""  # closed: it said nothing
        for sock in (first, second, third):
            sock.close()
        nursery.cancel_scope.cancel()


async def test_an_open_directory_costs_a_few_bytes_however_large(fs, ops):
    """Issue 28 item 5: each opendir copied the whole listing (~1.8 MB per handle of a
    15,000-entry directory; 500 handles took the daemon from 51 to 956 MB). Handles now
    share one listing per directory."""
    for k in range(15000):
        fs.mkdir(f"d{k:05}", 0o755, 0, 0)
    tracemalloc.start()
    try:
        first = await ops.opendir(ROOT_INO, CTX)  # makes the directory's listing, once
        before = tracemalloc.get_traced_memory()[0]
        handles = [await ops.opendir(ROOT_INO, CTX) for _ in range(500)]
        per_handle = (tracemalloc.get_traced_memory()[0] - before) / len(handles)
    finally:
        tracemalloc.stop()
    print(f"memory per open handle of a 15,000-entry directory: {per_handle:.0f} bytes")
    assert per_handle < 1024
    fs.mkdir("later", 0o755, 0, 0)  # a handle opened now sees it; the first one does not
    latest = await ops.opendir(ROOT_INO, CTX)
    assert ops.dir_handles[latest][1] == ops.dir_handles[first][1] + 1
    for fh in (first, latest, *handles):
        await ops.releasedir(fh)


async def test_one_users_flushes_use_one_worker_thread_at_a_time(fs, control):
    """Issue 28 item 5: 60 connections flushing a 64 MiB file put the daemon at 167 % CPU
    (every flush on a thread of its own); an unprivileged user's flushes now queue."""
    fs.create_file("big", 64 * MiB, 0o644, 0, 0)
    limiter = control.flush_limit(NOBODY.uid)
    most_busy = 0
    queued = 0

    async def watch() -> None:
        nonlocal most_busy, queued
        while True:
            most_busy = max(most_busy, limiter.borrowed_tokens)
            queued = max(queued, limiter.statistics().tasks_waiting)
            await trio.sleep(0)

    async with trio.open_nursery() as outer:
        outer.start_soon(watch)
        async with trio.open_nursery() as flushes:
            for _ in range(8):
                flushes.start_soon(_ask, control, protocol.Flush("big"), NOBODY)
        outer.cancel_scope.cancel()
    assert most_busy == 1 and queued >= 1, (most_busy, queued)
    assert control.flush_limit(ROOT.uid) is not limiter  # each user has their own
