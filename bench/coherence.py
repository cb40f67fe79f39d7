"""`python -m bench.coherence [--quick] [--out DIR]`: files shared through the mount (issue
23), two simulated hosts on one emulated memory, every figure next to its baseline measured
in the same run:

- propagation: from the master's pwrite() returning (8 bytes) to the client's existing
  MAP_SHARED mapping showing them (median, p99), changes in a row and each after 0.5 s
  idle; baseline: the client's poll interval (10 ms; 40 ms when idle);
- write path: 4 KiB pwrites per second through the master's mount, alone and with a client
  mounted (both announce; the client applies); and what one announcement costs in-process;
- page cache: MiB added to the reading host's page cache per GiB read through its mount, in
  each cache mode, against famfs_py.open_mapped (0 by construction: no page cache);
- warm reads of an unchanging file (-c always) on a client that listens (every 10 ms)
  against one that does not (--changes-interval 0), and the idle daemon's CPU time.

Results go to a new directory outside the source tree (printed), as latest.json/latest.md.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import mmap
import os
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from .env import Environment as Env
from .env import GiB, Host, MiB, drop_caches

CLIENT_UUID = "7d1e2f30-4a5b-4c6d-8e7f-9011223344aa"
PAGE = 4096


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _cpu_seconds(pid: int) -> float:
    """CPU time of every thread of process `pid` so far (schedstat: nanoseconds)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def _resident(fd: int) -> int:
    """Bytes of open file `fd` in this host's page cache (mincore of a private mapping:
    nothing is faulted in to find out; the file's own descriptor, since -c auto drops a
    file's pages at each open)."""
    libc = ctypes.CDLL(None, use_errno=True)
    size = os.fstat(fd).st_size
    m = mmap.mmap(fd, size, mmap.MAP_PRIVATE, mmap.PROT_READ | mmap.PROT_WRITE)
    try:
        anchor = ctypes.c_char.from_buffer(m)
        vec = (ctypes.c_ubyte * ((size + PAGE - 1) // PAGE))()
        rc = libc.mincore(ctypes.c_void_p(ctypes.addressof(anchor)), ctypes.c_size_t(size), vec)
        del anchor
        if rc != 0:
            raise OSError(ctypes.get_errno(), "mincore")
        return sum(b & 1 for b in vec) * PAGE
    finally:
        m.close()


class Coherence:
    def __init__(self, env: Env, quick: bool) -> None:
        self.env = env
        self.quick = quick
        self.file_size = (256 if quick else 1024) * MiB
        self.samples = 60 if quick else 300
        self.results: dict[str, object] = {}

    def prepare(self) -> None:
        env = self.env
        env.dax_create("dax7.0", 4 * GiB)
        self.client = Host(env.base / "client-coh", env.host.log_dir, CLIENT_UUID)
        self.client.root.mkdir(exist_ok=True)
        self.client.cli("dax", "create", "dax7.0", "--share", str(env.host.root / "dev/dax7.0"))
        env.stack.callback(self.client.cli, "dax", "remove", "dax7.0", check=False)
        env.host.cli("mkfs", "-f", "dax7.0")
        with self.master() as mm:
            env.host.cli("creat", "-s", "4m", str(mm / "small"))
            env.host.cli("creat", "-s", str(self.file_size), "-r", "-S", "7", str(mm / "big"))

    @contextlib.contextmanager
    def master(self, *args: str) -> Iterator[Path]:
        with self.env.famfs_mount("dax7.0", "coh-master", "auto", args=list(args)) as m:
            yield m.mountpoint

    @contextlib.contextmanager
    def client_mount(self, cache: str = "auto", *args: str) -> Iterator[tuple[Path, int]]:
        with self.env.famfs_mount(
            "dax7.0", f"coh-client-{cache}", cache, args=["--rw", *args], host=self.client
        ) as m:
            assert m.pid is not None
            yield m.mountpoint, m.pid

    # -- propagation ---------------------------------------------------------------------
    def propagation(self) -> None:
        with self.master() as mm, self.client_mount() as (cm, _pid):
            wfd = os.open(mm / "small", os.O_WRONLY)
            rfd = os.open(cm / "small", os.O_RDONLY)
            view = mmap.mmap(rfd, 4 * MiB, mmap.MAP_SHARED, mmap.PROT_READ)
            latencies = []
            try:
                for i in range(self.samples):
                    value = (i + 1).to_bytes(8, "little")
                    offset = (i * 4096) % (4 * MiB)
                    os.pwrite(wfd, value, offset)
                    start = time.perf_counter()
                    deadline = start + 5
                    while view[offset : offset + 8] != value:
                        if time.perf_counter() > deadline:
                            raise RuntimeError("a change did not arrive within 5 s")
                        time.sleep(0.0002)
                    latencies.append((time.perf_counter() - start) * 1000)
                    time.sleep(0.003)  # let the machine settle between samples
            finally:
                view.close()
                os.close(rfd)
                os.close(wfd)
        idle = self._after_idle()
        self.results["propagation_after_idle_ms"] = {
            "median": statistics.median(idle),
            "p99": _percentile(idle, 0.99),
            "samples": len(idle),
        }
        self.results["propagation_ms"] = {
            "median": statistics.median(latencies),
            "p99": _percentile(latencies, 0.99),
            "min": min(latencies),
            "samples": len(latencies),
            "baseline_poll_interval_ms": 10.0,
        }

    def _after_idle(self) -> list[float]:
        """The same, each change after 0.5 s without one (the listener looks less often)."""
        out = []
        with self.master() as mm, self.client_mount() as (cm, _pid):
            wfd = os.open(mm / "small", os.O_WRONLY)
            rfd = os.open(cm / "small", os.O_RDONLY)
            view = mmap.mmap(rfd, 4 * MiB, mmap.MAP_SHARED, mmap.PROT_READ)
            try:
                for i in range(10 if self.quick else 30):
                    time.sleep(0.5)
                    value = (1000 + i).to_bytes(8, "little")
                    os.pwrite(wfd, value, 0)
                    start = time.perf_counter()
                    while view[0:8] != value:
                        if time.perf_counter() - start > 5:
                            raise RuntimeError("a change did not arrive within 5 s")
                        time.sleep(0.0002)
                    out.append((time.perf_counter() - start) * 1000)
            finally:
                view.close()
                os.close(rfd)
                os.close(wfd)
        return out

    # -- the write path ------------------------------------------------------------------
    def _writes_per_second(self, path: Path, seconds: float) -> float:
        fd = os.open(path, os.O_WRONLY)
        buf = os.urandom(PAGE)
        try:
            n, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                os.pwrite(fd, buf, (n % 1024) * PAGE)
                n += 1
            return n / (time.perf_counter() - start)
        finally:
            os.close(fd)

    def write_path(self) -> None:
        seconds = 1.0 if self.quick else 3.0
        alone, paired = [], []
        for r in range(3):
            with self.master() as mm:
                order = [False, True] if r % 2 == 0 else [True, False]
                for with_client in order:
                    if with_client:
                        with self.client_mount("always"):
                            paired.append(self._writes_per_second(mm / "small", seconds))
                    else:
                        alone.append(self._writes_per_second(mm / "small", seconds))
        self.results["write_4k_per_s"] = {
            "alone": statistics.median(alone),
            "with_client": statistics.median(paired),
            "ratio": statistics.median(paired) / statistics.median(alone),
        }
        self.results["announce_us"] = self._announce_cost()

    def _announce_cost(self) -> dict[str, float]:
        """One announcement (record + head, each written and flushed) in this process, next
        to a 64-byte write and flush of the same memory (the floor)."""
        from famfs_py.dax.device import resolve_device
        from famfs_py.fs import changes
        from famfs_py.fs.filesystem import Famfs

        device = resolve_device("dax7.0", str(self.env.host.root))
        with Famfs.open(device, this_host=uuid.UUID(self.env.host.system_uuid), flush="on") as fs:
            area = changes.Area(fs.mem, fs.coherency, fs.sb.fs_uuid)
            announcer = changes.Announcer(area, changes.MASTER_SLOT)
            n = 20000
            start = time.perf_counter()
            for i in range(n):
                announcer.announce(changes.Change(16, i, 8))
            each = (time.perf_counter() - start) / n * 1e6
            line = bytes(64)
            start = time.perf_counter()
            for _ in range(n):
                area.store(changes.AREA + 64 * 40, line)
            floor = (time.perf_counter() - start) / n * 1e6
        return {"announce": each, "one_line_store_and_flush": floor, "ratio": each / floor}

    # -- page cache per GiB read ---------------------------------------------------------
    def page_cache(self) -> None:
        out: dict[str, float] = {}
        with self.master():
            for cache in ("auto", "always", "never"):
                with self.client_mount(cache) as (cm, _pid):
                    drop_caches()
                    with open(cm / "big", "rb", buffering=0) as f:
                        while f.read(4 * MiB):
                            pass
                        out[cache] = _resident(f.fileno()) / MiB / (self.file_size / GiB)
            with self.client_mount("always") as (cm, _pid):
                import famfs_py

                drop_caches()
                with famfs_py.open_mapped(cm / "big") as m, open(cm / "big", "rb") as f:
                    for off in range(0, len(m), 4 * MiB):
                        m.read_range(off, 4 * MiB)
                    out["open_mapped"] = _resident(f.fileno()) / MiB / (self.file_size / GiB)
        self.results["page_cache_mib_per_gib_read"] = out

    # -- warm reads and idle cost --------------------------------------------------------
    def _read_gib_per_s(self, path: Path) -> float:
        with open(path, "rb", buffering=0) as f:
            buf = bytearray(4 * MiB)
            start = time.perf_counter()
            while f.readinto(buf):
                pass
            return self.file_size / GiB / (time.perf_counter() - start)

    def warm_and_idle(self) -> None:
        warm: dict[str, list[float]] = {"listening": [], "not_listening": []}
        idle: dict[str, float] = {}
        idle_seconds = 3.0 if self.quick else 10.0
        with self.master():
            for r in range(2):
                for interval in ("0.01", "0") if r % 2 == 0 else ("0", "0.01"):
                    key = "listening" if interval != "0" else "not_listening"
                    with self.client_mount("always", "--changes-interval", interval) as (cm, pid):
                        self._read_gib_per_s(cm / "big")  # cold: fills the page cache
                        warm[key].append(max(self._read_gib_per_s(cm / "big") for _ in range(3)))
                        if r == 0:
                            before = _cpu_seconds(pid)
                            time.sleep(idle_seconds)  # idle: what the daemon costs alone
                            idle[key] = (_cpu_seconds(pid) - before) / idle_seconds * 100
        listening = statistics.median(warm["listening"])
        quiet = statistics.median(warm["not_listening"])
        self.results["warm_read_gib_per_s"] = {
            "listening": listening,
            "not_listening": quiet,
            "ratio": listening / quiet,
        }
        self.results["idle_daemon_cpu_percent"] = idle


def markdown(results: dict[str, object]) -> str:
    p = results["propagation_ms"]
    q = results["propagation_after_idle_ms"]
    w = results["write_4k_per_s"]
    a = results["announce_us"]
    c = results["page_cache_mib_per_gib_read"]
    r = results["warm_read_gib_per_s"]
    i = results["idle_daemon_cpu_percent"]
    assert isinstance(p, dict) and isinstance(q, dict)
    assert isinstance(w, dict) and isinstance(a, dict)
    assert isinstance(c, dict) and isinstance(r, dict) and isinstance(i, dict)
    rows = [
        "| what | figure | baseline (same run) |",
        "|---|---|---|",
        f"| propagation, master pwrite -> client's MAP_SHARED mapping | median "
        f"{p['median']:.1f} ms, p99 {p['p99']:.1f} ms ({p['samples']} samples) | the "
        f"client's poll interval, {p['baseline_poll_interval_ms']:.0f} ms (goal: median ≤ 50) |",
        f"| the same, each change after 0.5 s idle | median {q['median']:.1f} ms, p99 "
        f"{q['p99']:.1f} ms ({q['samples']} samples) | idle poll interval 40 ms |",
        f"| 4 KiB pwrites/s through the master's mount, a client mounted | "
        f"{w['with_client']:,.0f} | alone {w['alone']:,.0f} ({w['ratio']:.2f}×) |",
        f"| one announcement (record + head, flushed) | {a['announce']:.2f} µs | one 64-byte "
        f"store + flush {a['one_line_store_and_flush']:.2f} µs ({a['ratio']:.1f}×) |",
    ]
    for mode in ("auto", "always", "never"):
        rows.append(
            f"| page cache per GiB read, -c {mode} | {c[mode]:.0f} MiB | open_mapped "
            f"{c['open_mapped']:.0f} MiB |"
        )
    rows += [
        f"| warm reads of an unchanging file, -c always, client listening | "
        f"{r['listening']:.2f} GiB/s | not listening {r['not_listening']:.2f} GiB/s "
        f"({r['ratio']:.2f}×) |",
        f"| idle client daemon CPU, listening every 10 ms | {i.get('listening', 0):.3f} % | "
        f"not listening {i.get('not_listening', 0):.3f} % |",
    ]
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    from .__main__ import new_out_dir

    parser = argparse.ArgumentParser(prog="python -m bench.coherence", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="256 MiB file, fewer samples")
    parser.add_argument("--out", type=Path, help="results directory (default: a new one)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("needs root (FUSE mounts, drop_caches)")
    with Env() as env:
        bench = Coherence(env, args.quick)
        bench.prepare()
        for step in (bench.propagation, bench.write_path, bench.page_cache, bench.warm_and_idle):
            print(f"bench.coherence: {step.__name__}", file=sys.stderr)
            step()
    out = args.out or new_out_dir("coherence-quick" if args.quick else "coherence")
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps(bench.results, indent=2) + "\n")
    text = markdown(bench.results)
    (out / "latest.md").write_text(text)
    print(text)
    print(f"bench.coherence: wrote {out / 'latest.json'} and latest.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
