"""`famfs-py fsck`: check a famfs device offline (claimed for the check), or a mount."""

from __future__ import annotations

import argparse
import errno
import os
import sys

from famfs_py import channel, omf, protocol
from famfs_py.cli.common import (
    Parser,
    add_mode_selectors,
    add_root_option,
    add_system_uuid_option,
    check_mode_selectors,
    print_json,
    resolve_device_or_fail,
    this_host_uuid,
)
from famfs_py.dax import holder
from famfs_py.dax.memory import DeviceMemory
from famfs_py.errors import FamfsError, UsageError
from famfs_py.fs.fsck import FsckReport, fsck_memory

EXIT_CODES = """
  0    the filesystem is clean
  N    N problems were found (bad superblock, bad log header, bad entries and allocation
       collisions each count; at most 99)
  2    usage error
  100  the device could not be checked (missing, busy, wrong mode, or PATH not in a mount)
"""
EXIT_CANNOT_CHECK = 100


class CannotCheck(FamfsError):
    """fsck could not look at the filesystem at all (no device, the claim refused)."""

    exit_code = EXIT_CANNOT_CHECK


def build_parser(prog: str) -> Parser:
    parser = Parser(
        prog=prog,
        description="Check a famfs filesystem: superblock, log header, every log entry "
        "(crc, seqnum, paths, extents), allocation collisions, and the space used.",
        exit_codes=EXIT_CODES,
        help_flags=("--help", "-?"),  # -h is --human, as upstream
    )
    parser.add_argument("-h", "--human", action="store_true", help="sizes in GiB (upstream: 0.00G)")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="also the log layout and every file"
    )
    how = parser.add_mutually_exclusive_group()
    how.add_argument(
        "-m", "--mmap", action="store_true", help="accepted (upstream: read the log mapped)"
    )
    how.add_argument(
        "-r", "--read", action="store_true", help="accepted (upstream: read the log with read(2))"
    )
    parser.add_argument("-f", "--force", action="store_true", help="accepted (upstream: no effect)")
    add_mode_selectors(parser)
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


def check_device(args: argparse.Namespace) -> FsckReport:
    device = resolve_device_or_fail(args.target, args.root, CannotCheck)
    try:
        claim = holder.claim(device, "famfs-py fsck", allow_devdax=args.devdax)
    except OSError as exc:
        hint = (
            "; check a mounted filesystem by its mount point instead"
            if exc.errno == errno.EBUSY
            else ""
        )
        raise CannotCheck(f"{exc.strerror}{hint}", exc.errno) from None
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


def check_mounted(args: argparse.Namespace) -> FsckReport:
    """fsck through a mount: the daemon checks from its own mapping."""
    where = channel.locate(args.target)
    with channel.Channel(where.mountpoint, timeout=600) as chan:
        reply = chan.call(protocol.Fsck(verbose=args.verbose > 0, nbuckets=args.nbuckets))
    return reply.report


def _gib(n: float) -> str:
    return f"{n / (1 << 30):.2f}G"


