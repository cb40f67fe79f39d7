"""Another host writing the shared memory behind the hosts' backs (issue 28 items 3, 8, 9): a
foreign append, forged counters, a `mkfs -f` of the memory two hosts have mounted. Every
host notices, says what happened, and serves nothing it cannot stand behind."""

from __future__ import annotations

import errno
import json
import os

import pytest
from helpers import MiB, assert_no_traceback, is_mounted, wait_until

from famfs_py import omf, protocol, replies
from famfs_py.channel import Channel
from famfs_py.daemon import logfile


@pytest.fixture
def mounted_pair(pair, mounts, tmp_path):
    master, client = pair
    mmp = mounts.mount(master, tmp_path / "mnt-master")
    cmp = mounts.mount(client, tmp_path / "mnt-client")
    return master, client, mmp, cmp


def _committed(memory) -> int:
    with open(memory, "rb") as f:
        f.seek(omf.LOG_OFFSET + omf.COUNTERS_OFFSET + 8)
        return int.from_bytes(f.read(8), "little")


def foreign_append(memory, payload: omf.FileMeta | omf.MkdirMeta) -> int:
    """Append one valid entry and commit it, as a second writer on another host would."""
    index = _committed(memory)
    with open(memory, "r+b") as f:
        f.seek(omf.LOG_OFFSET + omf.entry_offset(index))
        f.write(omf.LogEntry.new(index, payload).pack())
        f.seek(omf.LOG_OFFSET + omf.COUNTERS_OFFSET)
        f.write(omf.pack_counters(index + 1, index + 1))
    return index


def file_over(path: str, offset: int, length: int = 2 * MiB) -> omf.FileMeta:
    fmap = omf.SimpleFmap((omf.Extent(offset, length),))
    return omf.FileMeta(length, omf.FM_ALL_HOSTS_RW, 0, 0, 0o666, path, fmap)


def _logplay(mp) -> replies.LogplayReply:
    with Channel(str(mp)) as chan:
        return chan.call(protocol.Logplay())


def test_replay_refuses_files_over_the_superblock_or_the_log(mounted_pair):
    """Item 9: such a file was served, and an ordinary user writing it destroyed the log."""
    master, client, mmp, cmp = mounted_pair
    master.ok("creat", "-s", "1m", mmp / "first")
    wait_until(lambda: (cmp / "first").exists(), what="the client following")
    memory = master.memory()
    over_log = foreign_append(memory, file_over("over-log", omf.LOG_OFFSET))
    inside = foreign_append(memory, file_over("inside-log", omf.LOG_OFFSET + 4 * MiB))
    straddling = foreign_append(memory, file_over("straddling", omf.LOG_OFFSET + 6 * MiB, 4 * MiB))

    def followed() -> replies.LogplayReply | None:
        reply = _logplay(cmp)
        return reply if reply.entries > straddling else None

    reply = wait_until(followed, what="the client reading the new entries")
    for name in ("over-log", "inside-log", "straddling"):
        assert not (cmp / name).exists(), name
    for index in (over_log, inside, straddling):
        assert any(
            b.startswith(f"log entry {index}:") and "over the superblock and log" in b
            for b in reply.bad
        ), reply.bad
    assert (cmp / "first").exists()


THIRD_UUID = "3a3a3a3a-4b4b-4c4c-8d8d-5e5e5e5e5e5e"


