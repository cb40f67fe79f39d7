"""A test run leaves nothing behind: a run of the suite that fails, is interrupted (Ctrl-C,
SIGTERM) or is killed outright leaves no famfs-py mount and no emulated memory once it (or, for
a killed run, the next run's sweep) is done, and a sweep never touches a live run.

Each case runs a real pytest of this suite in a child process (its memory directory is then
inside this run's) that mounts a famfs and waits to be stopped.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import run_isolation
from helpers import BIN, REPO, memory_dir

HOLD_ENV = "FAMFS_PY_TEST_HOLD"  # where the child says it is mounted


@pytest.mark.skipif(not os.environ.get(HOLD_ENV), reason="the child of the tests below")
def test_hold_a_mount_until_stopped(fresh, tmp_path):
    """Mounts outside the `mounts` fixture (as a careless test might), then waits."""
    mp = tmp_path / "held"
    mp.mkdir()
    fresh.ok("mount", "dax0.0", mp)
    Path(os.environ[HOLD_ENV]).write_text(json.dumps({"mountpoint": str(mp)}))
    if os.environ.get("FAMFS_PY_TEST_HOLD_FAIL"):
        raise AssertionError("failing on purpose with a mount up")
    threading.Event().wait(300)  # until the signal


def _start_child(tmp_path: Path, *, fail: bool = False) -> tuple[subprocess.Popen, dict]:
    marker = tmp_path / "held.json"
    env = {**os.environ, HOLD_ENV: str(marker)}
    if fail:
        env["FAMFS_PY_TEST_HOLD_FAIL"] = "1"
    child = subprocess.Popen(
        [
            sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
            f"--rootdir={REPO}", "-c", str(REPO / "pyproject.toml"),
            f"--basetemp={tmp_path / 'child-base'}",
            f"{Path(__file__).resolve()}::test_hold_a_mount_until_stopped",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        # a run started in the background by a script inherits SIGINT ignored: Ctrl-C is
        # what is tested here, so the child gets the default back (Python then handles it)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not marker.exists():
        if child.poll() is not None or time.monotonic() > deadline:
            child.kill()
            pytest.fail(f"the child never mounted:\n{child.communicate()[0]}")
        time.sleep(0.05)
    return child, json.loads(marker.read_text())


def _famfs_mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [
            line.split()[4]
            for line in f
            if " fuse.famfs-py " in line and line.split()[4].startswith(str(path))
        ]


def _assert_nothing_left(tmp_path: Path) -> None:
    assert _famfs_mounts_under(tmp_path) == []
    assert list(memory_dir().glob(f"{run_isolation.RUN_PREFIX}*")) == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_run_unmounts_and_removes_its_memory(tmp_path, signum):
    child, held = _start_child(tmp_path)
    (run_dir, *_) = memory_dir().glob(f"{run_isolation.RUN_PREFIX}*")
    assert any(run_dir.glob("famfs-py.*")), "the child's memory is not in its run directory"
    assert _famfs_mounts_under(tmp_path) == [held["mountpoint"]]
    if signum == signal.SIGINT:
        os.killpg(child.pid, signum)  # as a terminal's Ctrl-C: the whole foreground group
    else:
        child.send_signal(signum)
    output = child.communicate(timeout=120)[0]
    assert child.returncode != 0, output
    assert "cleaned up what a test left behind: mount" in output, output
    _assert_nothing_left(tmp_path)


def test_a_failing_run_unmounts_and_removes_its_memory(tmp_path):
    child, _held = _start_child(tmp_path, fail=True)
    output = child.communicate(timeout=120)[0]
    assert child.returncode == 1 and "failing on purpose" in output, output
    _assert_nothing_left(tmp_path)


def test_a_killed_runs_leftovers_are_swept_by_the_next_run_and_a_live_run_is_not(tmp_path):
    live = memory_dir() / f"{run_isolation.RUN_PREFIX}live"  # a run that is still going
    live.mkdir()
    (live / "famfs-py.0123456789abcdef").write_bytes(b"in use")
    lock = os.open(live / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC)
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        child, held = _start_child(tmp_path)
        child.kill()  # SIGKILL: no cleanup at all
        child.communicate(timeout=60)
        assert _famfs_mounts_under(tmp_path) == [held["mountpoint"]]  # killed: all still there
        swept = run_isolation.sweep(memory_dir(), BIN)
        assert len(swept) == 1 and swept[0] != live
        assert _famfs_mounts_under(tmp_path) == []
        assert not swept[0].exists()
        assert (live / "famfs-py.0123456789abcdef").exists()
    finally:
        os.close(lock)
    run_isolation.sweep(memory_dir(), BIN)  # now that it is unlocked, it goes too
    _assert_nothing_left(tmp_path)
