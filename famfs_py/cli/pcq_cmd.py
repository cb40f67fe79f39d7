"""`famfs-py pcq`: upstream famfs's producer/consumer queue test, same options and output.

A queue made by upstream's `pcq` can be served by this one and the other way round (the
layout is in famfs_py.pcq). Run the producer on one host and the consumer on another to test
that shared memory, and its cache flushing, really work between them.
"""

from __future__ import annotations

import argparse
import grp
import pwd
import sys
import threading
import time
from collections.abc import Callable

from famfs_py import pcq
from famfs_py.cli.common import Parser, parse_size
from famfs_py.cli.seeded import check_seed, parse_seed
from famfs_py.dax import cache
from famfs_py.errors import FamfsError, UsageError

EXIT_CODES = """
  0  success: every message sent and received intact (or the queue was created, drained,
     described)
  1  errors: a bad CRC, a sequence or payload mismatch, a queue that cannot be made or
     opened (exists already, not found, no permission, not a pcq, ...)
  2  usage error (option combinations upstream refuses too)
"""

DESCRIPTION = """\
Run a producer/consumer queue test. A queue is two files: QUEUE holds the producer index and
the buckets, QUEUE.consumer the consumer index. The producer maps QUEUE writable and
QUEUE.consumer read-only; the consumer does the opposite. To test shared memory, run the
producer on one host and the consumer on another (a client mounted with --rw).

examples:
  famfs-py pcq --create --bsize 1024 --nbuckets 4k /mnt/famfs/q
  famfs-py pcq --consumer -N 100000 --seed 42 /mnt/famfs/q      (on the client)
  famfs-py pcq --producer -N 100000 --seed 42 /mnt/famfs/q      (on the master)
  famfs-py pcq -pc --time 10 --status 1 /mnt/famfs/q
  famfs-py pcq --drain /mnt/famfs/q
  famfs-py pcq --info /mnt/famfs/q
"""


def build_parser(prog: str) -> Parser:
    parser = Parser(prog=prog, description=DESCRIPTION, exit_codes=EXIT_CODES)
    make = parser.add_argument_group("queue creation")
    make.add_argument("-C", "--create", action="store_true", help="create a queue")
    make.add_argument(
        "-b",
        "--bsize",
        type=parse_size,
        default=0,
        help="bucket size, a power of 2 (the message including its sequence number and CRC)",
    )
    make.add_argument("-n", "--nbuckets", type=parse_size, default=0, help="number of buckets")
    make.add_argument("-u", "--uid", help="owner of both files (name or number; default you)")
    make.add_argument("-g", "--gid", help="group of both files (name or number)")
    runs = parser.add_argument_group("running producers and consumers")
    runs.add_argument("-p", "--producer", action="store_true", help="run the producer")
    runs.add_argument("-c", "--consumer", action="store_true", help="run the consumer")
    runs.add_argument(
        "-N", "--nmessages", type=parse_size, default=0, help="messages to send and/or receive"
    )
    runs.add_argument("-t", "--time", type=int, default=0, metavar="SECONDS", help="run this long")
    runs.add_argument("-S", "--seed", type=parse_seed, default=0, help="seed of the payload")
    runs.add_argument(
        "-s",
        "--status",
        type=int,
        default=0,
        metavar="INTERVAL",
        help="print status every INTERVAL seconds",
    )
    special = parser.add_argument_group("special options")
    special.add_argument("-i", "--info", action="store_true", help="print the state of a queue")
    special.add_argument(
        "-d", "--drain", action="store_true", help="consume until the queue is empty, then exit"
    )
    special.add_argument(
        "-P", "--setperm", choices=("p", "c", "b", "n"), help="not supported (see the README)"
    )
    special.add_argument(
        "-D",
        "--dontflush",
        action="store_true",
        help="issue no processor cache flushes or invalidates (testing only)",
    )
    special.add_argument(
        "-f", "--statusfile", metavar="FILE", help="write the result number to FILE (testing)"
    )
    special.add_argument("-v", "--verbose", action="count", default=0)
    parser.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("queue", nargs="?", metavar="QUEUE")
    return parser


