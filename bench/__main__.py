"""`python -m bench [--quick]`: prepare emulated devices, run the rounds, print the table and
write latest.json, latest.md and latest.png into a new directory outside the source tree
(printed; --out DIR to choose). `--readme` (make bench-full) updates the committed results
instead: bench/results/ and the results block of README.md."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from . import model, report
from .env import Environment
from .rounds import GROUPS, Bench, Config

RESULTS = Path(__file__).resolve().parent / "results"  # the committed results (--readme)
README = Path(__file__).resolve().parent.parent / "README.md"
OUT_BASE_ENV = "FAMFS_PY_BENCH_OUT"  # where new result directories go (default /var/tmp)


def new_out_dir(kind: str) -> Path:
    """A new directory for one run's results, outside the source tree."""
    base = Path(os.environ.get(OUT_BASE_ENV) or "/var/tmp") / "famfs-py-bench"
    base.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(100):
        out = base / (f"{stamp}-{kind}" + (f".{n}" if n else ""))
        try:
            out.mkdir()
        except FileExistsError:
            continue
        return out
    raise SystemExit(f"bench: cannot make a new directory under {base}")


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(f"bench: stopped by signal {signum}; cleaning up")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="smaller files and counts (under a minute)"
    )
    parser.add_argument(
        "--rounds", type=int, help="rounds (default 5, --quick 3; at least 3 for a report)"
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=GROUPS,
        help="run only this group of systems (repeatable); results are then only printed "
        "unless --out is given",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help=f"results directory (default: a new one under ${OUT_BASE_ENV} or /var/tmp, "
        "famfs-py-bench/DATE-MODE; with --readme: bench/results)",
    )
    parser.add_argument(
        "--readme",
        action="store_true",
        help="update the committed results: bench/results/ and the results block of README.md",
    )
    parser.add_argument(
        "--redraw",
        type=Path,
        metavar="JSON",
        help="measure nothing: print and redraw the reports of a saved latest.json",
    )
    args = parser.parse_args(argv)
    if args.redraw:
        results, mode = report.read_json(args.redraw)
        sizes = Config.make(mode == "quick").sizes()  # today's sizes of a run of that mode
        print(report.text_table(results))
        print(report.pages_table(results))
        print(report.targets_table(results, mode, sizes))
        out = args.out or args.redraw.parent
        out.mkdir(parents=True, exist_ok=True)
        header = (
            (out / "latest.md").read_text().splitlines()[0]
            if (out / "latest.md").exists()
            else mode
        )
        (out / "latest.md").write_text(report.markdown(results, mode, header, sizes))
        report.write_chart(results, mode, out / "latest.png")
        if args.readme:
            report.update_readme(README, results, header, mode, sizes)
        return 0
    if os.geteuid() != 0:
        parser.error("needs root (tmpfs and FUSE mounts, drop_caches)")
    cfg = Config.make(args.quick, args.rounds)
    mode = "quick" if cfg.quick else "full"
    signal.signal(signal.SIGTERM, _terminate)
    results = model.Results()
    for low, high in (model.UPSTREAM_CREAT_MS,):
        results.add("creat_single", model.UPSTREAM, low)
        results.add("creat_single", model.UPSTREAM, high)
    results.note(
        "creat_single", model.UPSTREAM, "published range, upstream famfs issue #60; not run here"
    )
    started = time.perf_counter()
    with Environment() as env:
        bench = Bench(env, cfg, results)
        print(f"bench: {mode} run, {cfg.rounds} rounds, work dir {env.base}", file=sys.stderr)
        bench.prepare()
        print(f"bench: prepared in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        bench.run(args.only)
    elapsed = time.perf_counter() - started
    sizes = cfg.sizes()
    print(report.text_table(results))
    print(report.pages_table(results))
    print(report.targets_table(results, mode, sizes))
    if args.only and args.out is None:
        return 0
    args.out = args.out or (RESULTS if args.readme else new_out_dir(mode))
    args.out.mkdir(parents=True, exist_ok=True)
    report.write_json(results, mode, args.out / "latest.json")
    header = (
        f"{mode} run, {cfg.rounds} rounds, {cfg.file_size >> 20} MiB files, "
        f"{cfg.stat_files:,} files to stat, {elapsed:.0f} s"
    )
    (args.out / "latest.md").write_text(report.markdown(results, mode, header, sizes))
    charted = report.write_chart(results, mode, args.out / "latest.png")
    if args.readme:
        report.update_readme(README, results, header, mode, sizes)
    print(
        f"\nbench: {header}; wrote {args.out / 'latest.json'}, latest.md"
        + ("" if not args.readme else " and README.md's results block")
        + (", latest.png" if charted else " (no chart: pip install -e '.[bench]')"),
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