def _write(path, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.write(data)


def _status(host, mp) -> dict:
    return json.loads(host.cli("status", "--json", mp).stdout)


def test_a_filesystem_remade_by_another_host_is_noticed_by_every_host(
    mounted_pair, host_factory, mounts, tmp_path
):
    """Items 3 and 8 (upstream issue #135): a third host runs mkfs -f on the memory a
    master and a client have mounted, and writes a file of its own where the old one was.
    Both go failsafe, say which host remade it, and serve none of the new bytes under the
    old names; the master's next creat says the same instead of 'internal error'."""
    master, client, mmp, cmp = mounted_pair
    master.ok("creat", "-s", "2m", "-m", "0644", mmp / "old")
    _write(mmp / "old", b"old secret")
    wait_until(lambda: (cmp / "old").exists(), what="the client following")
    assert (cmp / "old").read_bytes()[:10] == b"old secret"

    third = host_factory("third", THIRD_UUID)
    third.ok("dax", "create", "dax0.0", "--share", master.node())
    third.ok("mkfs", "-f", "dax0.0")
    tmp = mounts.mount(third, tmp_path / "mnt-third")
    third.ok("creat", "-s", "2m", "-m", "0600", tmp / "new")
    _write(tmp / "new", b"NEW SECRET")

    for host, mp in ((master, mmp), (client, cmp)):
        status = wait_until(
            lambda h=host, m=mp: (s := _status(h, m))["health"] == "failsafe" and s,
            what=f"{host.root.name} noticing the remade filesystem",
        )
        assert f"remade by host {THIRD_UUID}" in status["failsafe"], status
        assert status["superseded"] == status["failsafe"]
        with pytest.raises(OSError) as info:
            (mp / "old").read_bytes()
        assert info.value.errno == errno.EIO
        said = host.cli("status", mp)
        assert said.returncode == 3 and f"remade by host {THIRD_UUID}" in said.stdout
    result = master.cli("creat", "-s", "1m", mmp / "more")
    assert result.returncode != 0 and f"remade by host {THIRD_UUID}" in result.out, result.out
    assert_no_traceback(result)
    assert (tmp / "new").read_bytes()[:10] == b"NEW SECRET"  # the new filesystem is fine


def test_a_foreign_append_on_the_masters_log_is_said_not_internal_error(mounted_pair):
    """Item 8: another writer appends (or forges the counters); the master's next creat says
    what happened, the mount goes failsafe (metadata frozen, data still served)."""
    master, client, mmp, cmp = mounted_pair
    master.ok("creat", "-s", "2m", mmp / "mine")
    _write(mmp / "mine", b"still readable")
    foreign_append(master.memory(), omf.MkdirMeta(0, 0, 0o755, "intruder"))
    result = master.cli("creat", "-s", "1m", mmp / "next")
    assert result.returncode != 0, result.out
    assert_no_traceback(result)
    assert "another writer appended to the log" in result.out, result.out
    status = _status(master, mmp)
    assert status["health"] == "failsafe" and "another writer" in status["failsafe"]
    assert (mmp / "mine").read_bytes()[:14] == b"still readable"


def test_forged_counters_are_noticed_by_the_master_without_a_creat(mounted_pair):
    master, client, mmp, cmp = mounted_pair
    master.ok("creat", "-s", "2m", mmp / "mine")
    with open(master.memory(), "r+b") as f:
        f.seek(omf.LOG_OFFSET + omf.COUNTERS_OFFSET)
        f.write(omf.pack_counters(500, 500))
    status = wait_until(
        lambda: (s := _status(master, mmp))["health"] == "failsafe" and s,
        what="the master noticing forged counters",
    )
    assert "counts 500 entries, this master wrote 1" in status["failsafe"], status


def test_a_client_survives_the_removal_of_its_device(mounted_pair):
    """Item 4: the client's log follower met the unmapped memory (MemoryRevoked) and the
    daemon died; it now stays up and reports the removal, as the master does."""
    master, client, mmp, cmp = mounted_pair
    master.ok("creat", "-s", "1m", mmp / "f")
    wait_until(lambda: (cmp / "f").exists(), what="the client following")
    client.ok("dax", "remove", "dax0.0")
    status = wait_until(
        lambda: (s := _status(client, cmp))["health"] == "removed" and s,
        what="the client noticing the removal",
    )
    assert status["removed"] is True
    logplay = client.cli("logplay", cmp)  # a look at the log now: nothing to follow
    assert_no_traceback(logplay)
    with pytest.raises(OSError) as info:
        (cmp / "f").read_bytes()
    assert info.value.errno == errno.EIO
    assert _status(client, cmp)["health"] == "removed"  # still up, after follower ticks
    assert is_mounted(cmp)


def test_status_of_thousands_of_bad_pages_is_a_few_ranges_and_any_reply_size_works(
    fresh, mounts, monkeypatch
):
    """Item 7: every bad 4 KiB page was a line of status; after a truncated memory file and
    a read over it, the reply outgrew one socket message ('the daemon closed the
    connection'). Ranges are summarised, and a long reply comes in parts. Item 5: the 8,192
    error lines this makes stay within the daemon log's bound (here 64 KiB: two files)."""
    monkeypatch.setenv(logfile.MAX_BYTES_ENV, str(64 << 10))
    mp = mounts.mount(fresh)
    fresh.ok("creat", "-s", "32m", mp / "big")
    with Channel(str(mp)) as chan:
        (extent,) = omf.fmap_extents(chan.call(protocol.Getmap("big")).fmap)
    os.truncate(fresh.memory(), extent.offset)  # the file's memory is gone
    fd = os.open(mp / "big", os.O_RDONLY)
    failed = 0
    try:
        for page in range(0, 32 * MiB, 4096):  # every page is found bad, one by one
            try:
                os.pread(fd, 4096, page)
            except OSError as exc:
                assert exc.errno == errno.EIO
                failed += 1
    finally:
        os.close(fd)
    assert failed == 32 * MiB // 4096
    result = fresh.cli("status", mp)
    assert result.returncode == 3, result.out
    assert_no_traceback(result)
    assert result.stdout.count("poisoned:") == 1, result.stdout
    assert f"poisoned:   {extent.offset:#x}+{32 * MiB:#x}: big" in result.stdout, result.stdout
    assert len(_status(fresh, mp)["poisoned"]) == 1
    kept = {p.name: p.stat().st_size for p in mounts.log_dir.iterdir()}
    print(f"daemon log after 8,192 bad pages, bound 64 KiB: {kept}")
    assert len(kept) == 2 and all(size < (64 << 10) + 4096 for size in kept.values()), kept


def test_a_reply_longer_than_a_socket_buffer_arrives_whole(mounted_pair):
    """Item 7: replies of any size work (a logplay listing 3,000 bad entries, ~300 KB)."""
    master, client, mmp, cmp = mounted_pair
    memory = master.memory()
    for k in range(3000):
        foreign_append(memory, file_over(f"bad{k}", omf.LOG_OFFSET))
    with Channel(str(cmp)) as chan:
        reply = chan.call(protocol.Logplay())
    assert len(reply.bad) == 3000 and reply.entries == 3000
    said = client.cli("logplay", cmp)  # the command too (its exit code counts bad entries)
    assert "famfs_logplay: 3000 log entries" in said.stdout, said.out
    assert_no_traceback(said)


def test_cp_says_why_when_the_daemon_is_killed_under_it(fresh, mounts, tmp_path):
    """Item 10: a daemon killed under `cp` made cp exit 1 with no message (a BrokenPipeError
    from the control socket, swallowed)."""
    import signal
    import subprocess

    from helpers import BIN, plugin_env

    mp = mounts.mount(fresh)
    src = tmp_path / "tree"
    src.mkdir()
    for k in range(400):
        (src / f"f{k:03}").write_bytes(b"x" * 5000)
    proc = subprocess.Popen(
        [str(BIN / "famfs-py"), "cp", "-r", str(src), str(mp / "tree")],
        env=plugin_env(fresh.env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_until(lambda: (mp / "tree").exists() and len(os.listdir(mp / "tree")) > 5, 30)
    os.kill(mounts.made[-1][1], signal.SIGKILL)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert err.strip(), f"cp exited {proc.returncode} saying nothing"
    assert "Traceback" not in err, err
    print(f"cp exit {proc.returncode}: {err.strip()[:300]}")


def test_a_request_to_a_daemon_killed_after_connecting_is_a_clear_error(fresh, mounts):
    """Item 10: the request's send met EPIPE (BrokenPipeError), which the command line
    swallowed (cp exited 1 saying nothing); it is now FamfsError 'closed the connection'."""
    import signal

    from helpers import wait_gone

    from famfs_py.errors import FamfsError

    mp = mounts.mount(fresh)
    pid = mounts.made[-1][1]
    with Channel(str(mp)) as chan:
        chan.call(protocol.Status())
        os.kill(pid, signal.SIGKILL)
        wait_gone(pid)
        with pytest.raises(FamfsError) as info:
            chan.call(protocol.Status())
    assert "closed the connection" in str(info.value)
