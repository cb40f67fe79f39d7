"""`famfs-py check`: walk a mount and check that every file has its map and memory."""

from __future__ import annotations

import argparse
import os
import sys

from famfs_py import channel, protocol
from famfs_py.cli.common import Parser
from famfs_py.errors import FamfsError

EXIT_CODES = """
  0  every file is mapped and readable
  1  at least one file has no map or unreadable memory, or MOUNTPOINT is not a famfs-py
     mount
  2  usage error
"""


def build_parser(prog: str) -> Parser:
    parser = Parser(
        prog=prog, description="Check every file of a famfs-py mount.", exit_codes=EXIT_CODES
    )
    parser.add_argument("-v", "--verbose", action="count", default=0)
    parser.add_argument("-d", "--debug", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("mountpoint", metavar="MOUNTPOINT")
    return parser


def run(args: argparse.Namespace) -> int:
    mountpoint = os.path.realpath(args.mountpoint)
    if not channel.is_mountpoint(mountpoint):
        raise FamfsError(f"{args.mountpoint} is not a famfs-py mount point")
    files = dirs = errors = 0
    for meta in (".superblock", ".log"):
        if not os.path.isfile(os.path.join(mountpoint, ".meta", meta)):
            print(f"famfs_check: missing .meta/{meta}", file=sys.stderr)
            errors += 1
    with channel.Channel(mountpoint) as chan:
        for dirpath, dirnames, filenames in os.walk(mountpoint):
            dirs += len(dirnames)
            for name in filenames:
                files += 1
                rel = os.path.relpath(os.path.join(dirpath, name), mountpoint)
                try:
                    reply = chan.call(protocol.Getmap(rel))
                    if not reply.available:
                        raise FamfsError("its memory cannot be used (a memory error)")
                except FamfsError as exc:
                    print(
                        f"famfs_check: Error file not usable: {rel}: {exc.message}", file=sys.stderr
                    )
                    errors += 1
                    continue
                if args.verbose:
                    print(f"famfs_check: ok {rel}")
    print(f"famfs_check: {files} files, {dirs} directories, {errors} errors")
    return 1 if errors else 0
