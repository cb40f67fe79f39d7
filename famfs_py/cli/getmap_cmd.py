"""`famfs-py getmap`: print the size and extents (or strips) of famfs files."""

from __future__ import annotations

import argparse
import errno
import os
import sys

from famfs_py import channel, omf, protocol
from famfs_py.cli.common import Parser, print_json
from famfs_py.errors import FamfsError
from famfs_py.replies import FileMapReply

EXIT_CODES = """
  0  every file is a famfs file with a map
  1  a file is not in famfs (or does not exist)
  2  a file is in famfs but has no map (a directory)
  without -c the first failing file ends the command; the exit code is that file's
"""


def build_parser(prog: str) -> Parser:
    parser = Parser(
        prog=prog,
        description="Show where famfs files live in device memory.",
        exit_codes=EXIT_CODES,
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print no maps")
    parser.add_argument(
        "-c", "--continue", dest="keep_going", action="store_true", help="go on after a file fails"
    )
    parser.add_argument("--json", action="store_true", help="print the maps as JSON")
    parser.add_argument("-d", "--debug", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("files", nargs="+", metavar="FILE")
    return parser


def _print_map(name: str, reply: FileMapReply) -> None:
    out = [f"File:     {name}", f"\tsize:    {reply.size}"]
    fmap = reply.fmap
    if isinstance(fmap, omf.InterleavedFmap):
        out.append(f"\tInterleave_Param chunk_size: {fmap.chunk_size}")
        out.append(f"\tInterleaved extent has {fmap.nstrips} strips:")
        out += [f"\t\t{s.offset:x}\t{s.length}" for s in fmap.strips]
    else:
        extents = omf.fmap_extents(fmap)
        out.append(f"\textents: {len(extents)}")
        out += [f"\t\t{e.offset:x}\t{e.length}" for e in extents]
    print("\n".join(out))


def getmap_one(name: str) -> tuple[int, FileMapReply | None, str]:
    """(exit code, map, message) for one file."""
    if not os.path.lexists(name):
        return 1, None, f"file not found ({name})"
    try:
        where = channel.locate(name)
    except FamfsError:
        return 1, None, f"file ({name}) not in famfs"
    if os.path.isdir(name):
        return 2, None, f"file ({name}) is famfs, but has no map (a directory)"
    try:
        with channel.Channel(where.mountpoint) as chan:
            return 0, chan.call(protocol.Getmap(where.relpath)), ""
    except FamfsError as exc:
        code = 2 if exc.errno == errno.EISDIR else 1
        return code, None, f"file ({name}): {exc.message}"


def run(args: argparse.Namespace) -> int:
    rc = 0
    maps = []
    for name in args.files:
        code, reply, message = getmap_one(name)
        if code:
            rc = code
            if not args.quiet:
                print(f"famfs_getmap: {message}", file=sys.stderr)
            if not args.keep_going:
                break
            continue
        assert reply is not None
        maps.append({"file": name, **reply.to_fields()})
        if not args.json and not args.quiet:
            _print_map(name, reply)
        if not args.json:
            print(f"famfs_getmap: good file {name}")
    if args.json:
        print_json(maps)
    return rc
