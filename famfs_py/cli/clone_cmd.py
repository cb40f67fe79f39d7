"""`famfs-py clone`: log a second file over another file's extents (a deliberate
cross-link, so that fsck's collision detection can be tested)."""

from __future__ import annotations

import argparse

from famfs_py import channel, protocol
from famfs_py.cli.common import Parser
from famfs_py.errors import FamfsError

EXIT_CODES = """
  0  DEST now shares SRC's memory (fsck will report the collision)
  1  not cloned (not the same famfs, a client, DEST exists, ...)
  2  usage error
"""


def build_parser(prog: str) -> Parser:
    parser = Parser(
        prog=prog,
        description="Cross-link DEST to SRC's memory (for testing fsck; never for real data).",
        exit_codes=EXIT_CODES,
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="say what was cloned")
    parser.add_argument("-d", "--debug", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("source", metavar="SRC")
    parser.add_argument("dest", metavar="DEST")
    return parser


def run(args: argparse.Namespace) -> int:
    src = channel.locate(args.source)
    dest = channel.locate(args.dest)
    if src.mountpoint != dest.mountpoint:
        raise FamfsError("source and destination must be in the same famfs mount")
    with channel.Channel(src.mountpoint) as chan:
        chan.call(protocol.Clone(src.relpath, dest.relpath))
    if args.verbose:
        print(f"famfs-py clone: {args.dest} now shares the memory of {args.source}")
    return 0
