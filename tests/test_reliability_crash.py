"""Reliability campaign, crash consistency: the master's daemon SIGKILLed at every step of a create
(FAMFS_PY_TEST_CRASH_AT, see tests/plugins/famfs_switches.py) and at random moments under load.
The device memory outlives the process, so what it holds afterwards is what a power cut at that
point would leave. After each kill: umount cleans the stale mount, fsck is clean, a new mount
works, every create that returned success is there, and a create whose entry was not committed
is absent with its space free again."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from helpers import (
    BIN,
    CLIENT_UUID,
    MiB,
    assert_no_traceback,
    fingerprint,
    is_mounted,
    plugin_env,
    wait_gone,
    wait_until,
)
from plugins.famfs_switches import CRASH_ENV, CRASH_STEPS
from reliability import figures

from famfs_py import omf
from famfs_py.dax import holder
from famfs_py.dax.device import device_in_root

# the appends of one scenario: (kind, path, size, seed); the last one is killed
SCENARIO = [
    ("mkdir", "d", 0, 0),
    ("creat", "d/f1", 3 * MiB, 0x1234_5678),
    ("creat", "f2", 5 * MiB + 17, 0x2345_6789),
    ("creat", "victim", 7 * MiB, 0x3456_789A),
]
VICTIM_INDEX = len(SCENARIO) - 1
COMMITTED_BY = {  # step -> is the killed create's entry committed?
    "before-entry": False,
    "mid-entry": False,
    "after-entry": False,
    "mid-header": False,
    "after-header": True,
}


def _daemon_pid(host, mp: Path) -> int:
    return int(json.loads(host.ok("status", "--json", mp).stdout)["daemon_pid"])


def _claimed(host) -> bool:
    return holder.holder_info(device_in_root("dax0.0", host.root)) is not None


def _do(host, mp: Path, kind: str, path: str, size: int, seed: int):
    if kind == "mkdir":
        return host.cli("mkdir", mp / path)
    striped = ["-N", "2", "-B", "4"] if kind == "striped" else []
    return host.cli("creat", *striped, "-s", str(size), "-r", "-S", hex(seed), mp / path)


def _memory(host, offset: int, length: int) -> bytes:
    with open(host.memory(), "rb") as f:
        f.seek(offset)
        return f.read(length)


def _getmap(host, path: Path) -> list[dict]:
    return json.loads(host.ok("getmap", "--json", path).stdout)[0]["extents"]


def _fsck_clean(host, expect_entries: int) -> dict:
    before = fingerprint(host.memory())
    result = host.cli("fsck", "--json", "dax0.0")
    assert_no_traceback(result)
    report = json.loads(result.stdout)
    assert result.returncode == 0 and report["problems"] == 0, result.out
    assert report["entries"] == expect_entries and report["collisions"] == 0, report
    assert fingerprint(host.memory()) == before, "fsck wrote to the device"
    return report


def _clean_stale_mount(host, mp: Path) -> None:
    assert is_mounted(mp), "the killed daemon's mount should be stale, still listed"
    status = host.cli("status", mp)
    assert status.returncode == 1 and "stale mount" in status.stderr, status.out
    assert_no_traceback(status)
    result = host.ok("umount", mp)
    assert "stale" in result.stdout
    assert not is_mounted(mp) and not _claimed(host)


def _kill_at_step(fresh, mounts, monkeypatch, step: str, scenario: list, client=None) -> None:
    """`client`: a client host on the same memory, mounted throughout and following the log."""
    host = fresh
    victim = len(scenario) - 1
    cmp = mounts.mount(client, mounts.tmp_path / "mnt-client") if client else None
    monkeypatch.setenv(CRASH_ENV, f"{step}:{victim + 1}")
    mp = mounts.mount(host)
    monkeypatch.delenv(CRASH_ENV)
    pid = _daemon_pid(host, mp)
    for kind, path, size, seed in scenario[:-1]:
        result = _do(host, mp, kind, path, size, seed)
        assert result.returncode == 0, result.out
    offsets = {p: _getmap(host, mp / p)[0] for k, p, _, _ in scenario[:-1] if k != "mkdir"}
    killed = _do(host, mp, *scenario[-1])
    assert killed.returncode != 0, killed.out  # the daemon died before it could answer
    assert_no_traceback(killed)
    assert len(killed.stderr.strip().splitlines()) == 1, killed.stderr
    wait_gone(pid)

    # the memory is what a power cut at that step leaves
    entry_at = omf.LOG_OFFSET + omf.entry_offset(victim)
    slot = _memory(host, entry_at, omf.LOG_ENTRY_SIZE)
    header = omf.LogHeader.unpack(_memory(host, omf.LOG_OFFSET, omf.LOG_HEADER_SIZE))
    seqnum, index = header.next_seqnum, header.next_index
    half = omf.LOG_ENTRY_SIZE // 2
    expect_slot = {
        "before-entry": slot == bytes(omf.LOG_ENTRY_SIZE),
        "mid-entry": slot[:half] != bytes(half) and slot[half:] == bytes(half),
    }.get(step, omf.entry_crc_ok(slot))
    assert expect_slot, f"{step}: slot {victim} holds {slot[:32].hex()}..."
    expect_counters = {
        "mid-header": (victim + 1, victim),
        "after-header": (victim + 1, victim + 1),
    }.get(step, (victim, victim))
    assert (seqnum, index) == expect_counters, (step, seqnum, index)

    committed = COMMITTED_BY[step]
    if cmp is not None:  # the client never shows an uncommitted create
        client.ok("logplay", cmp)  # the client has replayed all that is committed now
        assert (cmp / scenario[-1][1]).exists() == committed, f"{step}: the client disagrees"
    _clean_stale_mount(host, mp)
    _fsck_clean(host, victim + committed)
    mounts.mount(host, mp)
    for kind, path, size, seed in scenario[:-1]:  # every create that returned success
        if kind == "mkdir":
            assert (mp / path).is_dir(), path
            continue
        assert os.stat(mp / path).st_size == size, path
        host.ok("verify", "-S", hex(seed), "-f", mp / path)
        assert _getmap(host, mp / path)[0] == offsets[path]
    kind, path, size, seed = scenario[-1]
    if not committed:
        assert not (mp / path).exists(), f"{step}: the uncommitted {path} is half-present"
    elif kind == "mkdir":
        assert (mp / path).is_dir()
    else:
        assert os.stat(mp / path).st_size == size
    # the uncommitted create's space is free again: the same create lands where it would have
    if kind == "creat":
        host.ok("creat", "-s", str(size), mp / path)
        got = _getmap(host, mp / path)[0]
        if step in ("after-entry", "mid-header"):
            fmap = omf.LogEntry.unpack(slot).payload.fmap
            assert got["offset"] == fmap.extents[0].offset, (got, fmap)
        if not committed:  # first fit: right after the files before it
            ends = [e["offset"] + e["length"] for e in offsets.values()]
            assert got["offset"] == max(ends, default=omf.LOG_OFFSET + omf.DEFAULT_LOG_LEN)
        host.ok("creat", "-s", "1m", mp / "after")
        assert _getmap(host, mp / "after")[0]["offset"] == got["offset"] + got["length"]
    result = host.cli("fsck", "--json", mp)
    report = json.loads(result.stdout)
    assert result.returncode == 0 and report["collisions"] == 0, result.out
    if cmp is not None:  # the client, mounted all along, converges on the master's tree
        expected = sorted(p.name for p in mp.iterdir())
        wait_until(
            lambda: sorted(p.name for p in cmp.iterdir()) == expected,
            what=f"{step}: the client converging",
        )
        assert os.stat(cmp / "after").st_ino == os.stat(mp / "after").st_ino
    host.ok("umount", mp)
    figures.add("kills survived, at a step of a create")


@pytest.mark.parametrize("step", CRASH_STEPS)
def test_a_master_killed_at_any_step_of_a_create_loses_nothing_that_was_committed(
    fresh, host_factory, mounts, monkeypatch, step
):
    client = host_factory("client", CLIENT_UUID)
    client.ok("dax", "create", "dax0.0", "--share", fresh.node())
    _kill_at_step(fresh, mounts, monkeypatch, step, SCENARIO, client)


@pytest.mark.slow
@pytest.mark.parametrize("step", CRASH_STEPS)
@pytest.mark.parametrize("victim", ["first", "mkdir", "interleaved"])
def test_a_master_killed_at_any_step_of_other_creates_loses_nothing_that_was_committed(
    fresh, mounts, monkeypatch, step, victim
):
    scenario = {
        "first": [("creat", "only", 2 * MiB, 0x1111_2222)],
        "mkdir": [*SCENARIO[:-1], ("mkdir", "d/sub", 0, 0)],
        "interleaved": [*SCENARIO[:-1], ("striped", "striped", 9 * MiB, 0x4567_89AB)],
    }[victim]
    _kill_at_step(fresh, mounts, monkeypatch, step, scenario)


def test_the_crash_switch_ignores_what_it_does_not_understand():
    env = plugin_env({CRASH_ENV: "sometimes"})
    code = "from famfs_py.fs import log; print(log.Log.writes_class.__name__)"
    out = subprocess.run(
        [str(BIN / "python"), "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "LogWrites" and "ignored" in out.stderr  # not patched


def test_the_crash_switch_patches_the_library_from_outside():
    """Through the seam the log offers (Log.writes_class), not a private attribute."""
    env = plugin_env({CRASH_ENV: "mid-entry:2"})
    code = "from famfs_py.fs import log; print(log.Log.writes_class.__qualname__)"
    out = subprocess.run(
        [str(BIN / "python"), "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "install_crash.<locals>.patch.<locals>.CrashingWrites", out.stderr


# -- kills at random moments under load ------------------------------------------------------
def _creator(host, mp: Path, name: str, done: list, stop: threading.Event) -> None:
    """Create files one after another through the CLI; record those that returned success."""
    k = 0
    while not stop.is_set():
        path = f"{name}-{k}"
        size = (k % 5 + 1) * MiB + k
        result = host.cli("creat", "-s", str(size), mp / path, timeout=60)
        if result.returncode != 0:
            return  # the daemon is gone
        done.append((path, size))
        k += 1


def _kill_under_load(host, mounts, rng: random.Random, round_: int) -> int:
    mp = mounts.mount(host, mounts.tmp_path / "load")
    pid = _daemon_pid(host, mp)
    before = {p.name for p in mp.iterdir()}
    done: dict[str, list] = {f"w{round_}-{t}": [] for t in range(4)}
    stop = threading.Event()
    threads = [
        threading.Thread(target=_creator, args=(host, mp, name, done[name], stop)) for name in done
    ]
    for t in threads:
        t.start()
    # the load is under way (every creator has had a create acknowledged), then a random moment
    wait_until(lambda: all(done.values()), timeout=60, what="the first creates")
    time.sleep(rng.uniform(0.0, 1.0))
    os.kill(pid, signal.SIGKILL)
    stop.set()
    for t in threads:
        t.join(60)
    wait_gone(pid)
    _clean_stale_mount(host, mp)
    result = host.cli("fsck", "--json", "dax0.0")
    report = json.loads(result.stdout)
    assert result.returncode == 0 and report["collisions"] == 0, result.out
    mounts.mount(host, mp)
    after = {p.name: p.stat().st_size for p in mp.iterdir()}
    succeeded = [item for items in done.values() for item in items]
    for path, size in succeeded:
        assert after.get(path) == size, f"{path} returned success and is {after.get(path)}"
    # at most one create per creator was in flight: present or not, but whole
    unreported = set(after) - before - {p for p, _ in succeeded} - {".meta"}
    assert len(unreported) <= len(done), unreported
    for name in unreported:
        creator, k = name.rsplit("-", 1)
        assert after[name] == (int(k) % 5 + 1) * MiB + int(k), name
        assert len(done[creator]) == int(k), f"{name} was not the creator's next create"
    host.ok("umount", mp)
    figures.add("kills survived, at random moments under load")
    figures.add("creates that returned success before a random kill", len(succeeded))
    return len(succeeded)


@pytest.mark.parametrize(
    "rounds",
    [pytest.param(1, id="once"), pytest.param(8, marks=pytest.mark.slow, id="eight-times")],
)
def test_a_master_killed_at_random_moments_under_load_loses_no_acknowledged_create(
    fresh, mounts, rounds
):
    rng = random.Random(rounds)
    total = sum(_kill_under_load(fresh, mounts, rng, r) for r in range(rounds))
    assert total > 0


# -- files created through the mount (issue 24) ------------------------------------------------
# kill -9 of the master's daemon while an ordinary program creates a file: while it allocates
# (the first bytes), while it writes, once it closed the file (the commit waiting its delay),
# and at each step of the commit's log append (fsync; the crash switch)
MOUNT_STEPS = ("allocated", "writing", "closed", *CRASH_STEPS)
DATA_START = omf.LOG_OFFSET + omf.DEFAULT_LOG_LEN  # first fit on a fresh device


def _write_and_die(mp: Path, step: str, data: bytes, pid: int) -> None:
    """Create `kept.bin` (committed by fsync), then `new.bin`, killed at `step`."""
    with open(mp / "kept.bin", "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    fd = os.open(mp / "new.bin", os.O_CREAT | os.O_WRONLY, 0o640)
    try:
        if step == "allocated":
            os.write(fd, b"x")
            os.kill(pid, signal.SIGKILL)
        elif step == "writing":
            os.write(fd, data[: 3 * MiB])
            os.kill(pid, signal.SIGKILL)
        elif step == "closed":
            os.write(fd, data)
            os.close(fd)
            fd = -1
            os.kill(pid, signal.SIGKILL)  # the commit waits 60 s (--commit-delay)
        else:
            os.write(fd, data)
            with pytest.raises(OSError):  # the daemon dies in the commit's append
                os.fsync(fd)
    finally:
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass  # the daemon is gone


@pytest.mark.parametrize("step", MOUNT_STEPS)
def test_a_master_killed_while_a_program_creates_a_file_leaves_it_whole_or_gone(
    fresh, mounts, monkeypatch, step
):
    host = fresh
    data = os.urandom(5 * MiB + 99)
    if step in CRASH_STEPS:
        monkeypatch.setenv(CRASH_ENV, f"{step}:2")  # the append after kept.bin's
    mp = mounts.mount(host, None, "--commit-delay", "60")
    monkeypatch.delenv(CRASH_ENV, raising=False)
    pid = _daemon_pid(host, mp)
    _write_and_die(mp, step, data, pid)
    wait_gone(pid)
    committed = COMMITTED_BY.get(step, False)
    _clean_stale_mount(host, mp)
    _fsck_clean(host, 1 + committed)
    mounts.mount(host, mp)
    assert (mp / "kept.bin").read_bytes() == data  # committed before: intact
    if committed:
        assert (mp / "new.bin").read_bytes() == data
        assert os.stat(mp / "new.bin").st_mode & 0o777 == 0o640
    else:
        assert not (mp / "new.bin").exists(), f"{step}: the uncommitted file is half-present"
        # its space is free again: the next file lands right after kept.bin
        host.ok("creat", "-s", "1m", mp / "after")
        kept_end = DATA_START + -(-len(data) // (2 * MiB)) * 2 * MiB
        assert _getmap(host, mp / "after")[0]["offset"] == kept_end
    result = host.cli("fsck", "--json", mp)
    report = json.loads(result.stdout)
    assert result.returncode == 0 and report["collisions"] == 0, result.out
    host.ok("umount", mp)
    figures.add("kills survived, while a program created a file through the mount")


@pytest.mark.parametrize("step,committed", [("after-entry", False), ("after-header", True)])
def test_a_master_killed_inside_a_batched_copy_keeps_all_of_the_batch_or_none(
    fresh, mounts, monkeypatch, tmp_path, step, committed
):
    """`famfs-py cp` creates a directory's files in one CreatMany, logged with one commit:
    killed after the third file's entry (before the commit), none of the five is there;
    killed right after the commit, all five are."""
    src = tmp_path / "src"
    src.mkdir()
    sizes = {f"f{i}": 5000 + i for i in range(5)}
    for name, size in sizes.items():
        (src / name).write_bytes(os.urandom(size))
    nth = 4 if step == "after-entry" else 6  # entry 1: cp's mkdir of dst; 2..6: the files
    monkeypatch.setenv(CRASH_ENV, f"{step}:{nth}")
    mp = mounts.mount(fresh)
    monkeypatch.delenv(CRASH_ENV)
    pid = _daemon_pid(fresh, mp)
    killed = fresh.cli("cp", "-r", src, mp / "dst")
    assert killed.returncode != 0, killed.out  # the daemon died before it answered
    assert_no_traceback(killed)
    wait_gone(pid)
    _clean_stale_mount(fresh, mp)
    _fsck_clean(fresh, 1 + (len(sizes) if committed else 0))
    mounts.mount(fresh, mp)
    found = {p.name: p.stat().st_size for p in (mp / "dst").iterdir()}
    assert found == (sizes if committed else {}), (step, found)
    fresh.ok("cp", "-r", src, mp / "dst")  # the copy, run again, completes
    for name in sizes:
        assert (mp / "dst" / name).read_bytes() == (src / name).read_bytes()
