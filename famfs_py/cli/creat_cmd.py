"""`famfs-py creat`: allocate and log files through the master's daemon; optionally fill them
with the seeded pattern, several at once with -M."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import sys

from famfs_py import channel, protocol
from famfs_py.cli import seeded
from famfs_py.cli.common import (
    Parser,
    add_interleave_options,
    apply_config,
    interleave_fields,
    parse_id,
    parse_mode,
    parse_size,
)
from famfs_py.cli.seeded import check_seed, parse_seed
from famfs_py.errors import FamfsError, UsageError
from famfs_py.replies import FileMapReply

EXIT_CODES = """
  0  the file exists with the size asked (created now, or already there)
  1  not created: not in a famfs-py mount, a client, exists with another size, no space,
     log full, size 0, ...
  2  usage error (also: a seed whose low 32 bits are 0, -S without -r, -M with FILE)
  N  with -M: the number of files that failed (at most 127)
"""


def _parse_multi(text: str) -> tuple[str, int, int]:
    parts = [p for p in text.split(",") if p]
    if len(parts) not in (2, 3):
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME,SIZE[,SEED]")
    size = parse_size(parts[1])
    seed = parse_seed(parts[2]) if len(parts) == 3 else 0
    return parts[0], size, seed


def build_parser(prog: str) -> Parser:
    parser = Parser(
        prog=prog,
        description="Create a famfs file of exactly SIZE bytes (master only). An existing "
        "file of the same size (or with -s omitted) is left as it is; -r -S SEED then refills "
        "it with the seeded pattern.",
        exit_codes=EXIT_CODES,
    )
    parser.add_argument("-s", "--size", type=parse_size, help="size in bytes (k/m/g, 0x...)")
    parser.add_argument("-m", "--mode", type=parse_mode, default=0o644, help="mode (octal)")
    parser.add_argument("-u", "--uid", type=parse_id, help="owner (default: you)")
    parser.add_argument("-g", "--gid", type=parse_id, help="group (default: yours)")
    parser.add_argument(
        "-r",
        "--randomize",
        action="store_true",
        help="fill with the pattern of -S SEED (no seed: leave the data)",
    )
    parser.add_argument(
        "-S", "--seed", type=parse_seed, default=0, help="pattern seed (decimal or 0x...); needs -r"
    )
    parser.add_argument(
        "-M",
        "--multi",
        type=_parse_multi,
        action="append",
        default=[],
        metavar="NAME,SIZE[,SEED]",
        help="create several files (repeatable); entries with a seed are filled with its pattern",
    )
    parser.add_argument(
        "-t",
        "--threadct",
        type=int,
        default=None,
        help="threads that fill -M files (default: core.threadct of famfs-py config, else "
        "CPUs; 0: none)",
    )
    add_interleave_options(parser)
    parser.add_argument("-v", "--verbose", action="count", default=0)
    parser.add_argument("-d", "--debug", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("file", nargs="?", metavar="FILE")
    return parser


def _check_args(args: argparse.Namespace) -> None:
    if args.seed and not args.randomize:
        raise UsageError("-S SEED needs -r (randomize)")
    if args.randomize and args.seed:
        check_seed(args.seed)
    if args.multi:
        if args.file:
            raise UsageError("give FILE or -M entries, not both")
        if args.seed:
            raise UsageError("-S and -M cannot be combined (give each -M entry its seed)")
        for _, _, seed in args.multi:
            if seed:
                check_seed(seed)
    elif not args.file:
        raise UsageError("give a FILE to create (or -M NAME,SIZE[,SEED])")
    if args.threadct is not None and not 0 <= args.threadct <= 256:
        raise UsageError(f"-t {args.threadct}: threads must be 0..256")


def create(
    chan: channel.Channel, path: str, size: int | None, args: argparse.Namespace
) -> FileMapReply:
    """Create (or find) one file; no size (or 0) adopts an existing file's size."""
    where = channel.locate(path)
    if where.mountpoint != chan.mountpoint:
        raise FamfsError(f"{path} is not in the same famfs mount as the first file")
    if not size:
        try:
            existing = chan.call(protocol.Getmap(where.relpath))
        except FamfsError as exc:
            if exc.errno != errno.ENOENT:
                raise
            why = "give its size with -s" if size is None else "a famfs file cannot be empty"
            raise FamfsError(f"{path} does not exist: {why}") from None
        return dataclasses.replace(existing, created=False)
    return chan.call(
        protocol.Creat(
            where.relpath, size, args.mode, args.uid, args.gid, **interleave_fields(args)
        )
    )


