"""Small files (issue 25): creation on a filesystem of 4 KiB allocation units (mkfs --4k), a
client following the master through it, and, in full runs, the scale run: one filesystem of
200,000 files made, mounted, listed and checked, each step timed, statfs checked exact.

Small files go to their own device: on 2 MiB units each would cost 2 MiB of memory (a
10,000-file copy, 20 GiB), and its first touch a 2 MiB page zeroed.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from famfs_py import omf

from . import model as m
from .env import BenchError, GiB, Host, KiB, MiB, drop_caches, run

if TYPE_CHECKING:
    from .rounds import Bench

SMALL_DEVICE = "dax4.0"
SCALE_DEVICE = "dax7.0"
CLIENT_UUID = "0c1d2e3f-4a5b-4c6d-8e7f-9011223344a5"


def log_len_for(entries: int) -> int:
    """The smallest valid log (a power of two >= 8 MiB) with room for `entries`."""
    need = omf.LOG_HEADER_SIZE + (entries + 64) * omf.LOG_ENTRY_SIZE
    length = omf.DEFAULT_LOG_LEN
    while length < need:
        length *= 2
    return length


class SmallFiles:
    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.env = bench.env
        cfg = bench.cfg
        entries = cfg.rounds * (2 * cfg.cp_files + cfg.creat_runs + 8)
        self.log_len = log_len_for(entries)
        size = 16 * MiB + self.log_len + entries * 4 * KiB
        self.env.dax_create(SMALL_DEVICE, max(4 * GiB, -(-size // GiB) * GiB))
        self.env.host.cli("mkfs", "-f", "--4k", "-l", str(self.log_len), SMALL_DEVICE)
        self.client = Host(self.env.base / "small-client", self.env.host.log_dir, CLIENT_UUID)
        self.client.root.mkdir(parents=True, exist_ok=True)
        memory = self.env.host.root / "dev" / SMALL_DEVICE
        self.client.cli("dax", "create", SMALL_DEVICE, "--share", str(memory))
        self.env.stack.callback(self.client.cli, "dax", "remove", SMALL_DEVICE, check=False)

    def run(
        self,
        r: int,
        timed: Callable[[list[str], dict[str, str] | None], float],
        creat_cmd: Sequence[str],
    ) -> None:
        """Creation on the 4 KiB-unit filesystem (single creat, cp -r, creat -M), with a
        client mounted that follows the master's log: how long after the master's cp -r
        the client has every file (its follow lag)."""
        bench, env = self.bench, self.env
        cfg, host = bench.cfg, env.host
        with (
            env.famfs_mount(SMALL_DEVICE, f"mnt-small-r{r}") as mount,
            env.famfs_mount(
                SMALL_DEVICE,
                f"mnt-small-client-r{r}",
                args=["--follow-interval", "0.01"],
                host=self.client,
            ) as client,
        ):
            mp = mount.mountpoint
            for k in range(cfg.creat_runs):
                cmd = [*creat_cmd, "creat", "-s", "4k", str(mp / f"creat-r{r}-{k}")]
                bench.rec("creat_single", m.FAMFS_CREAT, timed(cmd, host.env) * 1e3)
            target = mp / f"cp-r{r}"
            cmd = [*creat_cmd, "cp", "-r", str(bench.cp_src), str(target)]
            bench.rec("create_batch", m.FAMFS_CP, timed(cmd, host.env) * 1e3 / cfg.cp_files)
            done = time.perf_counter()
            seen = client.mountpoint / f"cp-r{r}" / f"s{cfg.cp_files - 1:05d}"
            deadline = done + 60
            while not seen.exists():
                if time.perf_counter() > deadline:
                    raise BenchError(f"the client did not see {seen.name} within 60 s")
                time.sleep(0.002)
            bench.rec("follow_batch", m.FAMFS_FOLLOW, (time.perf_counter() - done) * 1e3)
            if bench.features.creat_multi:
                host.cli("mkdir", str(mp / f"multi-r{r}"))
                cmd = [*creat_cmd, "creat"]
                for i in range(cfg.cp_files):
                    cmd += ["-M", f"{mp}/multi-r{r}/m{i:05d},{4 * KiB}"]
                seconds = timed(cmd, host.env)
                bench.rec("create_batch", m.FAMFS_MULTI, seconds * 1e3 / cfg.cp_files)


def scale_run(bench: Bench, files: int) -> None:
    """Full runs: mkfs --4k with a log for `files`, `files` files created by one cp -r (a
    tree of hard links to one small file on tmpfs: the source costs no memory), umount,
    mount (the whole log replayed), ls -lR after drop_caches, fsck through the mount; each
    step timed once. statfs must say exactly what fsck says is allocated."""
    env, host = bench.env, bench.env.host
    log_len = log_len_for(files + files // 100 + 10)
    size = -(-(16 * MiB + log_len + files * 4 * KiB) // GiB) * GiB
    env.dax_create(SCALE_DEVICE, max(4 * GiB, size))
    src = bench.tmp / "scale-src"
    ones = bench.tmp / "scale-ones"  # one file per directory, linked 1,000 times (nlink caps)
    ones.mkdir()
    for d in range(-(-files // 1000)):
        (src / f"d{d:03d}").mkdir(parents=True)
        (ones / f"{d:03d}").write_bytes(os.urandom(1000))
    for i in range(files):
        os.link(ones / f"{i // 1000:03d}", src / f"d{i // 1000:03d}" / f"f{i:06d}")
    note = f"{files:,} files of 1,000 bytes, log {log_len >> 20} MiB"

    def step(case: str, action: Callable[[], object]) -> None:
        start = time.perf_counter()
        action()
        bench.rec(case, m.FAMFS_SCALE, time.perf_counter() - start)
        bench.results.note(case, m.FAMFS_SCALE, note)

    step("scale_mkfs", lambda: host.cli("mkfs", "-f", "--4k", "-l", str(log_len), SCALE_DEVICE))
    with env.famfs_mount(SCALE_DEVICE, "mnt-scale") as mount:
        target = str(mount.mountpoint / "t")
        step("scale_create", lambda: host.cli("cp", "-r", str(src), target, timeout=3600))
    drop_caches()
    with env.famfs_mount(SCALE_DEVICE, "mnt-scale") as mount:
        bench.rec("scale_mount", m.FAMFS_SCALE, mount.seconds)
        bench.results.note("scale_mount", m.FAMFS_SCALE, note)
        mp = mount.mountpoint
        step("scale_ls", lambda: run(["ls", "-lR", str(mp)], timeout=3600))
        report: dict = {}

        def fsck() -> None:
            report.update(json.loads(host.cli("fsck", "--json", str(mp), timeout=3600).stdout))

        step("scale_fsck", fsck)
        vfs = os.statvfs(mp)
        used = (vfs.f_blocks - vfs.f_bfree) * vfs.f_frsize
        if report.get("files") != files or used != report.get("alloc_bytes"):
            counted, allocated = report.get("files"), report.get("alloc_bytes")
            raise BenchError(
                f"scale run: fsck counts {counted} files and {allocated} bytes allocated; "
                f"statfs says {used} bytes used"
            )
    for tree in (src, ones):
        run(["rm", "-rf", str(tree)])
