"""`famfs-py flush`: write back and drop this CPU's cached lines of whole files, as upstream's
`famfs flush` does (its "hard flush": every line of the file is written back if dirty and
evicted, then a fence). Run it on a host that stored into a file by means famfs-py does not
flush (a program's own mmap), so other hosts see the data, or on a host about to read a file
another host rewrote, so that it reads memory rather than its stale cache.

Where the mount says memory is coherent (`-o flush=off`, an emulated device created
`--coherent`) there is nothing to write back: each file is only checked to be a famfs file
with readable memory.
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
        prog=prog,
        description="Write back and invalidate this CPU's cached lines of famfs files.",
        exit_codes=EXIT_CODES,
    )
    parser.add_argument("-v", "--verbose", action="count", default=0)
    parser.add_argument("-d", "--debug", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("files", nargs="+", metavar="FILE")
    return parser


def run(args: argparse.Namespace) -> int:
    from famfs_py.dax import cache
    from famfs_py.errors import FamfsError
    from famfs_py.mapping import open_file_memory

    errors = 0
    for name in args.files:
        before = cache.totals()["invalidate"]["lines"]
        try:
            with open_file_memory(name, write=False) as mapped:
                mapped.invalidate()  # CLFLUSHOPT/CLFLUSH: write back if dirty, then evict
                policy = mapped.coherency
        except FamfsError as exc:
            print(f"famfs-py flush: {name}: {exc.message}", file=sys.stderr)
            errors += 1
            continue
        except OSError as exc:  # a bad page (cache.CacheFault), a vanished mapping
            print(f"famfs-py flush: {name}: {exc.strerror or exc}", file=sys.stderr)
            errors += 1
            continue
        if args.verbose:
            if policy.enabled:
                lines = cache.totals()["invalidate"]["lines"] - before
                print(f"famfs-py flush: flushed {name} ({lines} cache lines)")
            else:
                print(f"famfs-py flush: {name}: nothing to flush, flushing is {policy.reason}")
    if errors:
        print(f"famfs-py flush: {errors} errors were detected", file=sys.stderr)
    return min(errors, 127)