def _usage(message: str) -> FamfsError:
    return UsageError(message)


def _check(args: argparse.Namespace) -> None:
    if args.info and (args.create or args.producer or args.consumer or args.drain):
        raise _usage("--info cannot be combined with --create, --producer, --consumer, --drain")
    if args.create and (not args.bsize or not args.nbuckets):
        raise _usage("--create needs --bsize and --nbuckets")
    if not args.create and (args.uid is not None or args.gid is not None):
        raise _usage("--uid and --gid apply only with --create")
    if args.drain and (args.producer or args.nmessages or args.time):
        raise _usage("--drain cannot be combined with --producer, --time or --nmessages")
    if args.time and args.nmessages:
        raise _usage("--nmessages and --time cannot be used together")
    if not args.queue:
        raise _usage("give the queue's name (its producer file)")
    if args.setperm and (args.create or args.producer or args.consumer or args.drain):
        raise _usage("--setperm cannot be combined with --create, --drain, --producer, --consumer")
    if args.seed:
        check_seed(args.seed)
    if args.time < 0 or args.status < 0:
        raise _usage("--time and --status take a number of seconds")
    actions = args.create or args.info or args.drain or args.setperm
    if not actions and not (args.producer or args.consumer):
        raise _usage("nothing to do: give --create, --producer, --consumer, --drain or --info")
    if (args.producer or args.consumer) and not (args.nmessages or args.time):
        raise _usage("give --nmessages N or --time SECONDS")


def _user(text: str | None, kind: str) -> int | None:
    if text is None:
        return None
    if text.isdigit():
        return int(text)

    try:
        return pwd.getpwnam(text).pw_uid if kind == "user" else grp.getgrnam(text).gr_gid
    except KeyError:
        raise _usage(f"no {kind} named {text!r}") from None


def _write_status(args: argparse.Namespace, value: int) -> None:
    if args.statusfile:
        with open(args.statusfile, "w") as f:
            f.write(str(value))


def _print_cache(*stats: pcq.Stats) -> None:
    """One line beyond upstream's output: whether flushing was in force, and what it did."""
    policy = next((s.cache for s in stats if s.cache), "")
    if not policy:
        return
    done = cache.totals()
    flushes, invalidates = done["flush"], done["invalidate"]
    print(
        f"pcq cache: {policy}; {flushes['calls']} flushes ({flushes['lines']} lines), "
        f"{invalidates['calls']} invalidates ({invalidates['lines']} lines)"
    )


def _pcq_error(exc: Exception) -> FamfsError:
    return FamfsError(getattr(exc, "message", None) or str(exc))


def run(args: argparse.Namespace) -> int:
    _check(args)
    flush = not args.dontflush
    queue = args.queue
    try:
        if args.setperm:
            raise FamfsError(
                "--setperm is not supported: famfs-py keeps each file's mode and owner as "
                "created (its log cannot record chmod); create the queue with -u/-g for the "
                "user who runs the roles"
            )
        if args.create:
            pcq.create(
                queue,
                args.nbuckets,
                args.bsize,
                uid=_user(args.uid, "user"),
                gid=_user(args.gid, "group"),
                flush=flush,
            )
            if args.verbose:
                print(f"pcq_create: bucket_size={args.bsize} payload_size={args.bsize - 16}")
            print(f"pcq_create: Created queue {queue}")
            return 0
        if args.info:
            state = pcq.info(queue, flush=flush)
            print(
                f"get_queue_info: queue {queue} contains {state.messages} messages "
                f"p next_seq {state.producer_next_seq} c next_seq {state.consumer_next_seq}"
            )
            if args.verbose:
                print(f"get_queue_info: nbuckets={state.nbuckets} bucket_size={state.bucket_size}")
            _write_status(args, state.messages)
            return 0
        if args.drain:
            return _drain(args, flush)
    except pcq.PcqError as exc:
        raise _pcq_error(exc) from None
    return _run_roles(args, flush)


