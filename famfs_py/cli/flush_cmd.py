"""`famfs-py flush`: make files' data visible in memory to other hosts.

Stores reach device memory directly (the daemon and `cp` write with kernel copies, with no
page cache in between), and the CPUs famfs-py runs on keep caches coherent with that memory,
so a flush only checks that each file is a famfs file with readable memory.
"""

from __future__ import annotations

import argparse
import sys

from famfs_py.cli.common import Parser

EXIT_CODES = """
  0  every file was flushed
  N  N files could not be flushed (not famfs files, directories, bad memory); at most 127
  2  usage error (also: no file given)
"""


def build_parser(prog: str) -> Parser:
    parser = Parser(
        prog=prog, description="Flush famfs files' data to memory.", exit_codes=EXIT_CODES
    )
    parser.add_argument("-v", "--verbose", action="count", default=0)
    parser.add_argument("-d", "--debug", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("files", nargs="+", metavar="FILE")
    return parser


def run(args: argparse.Namespace) -> int:
    from famfs_py import channel, protocol
    from famfs_py.errors import FamfsError

    errors = 0
    for name in args.files:
        try:
            where = channel.locate(name)
            with channel.Channel(where.mountpoint) as chan:
                chan.call(protocol.Map(where.relpath))  # a mapped, readable file?
        except FamfsError as exc:
            print(f"famfs-py flush: {name}: {exc.message}", file=sys.stderr)
            errors += 1
            continue
        if args.verbose:
            print(f"famfs-py flush: flushed {name}")
    if errors:
        print(f"famfs-py flush: {errors} errors were detected", file=sys.stderr)
    return min(errors, 127)
