"""`famfs-py mkfs` / `mkfs.famfs-py`: make (or kill) a famfs filesystem on a dax device."""

from __future__ import annotations

import argparse

from famfs_py import omf
from famfs_py.cli.common import (
    Parser,
    add_mode_selectors,
    add_root_option,
    add_system_uuid_option,
    check_mode_selectors,
    parse_size,
    resolve_device_or_fail,
    this_host_uuid,
)
from famfs_py.errors import FamfsError
from famfs_py.fs.mkfs import mkfs

EXIT_CODES = """
  0  the filesystem was made (or, with -k, killed)
  2  usage error, or mkfs refused or failed (the device is left untouched)
"""
EXIT_MKFS_FAILED = 2


def build_parser(prog: str) -> Parser:
    parser = Parser(
        prog=prog,
        description="Write a famfs superblock and an empty log on DEVICE.",
        exit_codes=EXIT_CODES,
    )
    parser.add_argument(
        "-f",
        "--force",
        action="store_true",
        help="overwrite an existing famfs (also another host's)",
    )
    parser.add_argument(
        "-k",
        "--kill",
        action="store_true",
        help="with -f: only zero the superblock magic (unmake the filesystem)",
    )
    parser.add_argument(
        "-l",
        "--loglen",
        type=parse_size,
        default=None,
        metavar="LOGLEN",
        help="log length: a power of two >= 8m (default 8m)",
    )
    parser.add_argument(
        "--4k",
        dest="small_units",
        action="store_true",
        help="allocate in 4 KiB units instead of 2 MiB (small files cost 4 KiB, not 2 MiB)",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="also print the new log's layout"
    )
    add_mode_selectors(parser)
    parser.add_argument("--devdax", action="store_true", help="accept a real device in devdax mode")
    parser.add_argument(
        "--allow-small",
        action="store_true",
        help="emulated devices only: allow a device under 4 GiB (for tests)",
    )
    parser.add_argument("-d", "--debug", action="store_true", help="debug logging")
    add_root_option(parser)
    add_system_uuid_option(parser)
    parser.add_argument("device", metavar="DEVICE", help="daxX.Y, /dev/daxX.Y or emulated node")
    return parser


class MkfsFailed(FamfsError):
    """mkfs refused or failed: like upstream's mkfs.famfs, it exits 2 on every failure."""

    exit_code = EXIT_MKFS_FAILED


def _remedy(needs: str | None, args: argparse.Namespace) -> str:
    """The flag that lets a refused mkfs through, said the way the library cannot."""
    if needs == "force":
        return "; add -f to confirm" if args.kill else "; use -f to overwrite it"
    if needs == "log_len":
        return " (use -l 8m, 16m, 32m, ...)"
    return ""


def run(args: argparse.Namespace) -> int:
    check_mode_selectors(args)
    device = resolve_device_or_fail(args.device, args.root, MkfsFailed)
    try:
        result = mkfs(
            device,
            system_uuid=this_host_uuid(args),
            force=args.force,
            kill=args.kill,
            log_len=omf.DEFAULT_LOG_LEN if args.loglen is None else args.loglen,
            alloc_unit=omf.SMALL_ALLOC_UNIT if args.small_units else omf.ALLOC_UNIT,
            allow_small=args.allow_small,
            allow_devdax=args.devdax,
        )
    except FamfsError as exc:
        raise MkfsFailed(exc.message + _remedy(exc.needs, args), exc.errno) from None
    if result.killed:
        if not result.had_fs:
            print(f"No famfs superblock on {result.device}: nothing to kill")
        else:
            print(f"Killed superblock on {result.device}")
        return 0
    assert result.superblock is not None
    print(f"famfs filesystem created on {result.device}")
    print(f"  device size:  {result.dev_size} bytes ({result.dev_size / (1 << 30):.2f} GiB)")
    print(f"  log:          {result.log_len} bytes, {result.log_slots} entries")
    print(f"  alloc unit:   {result.superblock.alloc_unit:#x}")
    print(f"  free space:   {result.free_bytes} bytes")
    print(f"  fs uuid:      {result.superblock.fs_uuid}")
    print(f"  system uuid:  {result.superblock.system_uuid} (this host is the master)")
    if args.verbose:
        print(f"  log offset:   {result.superblock.log_offset}")
    return 0