def print_report(report: FsckReport, verbose: int, human: bool = False) -> None:
    """The report in upstream's layout and labels (scripts parse `log_len:`, `Device
    capacity` and `Free space`); famfs-py adds the problems it found, each on its line."""
    out = sys.stdout
    out.write(f"famfs fsck of {report.device}\n")
    for problem in report.superblock_problems:
        out.write(f"  superblock: {problem}\n")
    if report.superblock_problems:
        out.write("  no valid famfs superblock: nothing more to check\n")
        out.write(f"{report.problems} problem(s) found\n")
        return
    major, minor = report.omf_version
    out.write("Famfs Superblock:\n")
    out.write(f"  Filesystem UUID:   {report.fs_uuid}\n")
    out.write(f"  Device UUID:       {report.dev_uuid}\n")
    out.write(f"  System UUID:       {report.system_uuid}\n")
    role = report.role.upstream_name if report.role else None
    out.write(f"  role of this node: {role}\n")
    out.write(f"  alloc_unit:        {report.alloc_unit:#x}\n")
    out.write(f"  OMF major version: {major}\n")
    out.write(f"  OMF minor version: {minor}\n")
    out.write(f"  sizeof superblock: {omf.SUPERBLOCK_STRUCT_SIZE}\n")
    out.write(f"  log size (bytes):  {report.log_len}\n")
    out.write(f"  primary: {report.dev_name}   {report.dev_size}\n")
    for problem in report.log_problems:
        out.write(f"  log header: {problem}\n")
    if report.log_problems:
        out.write(f"{report.problems} problem(s) found\n")
        return
    out.write("\nLog stats:\n")
    out.write(f"  # of log entries in use: {report.entries} of {report.log_slots}\n")
    in_use = omf.LOG_HEADER_SIZE + report.entries * omf.LOG_ENTRY_SIZE
    out.write(f"  Log size in use:          {in_use}\n")
    out.write(f"  Log size (total bytes)    {report.log_len}\n")
    for bad in report.bad_entries:
        out.write(f"  bad entry {bad['index']}: {'; '.join(bad['reasons'])}\n")
    if report.collisions:
        out.write(f"ERROR: {report.collisions} ALLOCATION COLLISIONS FOUND\n")
    else:
        out.write("  No allocation errors found\n")
    bitmap_capacity = report.nbits * report.alloc_unit
    size = _gib if human else str
    out.write("\nCapacity:\n")
    out.write(f"  Device capacity:        {size(report.dev_size)}\n")
    out.write(f"  Bitmap capacity:        {size(bitmap_capacity)}\n")
    out.write(f"  Sum of file sizes:      {size(report.sum_file_sizes)}\n")
    out.write(f"  Allocated {'space' if human else 'bytes'}:        {size(report.alloc_bytes)}\n")
    out.write(f"  Free space:             {size(report.free_bytes)}\n")
    out.write(f"  Space amplification:     {report.space_amplification:.2f}\n")
    used = 100.0 * report.alloc_bytes / bitmap_capacity if bitmap_capacity else 0.0
    out.write(f"  Percent used:            {used:.1f}%\n")
    out.write("\nFamfs log:\n")
    out.write(f"  {report.entries} of {report.log_slots} entries used\n")
    out.write(f"  {len(report.bad_entries)} bad log entries detected\n")
    out.write(f"  {report.files} files\n")
    out.write(f"  {report.dirs} directories\n")
    if report.buckets:
        out.write("\nStripe bucket info:\n")
        overhang = report.dev_size % len(report.buckets)
        out.write(f"  Wasted overhang: {overhang} bytes ({overhang // report.alloc_unit} au)\n")
        for b in report.buckets:
            out.write(f"  Bitmap range {b['bucket']}\n")
            out.write(f"    Offset: {b['offset']:#x}\n")
            out.write(f"    Size:   {size(b['size'])}\n")
            out.write(f"    In use: {size(b['used'])}\n")
            out.write(f"    Free:   {size(b['free'])}\n")
            out.write(f"    Free fragments: {b['free_fragments']}\n")
            out.write(f"    Largest frag:   {size(b['largest_fragment'])}\n")
            out.write(f"    Smallest frag:  {size(b['smallest_fragment'])}\n")
    if verbose:
        out.write("\nVerbose:\n")
        out.write(f"  log_offset:        {report.log_offset}\n")
        out.write(f"  log_len:           {report.log_len}\n")
        out.write(f"  last_log_index:    {report.log_slots - 1}\n")
        out.write("Files:\n")
        for f in report.files_detail:
            extents = ", ".join(f"{e['offset']:#x}+{e['length']:#x}" for e in f["extents"])
            out.write(f"  {f['path']}  {f['size']}  [{extents}]\n")
    out.write(f"\n{report.problems} problem(s) found\n")


def run(args: argparse.Namespace) -> int:
    check_mode_selectors(args)
    if args.nbuckets < 0 or args.nbuckets > 64:
        raise UsageError("-B takes 1..64 buckets")

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
        print_report(report, args.verbose, human=args.human)
    return report.exit_code
