"""`famfs-py chkread`: check that reading a file through the mount returns exactly the bytes
in its device memory."""

from __future__ import annotations

import argparse
import sys

from famfs_py import omf
from famfs_py.cli.common import Parser
from famfs_py.errors import FamfsError
from famfs_py.mapping import first_difference, open_file_memory

EXIT_CODES = """
  0  read(2) and the memory match for every file
  1  a file differs, cannot be read, or is not in famfs
  2  usage error
"""


def build_parser(prog: str) -> Parser:
    parser = Parser(
        prog=prog,
        description="Compare read(2) through the mount with the file's device memory. With -s "
        "or -l (as upstream), FILE is the mount's .meta/.superblock or .meta/.log, and its "
        "fields are printed too.",
        exit_codes=EXIT_CODES,
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "-s", "--superblock", action="store_true", help="FILE is a superblock: print its fields"
    )
    which.add_argument("-l", "--log", action="store_true", help="FILE is a log: print its header")
    parser.add_argument("-d", "--debug", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("files", nargs="+", metavar="FILE")
    return parser


def describe(name: str, superblock: bool) -> list[str]:
    """The superblock's fields or the log header, as read(2) returns them."""
    with open(name, "rb") as f:
        raw = f.read(max(omf.SUPERBLOCK_STRUCT_SIZE, omf.LOG_HEADER_SIZE))
    try:
        if superblock:
            sb = omf.Superblock.unpack(raw)
            return [
                f"superblock: magic {sb.magic:#x}, version {sb.version}, "
                f"OMF {sb.omf_major}.{sb.omf_minor}",
                f"  log offset {sb.log_offset:#x}, log length {sb.log_len}, "
                f"alloc unit {sb.alloc_unit:#x}",
                f"  fs uuid {sb.fs_uuid}, system uuid {sb.system_uuid}",
                f"  primary device {sb.dev_name}, {sb.dev_size} bytes",
            ]
        header = omf.LogHeader.unpack(raw)
    except omf.OmfError as exc:
        return [f"cannot decode: {exc}"]
    return [
        f"log: magic {header.magic:#x}, length {header.log_len}, "
        f"{header.next_index} of {header.last_index + 1} entries used, "
        f"next seqnum {header.next_seqnum}"
    ]


def chkread(name: str) -> str | None:
    """None if read(2) matches memory, else where they differ. FamfsError or OSError when
    the file cannot be compared at all (no permission, not in a mount...)."""
    with open_file_memory(name, write=False) as mapped, open(name, "rb", buffering=0) as f:
        mapped.invalidate()  # read memory, not what this CPU may have cached of it
        where_differs = first_difference(mapped.readinto, mapped.size, f.fileno())
    if where_differs is not None:
        return f"read and memory differ at byte {where_differs}"
    return None


def run(args: argparse.Namespace) -> int:
    failures = 0
    for name in args.files:
        try:
            problem = chkread(name)
        except (FamfsError, OSError) as exc:  # not a miscompare: it could not be compared
            print(f"famfs-py chkread: {name}: cannot compare: {exc}", file=sys.stderr)
            failures += 1
            continue
        if problem:
            print(f"famfs-py chkread: {name}: Read and mmap miscompare: {problem}", file=sys.stderr)
            failures += 1
            continue
        if args.superblock or args.log:
            for line in describe(name, superblock=args.superblock):
                print(line)
        print(f"{name}: Read and mmap match")
    return 1 if failures else 0
