"""Reliability campaign, concurrency and load: one master and three client hosts on one
memory; many parallel creates through the CLI (creat -M, cp -r, mkdir -p) and through the
control channel from threads, while every client lists, reads and follows the log. No
divergence (each client's tree equals the master's: paths, inode numbers, sizes, modes,
owners), no lost entry, no allocation collision, and the clients converge by themselves
after the last create (how fast is a figure of the report: typically under a second).
(The 50-process claim race is tests/test_dax_holder.py's.)"""

from __future__ import annotations

import errno
import json
import os
import random
import stat
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers import BIN, Host, MiB, assert_no_traceback, wait_until
from reliability import figures

from famfs_py import protocol
from famfs_py.channel import Channel
from famfs_py.errors import FamfsError

CLIENTS = [
    "11111111-1111-4111-8111-111111111111",
    "22222222-2222-4222-8222-222222222222",
    "33333333-3333-4333-8333-333333333333",
]
# Clients must catch up on their own (no command run on them): a deadline, not a speed target.
# How fast they do (typically 0.3-0.6 s after the last create) is a figure of the report.
CONVERGE_SECONDS = 30.0


@dataclass
class Load:
    """What one run asks for; `scale` multiplies every count."""

    scale: int
    created: dict[str, int] = field(default_factory=dict)  # path -> size, acknowledged
    seeds: dict[str, int] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ok(self, path: str, size: int | None = None, seed: int = 0) -> None:
        with self.lock:
            if size is None:
                self.dirs.add(path)
            else:
                self.created[path] = size
                if seed:
                    self.seeds[path] = seed


