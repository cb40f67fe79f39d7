"""Profile famfs-py where a benchmark target is missed: py-spy samples the daemon (or a CLI
process) while a workload runs, and the collapsed stacks are summed per function.

Run: python -m bench.profile [--seconds S] [--out DIR] WORKLOAD...
Workloads: read-auto, read-never, randread, stat-cold, open-warm, cp, creat (imports and
cProfile), mount-8m, mount-256m (cProfile of the daemon up to its first answer; the 256 MiB
log filled to 90%). Summaries go to stdout and to
DIR/profile-WORKLOAD.txt (default: a new directory outside the source tree, printed; give
--out bench/results/profiles to update the committed profiles).
"""

from __future__ import annotations

import argparse
import collections
import io as io_module
import os
import pstats
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from famfs_py import omf

from . import io, logfill
from .env import BIN, Environment, GiB, MiB, drop_caches, is_mounted, run
from .rounds import SMALL, _roundup, _tree

PY_SPY = BIN / "py-spy"
WORKLOADS = (
    "read-auto",
    "read-never",
    "randread",
    "stat-cold",
    "open-warm",
    "cp",
    "creat",
    "mount-8m",
    "mount-256m",
)
CPROFILE_CREAT = """
import cProfile, io, pstats, sys
from famfs_py.cli.main import main
profile = cProfile.Profile()
profile.enable()
main(["creat", "-s", "4k", sys.argv[1]])
profile.disable()
out = io.StringIO()
pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(25)
print(out.getvalue())
"""
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def summarize(raw: Path, title: str, top: int = 18) -> str:
    """Self and inclusive shares per function of the main thread's busy samples, from
    py-spy's raw (collapsed) output; samples waiting for work (epoll, accept) are idle."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    idle = busy = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = [_short(f) for f in stack.split(";")]
        if frames[0].startswith("Thread._bootstrap"):
            continue  # helper threads: the holder listener, trio's idle thread cache
        count = int(count_text)
        if _is_idle(frames[-1]):
            idle += count
            continue
        busy += count
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    total = idle + busy
    if not busy:
        return f"== {title}: no busy samples ({total} idle)\n"
    lines = [
        f"== {title}: main thread busy in {100 * busy / total:.0f}% of {total} samples "
        "(the rest waiting for requests); shares below are of the busy samples"
    ]
    lines.append("  self time (the function itself; pyfuse3's C code shows as its caller):")
    for name, count in own.most_common(top):
        lines.append(f"    {100 * count / busy:5.1f}%  {name}")
    lines.append("  inclusive time (the function and what it calls):")
    for name, count in inclusive.most_common(top + 12):
        lines.append(f"    {100 * count / busy:5.1f}%  {name}")
    return "\n".join(lines) + "\n"


def _short(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match.group("file")
    for marker in ("site-packages/", "famfs_py/", "bench/", "lib/python3.11/"):
        if marker in path:
            path = (marker if marker != "lib/python3.11/" else "") + path.split(marker, 1)[1]
            break
    return f"{match.group('func')} ({path})"


def _is_idle(leaf: str) -> bool:
    return any(
        word in leaf
        for word in ("get_events (", "_epoll_wait (", "select (", "accept (", "sleep (")
    )


class Recorder:
    """py-spy record on a running process until stopped."""

    def __init__(self, pid: int, raw: Path, rate: int = 250) -> None:
        self.raw = raw
        argv = [str(PY_SPY), "record", "-p", str(pid), "-r", str(rate), "-f", "raw"]
        argv += ["--idle", "-o", str(raw)]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.5)  # let it attach

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _daemon_pid(mount_pid: int | None) -> int:
    if mount_pid is None:
        raise RuntimeError("famfs-py mount did not report its daemon pid")
    return mount_pid


class Profiler:
    def __init__(self, env: Environment, seconds: float, out: Path) -> None:
        self.env = env
        self.seconds = seconds
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        self.size = 1 * GiB
        self.nfiles = 10_000
        self.prepared = False

    def prepare(self) -> None:
        if self.prepared:
            return
        items: list = [logfill.DirSpec("seq"), logfill.FileSpec("seq/read", self.size)]
        items.append(logfill.DirSpec("stat"))
        items += [logfill.FileSpec(f"stat/f{i:05d}", SMALL) for i in range(self.nfiles)]
        size = _roundup(16 * MiB + 2 * self.size + 2 * self.nfiles * omf.ALLOC_UNIT, GiB)
        self.mem = self.env.dax_create("dax0.0", size)
        built = logfill.build("dax0.0", self.env.host.root, items, keep_extents={"seq/read"})
        ext = built.extents["seq/read"]
        logfill.fill_region(self.mem, ext.offset, self.size, os.urandom(io.CHUNK))
        self.cp_src = self.env.path("cpsrc")
        for i in range(2000):
            (self.cp_src / f"s{i:05d}").write_bytes(os.urandom(SMALL))
        self.prepared = True

    def _write(self, name: str, text: str) -> None:
        print(text, flush=True)
        (self.out / f"profile-{name}.txt").write_text(text)

    def _loop(self, work: Callable[[], object]) -> int:
        deadline = time.monotonic() + self.seconds
        count = 0
        while time.monotonic() < deadline:
            work()
            count += 1
        return count

    def daemon(
        self,
        name: str,
        cache: str,
        work: Callable[[Path], object],
        prep: Callable[[Path], object] | None = None,
    ) -> None:
        """Sample the daemon while `work(mountpoint)` repeats for the set time."""
        self.prepare()
        with self.env.famfs_mount("dax0.0", "mnt-profile", cache) as mount:
            if prep is not None:
                prep(mount.mountpoint)
            raw = self.out / f"raw-{name}.txt"
            recorder = Recorder(_daemon_pid(mount.pid), raw)
            try:
                count = self._loop(lambda: work(mount.mountpoint))
            finally:
                recorder.stop()
            text = summarize(raw, f"{name}: famfs-py daemon, {count} iterations")
            if not os.environ.get("BENCH_KEEP_RAW"):
                raw.unlink(missing_ok=True)
            self._write(name, text)

    def run(self, workload: str) -> None:
        paths: list[str] = []

        def stat_paths(mp: Path) -> list[str]:
            if not paths:
                paths.extend(str(mp / "stat" / f"f{i:05d}") for i in range(self.nfiles))
            return paths

        if workload in ("read-auto", "read-never"):
            cache = workload.split("-")[1]
            self.daemon(workload, cache, lambda mp: io.seq_read(mp / "seq" / "read", self.size))
        elif workload == "randread":
            offsets = io.random_offsets(self.size, 20_000)
            self.daemon(
                workload,
                "never",
                lambda mp: io.rand_read(mp / "seq" / "read", offsets, direct=True),
            )
        elif workload == "stat-cold":

            def cold_stats(mp: Path) -> None:
                drop_caches()
                io.stat_all(stat_paths(mp))

            self.daemon(workload, "auto", cold_stats)
        elif workload == "open-warm":
            self.daemon(workload, "auto", lambda mp: io.open_close_all(stat_paths(mp)))
        elif workload == "cp":
            self.profile_cp()
        elif workload == "creat":
            self.profile_creat()
        elif workload in ("mount-8m", "mount-256m"):
            self.profile_mount(workload)
        else:
            raise SystemExit(f"unknown workload {workload!r} (one of {', '.join(WORKLOADS)})")

    def profile_cp(self) -> None:
        """Both sides of `famfs-py cp -r`: the client process and the daemon."""
        self.prepare()
        with self.env.famfs_mount("dax0.0", "mnt-profile") as mount:
            raw_daemon = self.out / "raw-cp-daemon.txt"
            raw_client = self.out / "raw-cp-client.txt"
            recorder = Recorder(_daemon_pid(mount.pid), raw_daemon)
            argv = [str(PY_SPY), "record", "-r", "250", "-f", "raw", "--idle", "-o"]
            argv += [str(raw_client), "--", str(BIN / "famfs-py"), "cp", "-r"]
            argv += [str(self.cp_src), str(mount.mountpoint / "cp")]
            start = time.perf_counter()
            try:
                run(argv, env=self.env.host.env, timeout=600)
            finally:
                seconds = time.perf_counter() - start
                recorder.stop()
            files = len(os.listdir(self.cp_src))
            title = f"cp -r of {files} files ({1e3 * seconds / files:.2f} ms/file under py-spy)"
            text = summarize(raw_client, f"{title}: the cp process")
            text += summarize(raw_daemon, f"{title}: the daemon")
            for raw in (raw_client, raw_daemon):
                raw.unlink(missing_ok=True)
            self._write("cp", text)

    def profile_creat(self) -> None:
        """Where one `famfs-py creat` process spends its time: imports and cProfile."""
        self.prepare()
        with self.env.famfs_mount("dax0.0", "mnt-profile") as mount:
            target = mount.mountpoint / "creat-probe"
            argv = [sys.executable, "-X", "importtime", "-m", "famfs_py.cli.main", "creat"]
            argv += ["-s", "4k", str(target)]
            proc = run(argv, env=self.env.host.env)
            own_total = 0
            cumulative = []
            for line in proc.stderr.splitlines():  # "import time: self | cumulative | name"
                parts = line.split("|")
                if len(parts) == 3 and parts[1].strip().isdigit():
                    own_total += int(parts[0].split(":")[1])
                    cumulative.append((int(parts[1]), parts[2].rstrip()))
            lines = [f"== creat: {len(cumulative)} modules, {own_total / 1e3:.1f} ms importing"]
            lines.append("  slowest imports (cumulative µs: the module and what it imports):")
            for cum, name in sorted(cumulative, reverse=True)[:20]:
                lines.append(f"    {cum:>8}  {name}")
            start = time.perf_counter()
            proc = run([sys.executable, "-c", CPROFILE_CREAT, f"{target}2"], env=self.env.host.env)
            wall = time.perf_counter() - start
            lines.append(f"  cProfile of main() once python is up ({wall:.3f} s wall in all):")
            lines += ["    " + line for line in proc.stdout.splitlines() if line.strip()][:45]
            self._write("creat", "\n".join(lines) + "\n")

    def profile_mount(self, workload: str) -> None:
        """The daemon from exec to serving, under cProfile (`famfs-py mount --foreground`, unmounted
        as soon as it answers; the profile covers imports, claim, replay and FUSE init)."""
        if workload == "mount-8m":
            entries, log_len = omf.log_slots(omf.DEFAULT_LOG_LEN), omf.DEFAULT_LOG_LEN
            name = "dax1.0"
        else:
            entries, log_len = omf.log_slots(256 * MiB) * 9 // 10, 256 * MiB
            name = "dax2.0"
        self.env.dax_create(name, _roundup(512 * MiB + entries * omf.ALLOC_UNIT, GiB))
        logfill.build(name, self.env.host.root, _tree(entries), log_len=log_len, keep_extents=set())
        mountpoint = self.env.path(f"mnt-{name}")
        stats = self.out / f"raw-{workload}.pstats"
        argv = [sys.executable, "-m", "cProfile", "-o", str(stats), "-m", "famfs_py.cli.main"]
        argv += ["mount", "--foreground", name, str(mountpoint)]
        env = {**os.environ, **self.env.host.env}
        start = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while not is_mounted(mountpoint):
                if proc.poll() is not None or time.perf_counter() - start > 300:
                    raise RuntimeError("the daemon did not mount")
                time.sleep(0.01)
            os.stat(mountpoint / ".meta")  # answered: the mount is live
            ready = time.perf_counter() - start
        finally:
            run(["fusermount3", "-u", str(mountpoint)], check=False)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if is_mounted(mountpoint):
                run(["fusermount3", "-u", "-z", str(mountpoint)], check=False)
        out = io_module.StringIO()
        report = pstats.Stats(str(stats), stream=out)
        report.sort_stats("cumulative").print_stats(30)
        report.sort_stats("tottime").print_stats(20)
        stats.unlink(missing_ok=True)
        title = (
            f"== {workload}: famfs-py mount --foreground, {entries} entries, "
            f"answered after {ready:.2f} s"
        )
        lines = [title + " (under cProfile, which slows Python code ~2x)"]
        lines += ["    " + line for line in out.getvalue().splitlines() if line.strip()]
        self._write(workload, "\n".join(lines) + "\n")


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(f"bench.profile: stopped by signal {signum}; cleaning up")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--seconds", type=float, default=8.0, help="per daemon workload")
    parser.add_argument("--out", type=Path, help="where the summaries go")
    parser.add_argument("workloads", nargs="+", choices=[*WORKLOADS, "all"])
    args = parser.parse_args(argv)
    if args.out is None:
        from bench.__main__ import new_out_dir

        args.out = new_out_dir("profiles")
    print(f"bench.profile: summaries go to {args.out}", file=sys.stderr)
    signal.signal(signal.SIGTERM, _terminate)
    workloads = WORKLOADS if "all" in args.workloads else args.workloads
    with Environment() as env:
        profiler = Profiler(env, args.seconds, args.out)
        for workload in workloads:
            profiler.run(workload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
