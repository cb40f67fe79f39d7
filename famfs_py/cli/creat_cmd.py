"""`famfs-py creat`: allocate and log files through the master's daemon."""

from __future__ import annotations

import argparse
import sys

from famfs_py.cli.common import Parser, parse_id, parse_mode, parse_size

EXIT_CODES = """
  0  the file exists with the size asked (created now, or already)
  1  not created: not in a famfs-py mount, a client, exists with another size, no space,
     log full, size 0, ...
  2  usage error
"""


def build_parser(prog: str) -> Parser:
    parser = Parser(
        prog=prog,
        description="Create a famfs file of exactly SIZE bytes (master only).",
        exit_codes=EXIT_CODES,
    )
    parser.add_argument(
        "-s", "--size", type=parse_size, required=True, help="size in bytes (k/m/g suffixes, 0x...)"
    )
    parser.add_argument("-m", "--mode", type=parse_mode, default=0o644, help="mode (octal)")
    parser.add_argument("-u", "--uid", type=parse_id, help="owner (default: you)")
    parser.add_argument("-g", "--gid", type=parse_id, help="group (default: yours)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print the allocation")
    parser.add_argument("-d", "--debug", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("file", metavar="FILE")
    return parser


def run(args: argparse.Namespace) -> int:
    from famfs_py import channel

    located = channel.locate(args.file)
    with channel.Channel(located.mountpoint) as chan:
        reply = chan.call(
            "creat",
            path=located.relpath,
            size=args.size,
            mode=args.mode,
            uid=args.uid,
            gid=args.gid,
        )
    if args.verbose:
        state = "created" if reply["created"] else "exists"
        extents = ", ".join(
            f"{e['offset']:#x}+{e['length']:#x}"
            for e in reply.get("extents") or reply.get("strips") or []
        )
        print(f"{args.file}: {state}, {reply['size']} bytes at {extents}", file=sys.stderr)
    return 0
