"""`famfs-py logplay`: replay the log into a running mount now."""

from __future__ import annotations

import argparse
import sys

from famfs_py.cli.common import Parser

EXIT_CODES = """
  0  replayed with no error
  N  N log entries could not be applied (at most 127)
  1  not a famfs-py mount (or its daemon does not answer)
  2  usage error
"""


def build_parser(prog: str) -> Parser:
    parser = Parser(
        prog=prog,
        description="Replay the famfs log into a mount now (clients also follow it on their own).",
        exit_codes=EXIT_CODES,
    )
    parser.add_argument("-n", "--dryrun", action="store_true", help="report, change nothing")
    parser.add_argument("-v", "--verbose", action="store_true", help="list bad entries")
    parser.add_argument("-c", "--client", action="store_true", help="accepted (as upstream)")
    parser.add_argument("-d", "--debug", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("mountpoint", metavar="MOUNTPOINT")
    return parser


def run(args: argparse.Namespace) -> int:
    from famfs_py import channel, protocol

    located = channel.locate(args.mountpoint)
    with channel.Channel(located.mountpoint) as chan:
        reply = chan.call(protocol.Logplay(dry_run=args.dryrun))
    print(
        f"famfs_logplay: {reply['entries']} log entries; {reply['new_files']} new files; "
        f"{reply['new_dirs']} new directories"
    )
    if args.verbose:
        print(f"\tfiles {reply['files']}, directories {reply['dirs']} in the namespace")
        for bad in reply["bad"]:
            print(f"\t{bad}", file=sys.stderr)
    return min(len(reply["bad"]), 127)
