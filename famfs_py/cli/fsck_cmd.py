"""`famfs-py fsck`: check a famfs device offline (claimed for the check), or a mount."""

from __future__ import annotations

import argparse
import errno
import sys

from famfs_py.cli.common import (
    Parser,
    add_root_option,
    add_system_uuid_option,
    print_json,
    resolve_device_or_fail,
    this_host_uuid,
)
from famfs_py.errors import FamfsError

EXIT_CODES = """
  0    the filesystem is clean
  N    N problems were found (bad superblock, bad log header, bad entries and allocation
       collisions each count; at most 127)
  2    usage error
  128  the device could not be checked (missing, busy, wrong mode)
"""
EXIT_CANNOT_CHECK = 128


def build_parser(prog: str) -> Parser:
    parser = Parser(
        prog=prog,
        description="Check a famfs filesystem: superblock, log header, every log entry "
        "(crc, seqnum, paths, extents), allocation collisions, and the space used.",
        exit_codes=EXIT_CODES,
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="list every file")
    parser.add_argument(
        "-B",
        "--nbuckets",
        type=int,
        default=0,
        metavar="NBUCKETS",
        help="also show use per bucket (interleaved allocation)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--devdax", action="store_true", help="accept a real device in devdax mode")
    parser.add_argument("-d", "--debug", action="store_true", help="debug logging")
    add_root_option(parser)
    add_system_uuid_option(parser)
    parser.add_argument("target", metavar="DEVICE|PATH", help="a dax device, or a path in a mount")
    return parser


def check_device(args: argparse.Namespace):  # -> FsckReport
    from famfs_py.dax import holder
    from famfs_py.dax.memory import DeviceMemory
    from famfs_py.fs.fsck import FsckReport, fsck_memory

    device = resolve_device_or_fail(args.target, args.root, EXIT_CANNOT_CHECK)
    try:
        claim = holder.claim(device, "famfs-py fsck", allow_devdax=args.devdax)
    except OSError as exc:
        hint = (
            "; check a mounted filesystem by its mount point instead"
            if exc.errno == errno.EBUSY
            else ""
        )
        raise FamfsError(f"{exc.strerror}{hint}", EXIT_CANNOT_CHECK, exc.errno) from None
    with claim:
        try:
            mem = DeviceMemory.of_device(device, writable=False)
        except OSError as exc:  # e.g. smaller than its alignment (a seed device holds 0)
            report = FsckReport(device.path)
            report.superblock_problems.append(f"no superblock can be read: {exc.strerror}")
            return report
        with mem:
            return fsck_memory(
                mem,
                device.path,
                this_host_uuid(args),
                detail=args.verbose > 0,
                nbuckets=args.nbuckets,
            )


def check_mounted(args: argparse.Namespace):  # -> FsckReport
    """fsck through a mount: the daemon checks from its own mapping."""
    from famfs_py import channel, protocol
    from famfs_py.fs.fsck import FsckReport

    where = channel.locate(args.target)
    with channel.Channel(where.mountpoint, timeout=600) as chan:
        reply = chan.call(protocol.Fsck(verbose=args.verbose > 0, nbuckets=args.nbuckets))
    return FsckReport.from_json(reply["report"])


def print_report(report, verbose: int) -> None:  # report: FsckReport
    out = sys.stdout
    out.write(f"famfs fsck of {report.device}\n")
    for problem in report.superblock_problems:
        out.write(f"  superblock: {problem}\n")
    if report.superblock_problems:
        out.write("  no valid famfs superblock: nothing more to check\n")
        return
    out.write(f"  Filesystem UUID:     {report.fs_uuid}\n")
    out.write(f"  System UUID:         {report.system_uuid}\n")
    out.write(f"  Role:                {report.role}\n")
    for problem in report.log_problems:
        out.write(f"  log header: {problem}\n")
    if report.log_problems:
        return
    out.write("Log stats:\n")
    out.write(f"  # of log entries in use: {report.entries} of {report.log_slots}\n")
    out.write(f"  files: {report.files}  directories: {report.dirs}\n")
    for bad in report.bad_entries:
        out.write(f"  bad entry {bad['index']}: {'; '.join(bad['reasons'])}\n")
    if report.collisions:
        out.write(f"  ERROR: {report.collisions} allocation collisions found\n")
    else:
        out.write("  No allocation errors found\n")
    out.write("Capacity:\n")
    out.write(f"  Device capacity:        {report.dev_size}\n")
    out.write(
        f"  Bitmap capacity:        {report.nbits * (report.dev_size // max(report.nbits, 1))}\n"
    )
    out.write(f"  Sum of file sizes:      {report.sum_file_sizes}\n")
    out.write(f"  Allocated bytes:        {report.alloc_bytes}\n")
    out.write(f"  Free space:             {report.free_bytes}\n")
    out.write(f"  Space amplification:    {report.space_amplification:.2f}\n")
    used = 100.0 * report.alloc_bytes / report.dev_size if report.dev_size else 0.0
    out.write(f"  Percent used:           {used:.1f}%\n")
    for b in report.buckets:
        out.write(
            f"Bucket {b['bucket']}: offset {b['offset']:#x} size {b['size']} in use "
            f"{b['used']} free {b['free']} free fragments {b['free_fragments']} largest "
            f"{b['largest_fragment']} smallest {b['smallest_fragment']}\n"
        )
    if verbose:
        out.write("Files:\n")
        for f in report.files_detail:
            extents = ", ".join(f"{e['offset']:#x}+{e['length']:#x}" for e in f["extents"])
            out.write(f"  {f['path']}  {f['size']}  [{extents}]\n")
    out.write(f"{report.problems} problem(s) found\n")


def run(args: argparse.Namespace) -> int:
    import os

    if args.nbuckets < 0 or args.nbuckets > 64:
        raise FamfsError("-B takes 1..64 buckets", 2)
    from famfs_py import channel

    in_mount = False
    if os.path.exists(args.target):
        try:
            channel.locate(args.target)
            in_mount = True
        except FamfsError:
            pass
    report = check_mounted(args) if in_mount else check_device(args)
    if args.json:
        print_json(report.as_json())
    else:
        print_report(report, args.verbose)
    return report.exit_code
