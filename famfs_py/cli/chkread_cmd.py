"""`famfs-py chkread`: check that reading a file through the mount returns exactly the bytes
in its device memory."""

from __future__ import annotations

import argparse
import os
import sys

from famfs_py.cli.common import Parser

EXIT_CODES = """
  0  read(2) and the memory match for every file
  1  a file differs, cannot be read, or is not in famfs
  2  usage error
"""


def build_parser(prog: str) -> Parser:
    parser = Parser(
        prog=prog,
        description="Compare read(2) through the mount with the file's device memory.",
        exit_codes=EXIT_CODES,
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "-s",
        "--superblock",
        action="store_true",
        help="check the mount's .meta/.superblock instead",
    )
    which.add_argument("-l", "--log", action="store_true", help="check .meta/.log instead")
    parser.add_argument("-d", "--debug", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("files", nargs="+", metavar="FILE")
    return parser


def chkread(name: str) -> str | None:
    """None if read(2) matches memory, else what is wrong."""
    from famfs_py.errors import FamfsError
    from famfs_py.mapping import first_difference, open_file_memory

    try:
        with open_file_memory(name, write=False) as mapped, open(name, "rb", buffering=0) as f:
            mapped.invalidate()  # read memory, not what this CPU may have cached of it
            where_differs = first_difference(mapped.readinto, mapped.size, f.fileno())
    except FamfsError as exc:
        return exc.message
    except OSError as exc:
        return str(exc)
    if where_differs is not None:
        return f"read and memory differ at byte {where_differs}"
    return None


def run(args: argparse.Namespace) -> int:
    failures = 0
    for name in args.files:
        if args.superblock or args.log:
            from famfs_py import channel

            mountpoint = channel.locate(name).mountpoint
            name = os.path.join(mountpoint, ".meta", ".superblock" if args.superblock else ".log")
        problem = chkread(name)
        if problem:
            print(f"famfs-py chkread: {name}: Read and mmap miscompare: {problem}", file=sys.stderr)
            failures += 1
        else:
            print(f"{name}: Read and mmap match")
    return 1 if failures else 0