def tree(mp: Path) -> dict[str, tuple[bool, int, int, int, int, int]]:
    """Everything a host shows under its mount (but .meta): kind, inode, size, mode, owner."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(mp):
        if Path(dirpath) == mp and ".meta" in dirnames:
            dirnames.remove(".meta")
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            rel = os.path.relpath(os.path.join(dirpath, name), mp)
            out[rel] = (
                stat.S_ISDIR(st.st_mode),
                st.st_ino,
                st.st_size,
                stat.S_IMODE(st.st_mode),
                st.st_uid,
                st.st_gid,
            )
    return out


@pytest.fixture
def cluster(host_factory, mounts, tmp_path):
    master = host_factory("master")
    master.ok("dax", "create", "dax0.0", "--size", "16g")
    master.ok("mkfs", "dax0.0")
    clients = []
    for k, system in enumerate(CLIENTS):
        client = host_factory(f"client{k}", system)
        client.ok("dax", "create", "dax0.0", "--share", master.node())
        clients.append(client)
    mmp = mounts.mount(master, tmp_path / "mnt-master")
    cmps = [mounts.mount(c, tmp_path / f"mnt-client{k}") for k, c in enumerate(clients)]
    return master, mmp, clients, cmps


def _cli_workers(master: Host, mmp: Path, load: Load, src: Path) -> list[tuple]:
    """Start the CLI processes; returns (process, what it creates) pairs."""
    started = []
    env = {**os.environ, **master.env}

    def spawn(args: list[str], creates: list[tuple[str, int, int]], dirs: list[str]) -> None:
        proc = subprocess.Popen(
            [str(BIN / "famfs-py"), *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append((proc, creates, dirs))

    rng = random.Random(load.scale)
    for k in range(2 * load.scale):  # creat -M: several files in one call, seeded data
        files = []
        for i in range(10):
            size = rng.randint(1, 256 << 10)
            files.append((f"m{k}-{i}", size, rng.randrange(1, 1 << 32) | 1))
        multi = [arg for n, s, d in files for arg in ("-M", f"{mmp / n},{s},{d:#x}")]
        spawn(["creat", "-t", "1", *multi], files, [])
    for k in range(2 * load.scale):  # cp -r of a small tree
        dest = f"cp{k}"
        files = [
            (f"{dest}/{p.relative_to(src)}", p.stat().st_size, 0)
            for p in src.rglob("*")
            if p.is_file()
        ]
        dirs = [dest] + [f"{dest}/{p.relative_to(src)}" for p in src.rglob("*") if p.is_dir()]
        spawn(["cp", "-r", str(src), str(mmp / dest)], [f for f in files if f[1]], dirs)
    for k in range(2 * load.scale):  # mkdir -p of deep paths
        deep = f"deep{k}/a/b/c"
        spawn(
            ["mkdir", "-p", str(mmp / deep)], [], [f"deep{k}", f"deep{k}/a", f"deep{k}/a/b", deep]
        )
    return started


def _channel_worker(mmp: Path, load: Load, name: str, count: int) -> None:
    """Creates through the control channel, from a thread, as a library user would."""
    rng = random.Random(name)
    try:
        with Channel(str(mmp), timeout=60) as chan:
            chan.call(protocol.Mkdir(name, 0o750))
            load.ok(name)
            for i in range(count):
                size = rng.randint(1, 3 * MiB)
                mode = rng.choice([0o600, 0o640, 0o644])
                reply = chan.call(protocol.Creat(f"{name}/f{i}", size, mode, uid=1000 + i % 3))
                assert reply.created and reply.size == size
                load.ok(f"{name}/f{i}", size)
    except (FamfsError, AssertionError) as exc:
        load.errors.append(f"{name}: {exc}")


def _log_used(mp: Path) -> int:
    with Channel(str(mp)) as chan:
        return chan.call(protocol.Status()).log.used


def _client_reader(cmp: Path, load: Load, stop: threading.Event) -> None:
    """List and read everything the client shows, again and again, while creates go on."""
    while not stop.is_set():
        for dirpath, dirnames, filenames in os.walk(cmp):
            if Path(dirpath) == cmp and ".meta" in dirnames:
                dirnames.remove(".meta")
            for name in filenames:
                try:
                    with open(os.path.join(dirpath, name), "rb") as f:
                        f.read(4096)
                except OSError as exc:
                    load.errors.append(f"client read {name}: {exc}")
        time.sleep(0.01)


def _logplayer(cmp: Path, load: Load, stop: threading.Event) -> None:
    """`famfs-py logplay` by hand while the follower also replays: one replay at a time."""
    while not stop.is_set():
        try:
            with Channel(str(cmp)) as chan:
                reply = chan.call(protocol.Logplay())
            if reply.bad:
                load.errors.append(f"logplay found bad entries: {reply.bad}")
        except FamfsError as exc:
            load.errors.append(f"logplay: {exc}")
        time.sleep(0.05)


def _run_load(cluster, tmp_path: Path, scale: int) -> None:
    stop = threading.Event()
    try:
        _load_and_check(cluster, tmp_path, scale, stop)
    finally:
        stop.set()  # the readers and the log player end with the test, passed or not


def _load_and_check(cluster, tmp_path: Path, scale: int, stop: threading.Event) -> None:
    master, mmp, clients, cmps = cluster
    load = Load(scale)
    src = tmp_path / "src"
    for d in range(3):
        (src / f"d{d}").mkdir(parents=True)
        for f in range(3):
            (src / f"d{d}" / f"f{f}").write_bytes(os.urandom(1000 + 4099 * (d * 3 + f)))
    watchers = [
        threading.Thread(target=_client_reader, args=(c, load, stop), daemon=True) for c in cmps
    ]
    watchers.append(threading.Thread(target=_logplayer, args=(cmps[0], load, stop), daemon=True))
    for t in watchers:
        t.start()
    started = time.monotonic()
    procs = _cli_workers(master, mmp, load, src)
    threads = [
        threading.Thread(target=_channel_worker, args=(mmp, load, f"t{k}", 12 * scale))
        for k in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    for proc, creates, dirs in procs:
        out, err = proc.communicate(timeout=600)
        assert "Traceback" not in out + err and "internal error" not in err, err
        if proc.returncode != 0:
            load.errors.append(f"{proc.args[1:3]}: rc {proc.returncode}: {err.strip()}")
            continue
        for path, size, seed in creates:
            load.ok(path, size, seed)
        for path in dirs:
            load.ok(path)
    last_create = time.monotonic()
    creating = last_create - started
    assert not load.errors, load.errors[:10]

    # every acknowledged create is on the master, and nothing else
    expected = tree(mmp)
    files = {p: v[2] for p, v in expected.items() if not v[0]}
    assert files == load.created, set(files) ^ set(load.created)
    assert {p for p, v in expected.items() if v[0]} == load.dirs

    # every client's daemon replays the whole log by itself after the last create
    used = _log_used(mmp)
    caught_up: dict[Path, float] = {}
    while len(caught_up) < len(cmps) and time.monotonic() - last_create < CONVERGE_SECONDS:
        for cmp in cmps:
            if cmp not in caught_up and _log_used(cmp) == used:
                caught_up[cmp] = time.monotonic() - last_create
        time.sleep(0.01)
    slowest = max(caught_up.values(), default=float("inf"))
    # ... and shows exactly the master's tree: paths, inode numbers, sizes, modes, owners
    divergent = sum(1 for cmp in cmps if tree(cmp) != expected)
    stop.set()
    for t in watchers:
        t.join(60)
    figures.add("creates under load (files and directories)", len(load.created) + len(load.dirs))
    figures.add("creates under load: seconds", creating)
    figures.add("divergences found", divergent)
    figures.most("client catch-up after the last create: worst seconds", slowest)
    assert slowest < CONVERGE_SECONDS, f"clients took {slowest:.2f}s to replay the log"
    assert divergent == 0, "a client's tree differs from the master's"
    assert not load.errors, load.errors[:10]

    # the log and the space agree: no lost entry, no double allocation
    status = json.loads(master.ok("status", "--json", mmp).stdout)
    assert status["log"]["used"] == len(load.created) + len(load.dirs)
    result = master.cli("fsck", "--json", mmp)
    assert_no_traceback(result)
    report = json.loads(result.stdout)
    assert result.returncode == 0, result.out
    assert (report["collisions"], report["bad_entries"]) == (0, [])
    assert (report["files"], report["dirs"]) == (len(load.created), len(load.dirs))
    # the seeded data written by the master's creat -M reads back exact on a client
    for k, cmp in enumerate(cmps):
        sample = sorted(load.seeds)[k :: len(cmps)][:10]
        args = [a for p in sample for a in ("-m", f"{cmp / p},{load.seeds[p]:#x}")]
        result = clients[k].cli("verify", *args)
        assert result.returncode == 0, result.out


def test_a_master_and_three_clients_under_parallel_creates_never_diverge(cluster, tmp_path):
    _run_load(cluster, tmp_path, scale=1)


@pytest.mark.slow
def test_a_master_and_three_clients_under_heavy_parallel_creates_never_diverge(cluster, tmp_path):
    _run_load(cluster, tmp_path, scale=20)


def test_a_busy_client_daemon_still_answers_and_reads_stay_exact(cluster):
    """Reads on a client while the master appends: no EIO, no short read, no stale size."""
    master, mmp, clients, cmps = cluster
    master.ok("creat", "-s", "1m", "-r", "-S", "0x5eed", mmp / "steady")
    wait_until((cmps[0] / "steady").exists, what="the client seeing the new file")
    expected = (mmp / "steady").read_bytes()
    errors: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                if (cmps[0] / "steady").read_bytes() != expected:
                    errors.append("a client read differs")
            except OSError as exc:
                errors.append(f"{errno.errorcode.get(exc.errno or 0)}: {exc}")

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    master.ok("creat", *[a for i in range(40) for a in ("-M", f"{mmp / f'x{i}'},4096")])
    stop.set()
    for t in threads:
        t.join(30)
    assert not errors, errors[:5]
    clients[0].ok("status", cmps[0])
