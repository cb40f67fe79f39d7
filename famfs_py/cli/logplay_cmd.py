"""`famfs-py logplay`: replay the log into a running mount now, or (as upstream's shadow
logplay) write the log as upstream's shadow tree of YAML files."""

from __future__ import annotations

import argparse
import errno
import os
import sys
from typing import Any

from famfs_py import channel, omf, protocol
from famfs_py.cli.common import Parser, add_root_option, resolve_device_or_fail
from famfs_py.dax import holder
from famfs_py.dax.memory import DeviceMemory, MemoryFault
from famfs_py.errors import FamfsError, UsageError
from famfs_py.fs import shadow as shadow_tree
from famfs_py.fs.log import read_superblock

EXIT_CODES = """
  0  replayed with no error
  N  N log entries could not be applied (at most 127; with a shadow: N files or
     directories could not be written, or their YAML did not read back)
  1  not a famfs-py mount (or its daemon does not answer); the shadow path or the device
     cannot be used
  2  usage error (also: --daxdev without a shadow, --mmap with --read, --shadow twice)
"""


class _OnlyOnce(argparse.Action):
    """--shadow DIR, given at most once (as upstream)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        if getattr(namespace, self.dest) is not None:
            parser.error(f"{option_string} given twice: give one shadow path")
        setattr(namespace, self.dest, values)


def build_parser(prog: str) -> Parser:
    parser = Parser(
        prog=prog,
        description="Replay the famfs log into the mount holding MOUNTPOINT now (clients also "
        "follow it on their own). With a shadow path, write upstream's shadow tree instead: "
        "under SHADOW/root (or SHADOW itself if it ends in /root) a directory per logged "
        "directory and a YAML file per logged file, from the mount's .meta/.log or, with "
        "--daxdev, from an unmounted device.",
        usage="%(prog)s [options] MOUNTPOINT\n"
        "       %(prog)s [options] --shadow SHADOW (MOUNTPOINT | --daxdev DEVICE)\n"
        "       %(prog)s [options] -S SHADOW MOUNTPOINT",
        exit_codes=EXIT_CODES,
    )
    parser.add_argument("-n", "--dryrun", action="store_true", help="report, change nothing")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="list bad entries (shadow: the YAML)"
    )
    parser.add_argument(
        "--shadow", action=_OnlyOnce, metavar="SHADOW", help="write the shadow tree at SHADOW"
    )
    parser.add_argument(
        "-S",
        dest="shadow_first",
        action="store_true",
        help="the first path is the shadow path (upstream's -S takes no value)",
    )
    parser.add_argument(
        "-s",
        "--shadowtest",
        action="store_true",
        help="read every shadow file back and compare it with its log entry",
    )
    parser.add_argument(
        "-d", "--daxdev", metavar="DEVICE", help="shadow: read the log from this unmounted device"
    )
    parser.add_argument(
        "-c", "--client", action="store_true", help="accepted (upstream: play as a client)"
    )
    how = parser.add_mutually_exclusive_group()
    how.add_argument("-m", "--mmap", action="store_true", help="accepted (upstream: map the log)")
    how.add_argument("-r", "--read", action="store_true", help="accepted (upstream: read(2) it)")
    parser.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    add_root_option(parser)
    parser.add_argument("paths", nargs="*", metavar="PATH", help=argparse.SUPPRESS)
    return parser


def _targets(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """(shadow path, mount point) from the options and paths; usage errors exit 2."""
    paths = list(args.paths)
    shadow = args.shadow
    if args.shadow_first:
        if shadow is not None:
            raise UsageError("give the shadow path once: -S SHADOW or --shadow SHADOW")
        if not paths:
            raise UsageError("-S: give the shadow path, then the mount point")
        shadow = paths.pop(0)
    if args.daxdev and shadow is None:
        raise UsageError("--daxdev is only used with a shadow logplay (--shadow SHADOW)")
    if args.shadowtest and shadow is None:
        raise UsageError("--shadowtest checks a shadow tree: give --shadow SHADOW")
    if args.daxdev:
        if paths:
            raise UsageError(f"with --daxdev, give no mount point ({paths[0]})")
        return shadow, None
    if len(paths) != 1:
        what = "a mount point" if not paths else "one mount point"
        raise UsageError(f"give {what} (any path in a famfs-py mount)")
    return shadow, paths[0]


def _log_from_mount(path: str) -> bytes:
    where = channel.locate(path)
    log_file = os.path.join(where.mountpoint, ".meta", ".log")
    try:
        with open(log_file, "rb") as f:
            return f.read()
    except OSError as exc:
        raise FamfsError(f"cannot read {log_file}: {exc.strerror}") from None


def _log_from_device(spec: str, root: str | None) -> bytes:

    device = resolve_device_or_fail(spec, root)
    try:
        claim = holder.claim(device, "famfs-py logplay --shadow")
    except OSError as exc:
        hint = (
            "; it is mounted: play the shadow from the mount instead (--shadow SHADOW MOUNTPOINT)"
            if exc.errno == errno.EBUSY
            else ""
        )
        raise FamfsError(f"{exc.strerror or exc}{hint}", exc.errno) from None
    with claim:
        if device.size < omf.SUPERBLOCK_STRUCT_SIZE:
            raise FamfsError(f"{device.path} holds {device.size} bytes: no famfs on it")
        try:
            with DeviceMemory.of_device(device, writable=False) as mem:
                sb = read_superblock(mem)
                problems = sb.problems()
                if problems:
                    raise FamfsError(f"{device.path}: no valid famfs superblock ({problems[0]})")
                if sb.log_offset + sb.log_len > device.size:
                    raise FamfsError(f"{device.path}: the log lies beyond the device's end")
                return bytes(mem.read(sb.log_offset, sb.log_len))
        except MemoryFault as exc:
            raise FamfsError(f"{device.path} has a memory error ({exc})") from None
        except OSError as exc:
            raise FamfsError(f"cannot read {device.path}: {exc.strerror or exc}") from None


def run_shadow(args: argparse.Namespace, shadow: str, mountpoint: str | None) -> int:
    try:
        shadow_tree.shadow_root(shadow)  # refuse a bad shadow path before touching the device
    except shadow_tree.ShadowError as exc:
        raise FamfsError(str(exc)) from None
    log = _log_from_mount(mountpoint) if mountpoint else _log_from_device(args.daxdev, args.root)
    print("Logplay: running in shadow test mode" if args.shadowtest else "Logplay: shadow")
    try:
        stats = shadow_tree.play(
            log,
            shadow,
            dry_run=args.dryrun,
            test=args.shadowtest,
            say=print,
            warn=lambda line: print(f"famfs-py logplay: {line}", file=sys.stderr),
            verbose=args.verbose,
        )
    except shadow_tree.ShadowError as exc:
        raise FamfsError(str(exc)) from None
    print("\n".join(stats.summary(verbose=args.verbose > 0)))
    return min(stats.errors, 127)


def run(args: argparse.Namespace) -> int:
    shadow, mountpoint = _targets(args)
    if shadow is not None:
        return run_shadow(args, shadow, mountpoint)
    assert mountpoint is not None
    located = channel.locate(mountpoint)
    with channel.Channel(located.mountpoint) as chan:
        reply = chan.call(protocol.Logplay(dry_run=args.dryrun))
    print(
        f"famfs_logplay: {reply.entries} log entries; {reply.new_files} new files; "
        f"{reply.new_dirs} new directories"
    )
    if args.verbose:
        print(f"\tfiles {reply.files}, directories {reply.dirs} in the namespace")
        for bad in reply.bad:
            print(f"\t{bad}", file=sys.stderr)
    return min(len(reply.bad), 127)