BATCH_BYTES = 48 << 10  # a CreatMany's files: well within wire.MAX_REQUEST (64 KiB)


def create_all(
    chan: channel.Channel, entries: list[tuple[str, int | None, int]], args: argparse.Namespace
) -> list[FileMapReply | FamfsError]:
    """-M: each entry's reply or error, in order, as `create` would give it; entries with
    a size go to the daemon together (CreatMany: one request and one log commit a batch)."""
    out: list[FileMapReply | FamfsError | None] = [None] * len(entries)
    batch: list[tuple[int, str, int]] = []
    cost = 0

    def send() -> None:
        nonlocal batch, cost
        if not batch:
            return
        files = tuple((rel, size, args.mode) for _, rel, size in batch)
        request = protocol.CreatMany(files, args.uid, args.gid, **interleave_fields(args))
        try:
            answers: list[FileMapReply | FamfsError] = chan.call(request).files
        except FamfsError as exc:  # the whole batch's (a refused owner): each entry's
            answers = [exc] * len(batch)
        for (k, _, _), answer in zip(batch, answers, strict=True):
            out[k] = answer
        batch, cost = [], 0

    mounts = channel.famfs_mounts()  # read once, not once an entry
    for k, (name, size, _) in enumerate(entries):
        if not size:  # adopts an existing file's size: asked alone, in its turn
            send()
            try:
                out[k] = create(chan, name, size, args)
            except FamfsError as exc:
                out[k] = exc
            continue
        try:
            where = channel.locate(name, mounts)
        except FamfsError as exc:
            out[k] = exc
            continue
        if where.mountpoint != chan.mountpoint:
            out[k] = FamfsError(f"{name} is not in the same famfs mount as the first file")
            continue
        need = len(where.relpath.encode()) * 6 + 48  # a path's worst JSON escaping
        if batch and (cost + need > BATCH_BYTES or len(batch) >= protocol.CreatMany.MAX_FILES):
            send()
        batch.append((k, where.relpath, size))
        cost += need
    send()
    return [r if r is not None else FamfsError("no answer") for r in out]


def run(args: argparse.Namespace) -> int:
    apply_config(args)
    _check_args(args)
    entries = args.multi or [(args.file, args.size, args.seed if args.randomize else 0)]
    first = channel.locate(entries[0][0])
    failures = 0
    jobs = []
    with channel.Channel(first.mountpoint) as chan:
        answers = create_all(chan, entries, args) if args.multi else [None]
        for (name, size, seed), answer in zip(entries, answers, strict=True):
            try:
                if isinstance(answer, FamfsError):
                    raise answer
                reply = answer or create(chan, name, size, args)
            except FamfsError as exc:
                if not args.multi:
                    raise
                print(f"famfs-py creat: {name}: {exc.message}", file=sys.stderr)
                failures += 1
                continue
            if args.verbose:
                state = "created" if reply.created else "exists"
                print(f"famfs-py creat: {name}: {state}, {reply.size} bytes")
            if seed:
                jobs.append(seeded.Job(name, seed))
    threads = seeded.default_threads() if args.threadct is None else args.threadct
    for job, result in seeded.run_jobs(jobs, threads, lambda j: seeded.randomize(j.path, j.seed)):
        if isinstance(result, Exception):
            message = getattr(result, "message", None) or str(result)
            print(f"famfs-py creat: {job.path}: cannot fill it: {message}", file=sys.stderr)
            failures += 1
        elif args.verbose or not args.multi:
            print(f"randomized {result} bytes: {job.path}")
    if args.multi:
        created = len(entries) - failures
        print(
            f"Create complete for {created} of {len(entries)} files with {failures} errs",
            file=sys.stderr if failures else sys.stdout,
        )
        return min(failures, 127)
    return 1 if failures else 0
