"""`famfs-py verify`: check files against the seeded pattern `creat -r -S SEED` wrote
(bit-exact with upstream famfs, so files made by either verify with either)."""

from __future__ import annotations

import argparse
import sys

from famfs_py.cli import seeded
from famfs_py.cli.common import Parser
from famfs_py.cli.seeded import parse_seed
from famfs_py.errors import UsageError

EXIT_CODES = """
  0  every file holds its pattern
  N  N files differ or cannot be read (at most 127)
  2  usage error (no seed, seed 0 or with zero low 32 bits, -m mixed with -f/-S)
"""


def _parse_multi(text: str) -> tuple[str, int]:
    parts = text.split(",")
    if len(parts) != 2 or not parts[0]:
        raise argparse.ArgumentTypeError(f"{text!r}: expected FILE,SEED")
    return parts[0], parse_seed(parts[1])


def build_parser(prog: str) -> Parser:
    parser = Parser(
        prog=prog,
        description="Verify famfs files against their seeded pattern.",
        exit_codes=EXIT_CODES,
    )
    parser.add_argument("-f", "--filename", metavar="FILE", help="the file to verify")
    parser.add_argument("-S", "--seed", type=parse_seed, help="its seed")
    parser.add_argument(
        "-m",
        "--multi",
        type=_parse_multi,
        action="append",
        default=[],
        metavar="FILE,SEED",
        help="verify several files (repeatable)",
    )
    parser.add_argument(
        "-t", "--threadct", type=int, default=None, help="threads for -m (default: CPUs; 0: none)"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no success lines")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="a line per file (the default)"
    )
    parser.add_argument("-d", "--debug", action="store_true", help=argparse.SUPPRESS)
    return parser


def run(args: argparse.Namespace) -> int:
    if args.multi and (args.filename or args.seed is not None):
        raise UsageError("-m cannot be combined with -f or -S")
    if args.multi:
        jobs = [seeded.Job(path, seed) for path, seed in args.multi]
    else:
        if not args.filename:
            raise UsageError("give -f FILE and -S SEED (or -m FILE,SEED)")
        if args.seed is None:
            raise UsageError("give the random seed to verify the file with (-S SEED)")
        jobs = [seeded.Job(args.filename, args.seed)]
    for job in jobs:
        if not job.seed:
            raise UsageError(f"{job.path}: seed 0 means no pattern; nothing to verify")
        seeded.check_seed(job.seed)
    if args.threadct is not None and not 0 <= args.threadct <= 256:
        raise UsageError(f"-t {args.threadct}: threads must be 0..256")
    threads = seeded.default_threads() if args.threadct is None else args.threadct
    failures = 0
    for job, result in seeded.run_jobs(jobs, threads, lambda j: seeded.verify(j.path, j.seed)):
        if isinstance(result, Exception):
            message = getattr(result, "message", None) or str(result)
            print(f"famfs-py verify: {job.path}: {message}", file=sys.stderr)
            failures += 1
            continue
        size, bad = result
        if bad is not None:
            print(f"Verify fail: {job.path} at offset {bad} of {size} bytes", file=sys.stderr)
            failures += 1
        elif not args.quiet:
            print(f"Success: verified {size} bytes in file {job.path}")
    if args.multi and not args.quiet:
        print(f"Verify complete for {len(jobs)} files with {failures} errs")
    return min(failures, 127)
