"""`famfs-py flush`: write back and drop this host's CPU cache lines of whole files, as
upstream's `famfs flush` does (its "hard flush": every line of the file is written back if
dirty and evicted, then a fence). Run it on a host that stored into a file by means famfs-py
does not flush (a program's own mmap), so other hosts see the data, or on a host about to read
a file another host rewrote, so that it reads memory rather than its stale cache.

The mount's daemon does it (the `flush` control op): the instructions act on every cache of
this host, whichever CPU runs them, so anyone who may read the file may flush it, with or
without access to the device (upstream asks as much: a read-only mapping). Where the
mount says memory is coherent (`-o flush=off`, an emulated device created `--coherent`) there
is nothing to write back: each file is only checked to be a famfs file with usable memory.
"""

from __future__ import annotations

import argparse
import sys

from famfs_py import channel, protocol
from famfs_py.cli.common import Parser
from famfs_py.errors import FamfsError

EXIT_CODES = """
  0  every file was flushed
  N  N files could not be flushed (not famfs files, directories, bad memory); at most 127
  2  usage error (also: no file given)
"""


def build_parser(prog: str) -> Parser:
    parser = Parser(
        prog=prog,
        description="Write back and invalidate this host's cached lines of famfs files.",
        exit_codes=EXIT_CODES,
    )
    parser.add_argument("-v", "--verbose", action="count", default=0)
    parser.add_argument("-d", "--debug", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("files", nargs="+", metavar="FILE")
    return parser


def run(args: argparse.Namespace) -> int:
    errors = 0
    channels: dict[str, channel.Channel] = {}  # one per mount the files are in
    try:
        for name in args.files:
            try:
                where = channel.locate(name)
                chan = channels.get(where.mountpoint)
                if chan is None:
                    chan = channels[where.mountpoint] = channel.Channel(where.mountpoint)
                done = chan.call(protocol.Flush(where.relpath))
            except FamfsError as exc:
                print(f"famfs-py flush: {name}: {exc.message}", file=sys.stderr)
                errors += 1
                continue
            except OSError as exc:  # the daemon went away mid-call
                print(f"famfs-py flush: {name}: {exc.strerror or exc}", file=sys.stderr)
                errors += 1
                continue
            if args.verbose and done.enabled:
                print(f"famfs-py flush: flushed {name} ({done.lines} cache lines)")
            elif args.verbose:
                print(f"famfs-py flush: {name}: nothing to flush, flushing is {done.reason}")
    finally:
        for chan in channels.values():
            chan.close()
    if errors:
        print(f"famfs-py flush: {errors} errors were detected", file=sys.stderr)
    return min(errors, 127)
