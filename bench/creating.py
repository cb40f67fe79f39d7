"""`python -m bench.creating`: what creating through the master's mount (issue 24) costs,
as ratios against baselines measured in the same run, round by round (the machine is shared
and noisy: each ratio is a median of per-round ratios).

Rows:
- many small files: plain `cp -r` through the mount (the create path: pending files, logged
  after the commit delay; timed until the last one is logged) against `famfs-py cp -r`
  (allocated and logged by the daemon, written through the command's own mapping) and
  against `cp -r` onto a tmpfs;
- one large file: sequential 1 MiB writes through the create path (open O_CREAT, write,
  fsync) against the same writes into a file made first with `famfs-py creat`.

Results (JSON and Markdown) go to a new directory outside the source tree (printed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from pathlib import Path

from famfs_py import omf

from .__main__ import new_out_dir
from .env import BIN, Environment, GiB, KiB, MiB, run


def _tree(root: Path, files: int, size: int) -> Path:
    """`files` files of `size` bytes in directories of 100."""
    for i in range(files):
        directory = root / f"d{i // 100:03d}"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"f{i:05d}").write_bytes(os.urandom(size))
    return root


def _round_gib(n: int) -> int:
    return -(-n // GiB) * GiB


def _log_used(env: Environment, mp: Path) -> int:
    status = json.loads(env.host.cli("status", "--json", str(mp)).stdout)
    return int(status["log"]["used"])


def _wait_logged(env: Environment, mp: Path, entries: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while _log_used(env, mp) < entries:
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: {entries} log entries not reached in {timeout}s")
        time.sleep(0.02)


def _timed(cmd: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    run(cmd, env=env, timeout=600)
    return time.perf_counter() - start


def _write_file(path: Path, size: int, *, create: bool) -> float:
    chunk = os.urandom(MiB)
    flags = os.O_WRONLY | (os.O_CREAT | os.O_EXCL if create else 0)
    start = time.perf_counter()
    fd = os.open(path, flags, 0o644)
    try:
        for offset in range(0, size, MiB):
            os.pwrite(fd, chunk, offset)
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.creating", description=__doc__)
    parser.add_argument("--files", type=int, default=300, help="small files per copy")
    parser.add_argument("--file-kib", type=int, default=4, help="size of each small file")
    parser.add_argument("--large-mib", type=int, default=256, help="size of the large file")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, help="results directory (default: a new one)")
    args = parser.parse_args(argv)
    rows: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        rows.setdefault(name, []).append(value)

    with Environment() as env:
        shm = env.tmpfs("shm", 2 * GiB)
        src = _tree(shm / "src", args.files, args.file_kib * KiB)
        entries_per_copy = args.files + len(list(src.iterdir())) + 1  # files, dirs, top dir
        # famfs never frees: room for every round's copies (a 2 MiB unit per small file)
        per_round = 2 * args.files * omf.ALLOC_UNIT + 2 * args.large_mib * MiB
        env.dax_create("dax0.0", max(4 * GiB, _round_gib(args.rounds * per_round + GiB)))
        env.host.cli("mkfs", "dax0.0")
        with env.famfs_mount("dax0.0", "mnt") as mount:
            mp = mount.mountpoint
            cli_env = env.host.env
            for r in range(args.rounds):
                tmpfs_s = _timed(["cp", "-r", str(src), str(shm / f"copy{r}")])
                used = _log_used(env, mp)
                start = time.perf_counter()
                run(["cp", "-r", str(src), str(mp / f"plain{r}")], timeout=600)
                cp_returned = time.perf_counter() - start
                _wait_logged(env, mp, used + entries_per_copy)
                plain_s = time.perf_counter() - start
                famfs_s = _timed(
                    [str(BIN / "famfs-py"), "cp", "-r", str(src), str(mp / f"cli{r}")], cli_env
                )
                n = args.files
                add("tmpfs cp -r, µs/file", tmpfs_s / n * 1e6)
                add("mount cp -r (until cp returns), µs/file", cp_returned / n * 1e6)
                add("mount cp -r (until all logged), µs/file", plain_s / n * 1e6)
                add("famfs-py cp -r, µs/file", famfs_s / n * 1e6)
                add("ratio mount cp -r (logged) / tmpfs cp -r", plain_s / tmpfs_s)
                add("ratio mount cp -r (logged) / famfs-py cp -r", plain_s / famfs_s)
                add("ratio famfs-py cp -r / tmpfs cp -r", famfs_s / tmpfs_s)

                size = args.large_mib * MiB
                created_s = _write_file(mp / f"large-new{r}", size, create=True)
                env.host.cli("creat", "-s", str(size), str(mp / f"large-creat{r}"))
                into_s = _write_file(mp / f"large-creat{r}", size, create=False)
                add("large write, create path, MiB/s", args.large_mib / created_s)
                add("large write, into famfs-py creat file, MiB/s", args.large_mib / into_s)
                add("ratio create path / creat file (throughput)", into_s / created_s)
                subprocess.run(["sync"], check=False)
    summary = {name: statistics.median(values) for name, values in rows.items()}
    out = args.out or new_out_dir("creating")
    out.mkdir(parents=True, exist_ok=True)
    meta = {"files": args.files, "file_kib": args.file_kib, "large_mib": args.large_mib}
    (out / "creating.json").write_text(
        json.dumps({"config": meta, "median": summary, "rounds": rows}, indent=2) + "\n"
    )
    lines = [
        f"# creating through the mount ({args.rounds} rounds, medians; {meta})",
        "",
        "| row | median | rounds |",
        "|---|---|---|",
    ]
    for name, value in summary.items():
        each = ", ".join(f"{v:.2f}" for v in rows[name])
        lines.append(f"| {name} | {value:.2f} | {each} |")
    text = "\n".join(lines) + "\n"
    (out / "creating.md").write_text(text)
    print(text)
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
