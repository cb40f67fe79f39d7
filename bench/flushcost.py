"""The "flush" group: what CPU cache flushing costs, each case measured with it on and off
in the same round (the order alternating by round, so that the ratios on/off compare like
with like on this shared machine), and pcq's message rate and one-way latency between two
simulated hosts for a few bucket sizes.

- log append: `Log.append` in this process (the entry, then the header; flushing adds one
  flush of each), on a device of its own, in batches with flushing on and off in turn;
- cp: `famfs-py cp` (in this process) of one large file from tmpfs over an existing file of
  the same size, into a mount `-o flush=on|off` (the memory's first touch done beforehand);
- follow: a client's latency from the master's creat reply until the file is visible on the
  client (`--follow-interval 0.01`: the client looks at the log every 10 ms);
- pcq: producer on the master, consumer on a client `--rw`, flush on against --dontflush.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import model as m
from .env import REPO, BenchError, GiB, Host

if TYPE_CHECKING:  # rounds imports this module
    from .rounds import Bench

CLIENT_UUID = "0c1d2e3f-4a5b-4c6d-8e7f-901122334455"
BUCKET_SIZES = m.PCQ_BUCKET_SIZES
NBUCKETS = m.PCQ_NBUCKETS


@dataclass
class Pair:
    """The two hosts of the group and the mounts of the current mode."""

    master: Host
    client: Host
    mmp: Path
    cmp: Path


class FlushGroup:
    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.env = bench.env
        self.prepared = False

    def prepare(self) -> None:
        env = self.env
        size = 4 * GiB
        env.dax_create("dax5.0", size)
        env.dax_create("dax6.0", size)
        env.host.cli("mkfs", "-f", "-l", "64m", "dax6.0")  # room for every round's appends
        self.client = Host(env.base / "client", env.host.log_dir, CLIENT_UUID)
        self.client.root.mkdir(exist_ok=True)
        self.client.cli("dax", "create", "dax5.0", "--share", str(env.host.root / "dev/dax5.0"))
        env.stack.callback(self.client.cli, "dax", "remove", "dax5.0", check=False)
        env.host.cli("mkfs", "-f", "dax5.0")
        self.prepared = True
        with self.pair("off") as pair:  # the cp targets, their memory touched once
            for mode in ("on", "off"):
                env.host.cli("cp", str(self.bench.t_read), str(pair.mmp / f"cp-{mode}"))

    @contextlib.contextmanager
    def pair(self, flush: str) -> Iterator[Pair]:
        env = self.env
        opts = ["-o", f"flush={flush}", "--follow-interval", "0.01"]
        with (
            env.famfs_mount("dax5.0", f"flush-master-{flush}", "auto", args=opts) as mm,
            env.famfs_mount(
                "dax5.0", f"flush-client-{flush}", "auto", args=[*opts, "--rw"], host=self.client
            ) as cm,
        ):
            yield Pair(env.host, self.client, mm.mountpoint, cm.mountpoint)

    def run(self, r: int) -> None:
        if not self.prepared:
            self.prepare()
        modes = ["on", "off"] if r % 2 == 0 else ["off", "on"]
        self._log_append(r)
        for mode in modes:
            with self.pair(mode) as pair:
                self._cp(pair, mode)
                self._follow(pair, r, mode)
        self._pcq(r)

    # -- the filesystem's own flushes ----------------------------------------------------
    def _log_append(self, r: int) -> None:
        """Batches of appends to one log, flushing on and off in turn (one sample a batch)."""
        import uuid

        from famfs_py import omf
        from famfs_py.dax import cache
        from famfs_py.dax.device import resolve_device
        from famfs_py.fs.filesystem import Famfs

        batches, per_batch = (6, 50) if self.bench.cfg.quick else (10, 100)
        device = resolve_device("dax6.0", str(self.env.host.root))
        with Famfs.open(device, this_host=uuid.UUID(self.env.host.system_uuid), flush="on") as fs:
            log, policies = fs.log, {"on": fs.coherency, "off": cache.OFF}
            for b in range(batches):
                for mode in ("on", "off") if (r + b) % 2 == 0 else ("off", "on"):
                    log.coherency = policies[mode]
                    start = time.perf_counter()
                    for i in range(per_batch):
                        name = f"r{r}-b{b}-{mode}-{i}"
                        log.next_index = log.append(omf.MkdirMeta(0, 0, 0o755, name)) + 1
                    seconds = time.perf_counter() - start
                    self.bench.rec(
                        "flush_log_append", m.FLUSH_SYSTEMS[mode], seconds * 1e6 / per_batch
                    )

    def _cp(self, pair: Pair, mode: str) -> None:
        """famfs-py cp in this process (its start-up is not what is measured)."""
        from famfs_py.cli.main import main as cli_main

        size = self.bench.cfg.file_size
        src, dest = str(self.bench.t_read), str(pair.mmp / f"cp-{mode}")
        start = time.perf_counter()
        if cli_main(["cp", src, dest]) != 0:
            raise BenchError(f"famfs-py cp {src} {dest} failed")
        self.bench.rec(
            "flush_cp", m.FLUSH_SYSTEMS[mode], size / GiB / (time.perf_counter() - start)
        )

    def _follow(self, pair: Pair, r: int, mode: str) -> None:
        from famfs_py import channel, protocol

        count = 5 if self.bench.cfg.quick else 10
        where = channel.locate(str(pair.mmp))
        with channel.Channel(where.mountpoint) as chan:
            for i in range(count):
                name = f"follow-r{r}-{mode}-{i}"
                chan.call(protocol.Creat(name, 4096))
                start = time.perf_counter()
                _wait_exists(pair.cmp / name, poll=0.0005)
                self.bench.rec(
                    "flush_follow", m.FLUSH_SYSTEMS[mode], (time.perf_counter() - start) * 1e3
                )

    # -- pcq -----------------------------------------------------------------------------
    def _pcq(self, r: int) -> None:
        quick = self.bench.cfg.quick
        rate_n = 20_000 if quick else 100_000
        paced_n = 500 if quick else 2_000
        with self.pair("on") as pair:
            for bucket_size in BUCKET_SIZES:
                queue = f"pcq-r{r}-{bucket_size}"
                pair.master.cli(
                    "pcq", "--create", "-b", str(bucket_size), "-n", str(NBUCKETS),
                    str(pair.mmp / queue),
                )  # fmt: skip
                _wait_exists(pair.cmp / f"{queue}.consumer")
                on, off = m.pcq_systems(bucket_size)
                modes = [(on, False), (off, True)]
                if r % 2:
                    modes.reverse()
                for system, dontflush in modes:
                    count = rate_n if bucket_size < 65536 else rate_n // 10
                    rate = _pcq_run(pair, queue, count, paced=False, dontflush=dontflush)
                    self.bench.rec("pcq_rate", system, count / rate["seconds"] / 1000)
                    paced = _pcq_run(pair, queue, paced_n, paced=True, dontflush=dontflush)
                    self.bench.rec("pcq_latency", system, paced["median_us"])
                    self.bench.rec("pcq_latency_p99", system, paced["p99_us"])


def _wait_exists(path: Path, timeout: float = 10.0, poll: float = 0.005) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise BenchError(f"{path} did not appear on the client in {timeout} s")
        time.sleep(poll)


def _role(
    host: Host, role: str, queue: Path, count: int, paced: bool, dontflush: bool
) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "bench.pcqrole", role, str(queue), str(count)]
    if paced:
        argv.append("--paced")
    if dontflush:
        argv.append("--dontflush")
    proc = subprocess.Popen(
        argv,
        cwd=REPO,
        env={**os.environ, **host.env},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc


def _read_json(proc: subprocess.Popen, timeout: float) -> dict:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else ""
    if not line:
        proc.kill()
        _, err = proc.communicate()
        raise BenchError(f"pcq role exited without an answer: {err.strip()[-500:]}")
    return json.loads(line)


def _pcq_run(pair: Pair, queue: str, count: int, *, paced: bool, dontflush: bool) -> dict:
    """Producer on the master, consumer on the client (two processes)."""
    consumer = _role(pair.client, "consume", pair.cmp / queue, count, paced, dontflush)
    producer = _role(pair.master, "produce", pair.mmp / queue, count, paced, dontflush)
    try:
        _read_json(consumer, 60)
        _read_json(producer, 60)
        assert producer.stdin is not None
        producer.stdin.write("go\n")
        producer.stdin.flush()
        sent = _read_json(producer, 300)
        got = _read_json(consumer, 60)
    finally:
        for proc in (producer, consumer):
            with contextlib.suppress(Exception):
                proc.communicate(timeout=30)
    if got["received"] != count or got["errors"]:
        raise BenchError(f"pcq {queue}: received {got['received']} of {count}: {got['messages']}")
    out = {"seconds": (got["last"] - sent["start"]) / 1e9}
    if paced:
        lat = sorted((c - p) / 1e3 for p, c in zip(sent["times"], got["times"], strict=True))
        out["median_us"] = statistics.median(lat)
        out["p99_us"] = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    return out
