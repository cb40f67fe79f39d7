"""`famfs-py mkdir`: create directories through the master's daemon."""

from __future__ import annotations

import argparse
import os

from famfs_py import channel, protocol
from famfs_py.cli.common import Parser, parse_id, parse_mode
from famfs_py.errors import FamfsError

EXIT_CODES = """
  0  created (with -p: or already there)
  1  not created: not in a famfs-py mount, a client, exists, parent missing, log full, ...
  2  usage error
"""


def build_parser(prog: str) -> Parser:
    parser = Parser(
        prog=prog, description="Create a directory in famfs (master only).", exit_codes=EXIT_CODES
    )
    parser.add_argument(
        "-p", "--parents", action="store_true", help="create missing parents; no error if it exists"
    )
    parser.add_argument("-m", "--mode", type=parse_mode, default=0o755, help="mode (octal)")
    parser.add_argument("-u", "--uid", type=parse_id, help="owner (default: you)")
    parser.add_argument("-g", "--gid", type=parse_id, help="group (default: yours)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print what is created")
    parser.add_argument("-d", "--debug", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("dirs", nargs="+", metavar="DIR")
    return parser


def run(args: argparse.Namespace) -> int:
    failures = 0
    for directory in args.dirs:
        try:
            located = channel.locate(directory)
            if not located.relpath and args.parents:
                continue  # the mount's root: there already, as -p asks (upstream too)
            with channel.Channel(located.mountpoint) as chan:
                reply = chan.call(
                    protocol.Mkdir(located.relpath, args.mode, args.uid, args.gid, args.parents)
                )
        except FamfsError as exc:
            print(f"famfs-py mkdir: {directory}: {exc.message}", file=__import__("sys").stderr)
            failures += 1
            continue
        if args.verbose:
            for created in reply.created:
                print(f"famfs-py mkdir: created {os.path.join(located.mountpoint, created)}")
    return 1 if failures else 0