def _drain(args: argparse.Namespace, flush: bool) -> int:
    stats, errors = pcq.Stats(), list[str]()
    print(f"pcq:    {args.queue}")
    pcq.run_consumer(
        args.queue,
        stats,
        pcq.Stop(),
        nmessages=None,
        drain=True,
        seed=args.seed,
        flush=flush,
        verbose=args.verbose,
        errors=errors,
    )
    for line in errors:
        print(line, file=sys.stderr)
    print(
        f"pcq drain: nreceived={stats.nreceived} nerrors={stats.nerrors} "
        f"nempty={stats.nempty} retries={stats.retries}"
    )
    _print_cache(stats)
    if stats.nerrors:
        _write_status(args, -stats.nerrors)
        return 1
    if args.statusfile:
        print(f"pcq: drained {stats.nreceived} messages from queue {args.queue}, with no errors")
    _write_status(args, stats.nreceived)
    return 0


class _Role(threading.Thread):
    def __init__(self, work: Callable[[], object], name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.work = work
        self.failure: str | None = None

    def run(self) -> None:
        try:
            self.work()
        except pcq.PcqError as exc:
            self.failure = exc.message
        except OSError as exc:
            self.failure = f"{exc.strerror or exc}"


def _run_roles(args: argparse.Namespace, flush: bool) -> int:
    stop = pcq.Stop()
    prod, cons = pcq.Stats(), pcq.Stats()
    errors: list[str] = []
    nmessages = None if args.time else args.nmessages
    roles: list[_Role] = []
    common = {"seed": args.seed, "flush": flush, "verbose": args.verbose}
    if args.producer:
        roles.append(
            _Role(
                lambda: pcq.run_producer(args.queue, prod, stop, nmessages=nmessages, **common),
                "producer",
            )
        )
    if args.consumer:
        roles.append(
            _Role(
                lambda: pcq.run_consumer(
                    args.queue, cons, stop, nmessages=nmessages, errors=errors, **common
                ),
                "consumer",
            )
        )
    for role in roles:
        role.start()
    status = _StatusPrinter(args, prod, cons, stop) if args.status else None
    deadline = time.monotonic() + args.time if args.time else None
    try:
        while any(role.is_alive() for role in roles):
            if any(role.failure for role in roles):
                stop.now = True
            wait = 0.1 if deadline is None else max(0.0, min(0.1, deadline - time.monotonic()))
            roles_alive = [r for r in roles if r.is_alive()]
            if roles_alive:
                roles_alive[0].join(wait)
            if deadline is not None and time.monotonic() >= deadline:
                stop.now = True
    except KeyboardInterrupt:
        stop.now = True
        for role in roles:
            role.join()
    if status is not None:
        status.finish()
    failed = [f"{role.name}: {role.failure}" for role in roles if role.failure]
    for line in errors + failed:
        print(f"famfs-py pcq: {line}", file=sys.stderr)
    print(f"pcq:    {args.queue}")
    print(f"pcq producer: nsent={prod.nsent} nerrors={prod.nerrors} nfull={prod.nfull}")
    print(
        f"pcq consumer: nreceived={cons.nreceived} nerrors={cons.nerrors} "
        f"nempty={cons.nempty} retries={cons.retries}"
    )
    _print_cache(prod, cons)
    nerrors = prod.nerrors + cons.nerrors
    if nerrors:
        _write_status(args, -nerrors)
        return 1
    if failed:
        return 1
    _write_status(args, prod.nsent + cons.nreceived)
    return 0


class _StatusPrinter:
    """Upstream's status thread: one line of both roles' counters every INTERVAL seconds."""

    def __init__(
        self, args: argparse.Namespace, prod: pcq.Stats, cons: pcq.Stats, stop: pcq.Stop
    ) -> None:
        self.args, self.prod, self.cons = args, prod, cons
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="status", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._done.wait(self.args.status):
            p, c = self.prod, self.cons
            print(
                f"{time.strftime('%m-%d %H:%M:%S')} pcq={self.args.queue} "
                f"prod(nsent={p.nsent} nfull={p.nfull}) cons(nrcvd={c.nreceived} "
                f"nempty={c.nempty} nretries= {p.nerrors + c.retries} nerrors={c.nerrors})",
                flush=True,
            )

    def finish(self) -> None:
        self._done.set()
        self._thread.join()
