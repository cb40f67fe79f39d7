"""`famfs-py umount`: unmount, wait until the daemon has exited and released the device; also
clean up a stale mount left by a killed daemon (`--if-stale`: only that, as a service's
pre-start step does)."""

from __future__ import annotations

import argparse
import errno
import os
import select
import shutil
import subprocess

from famfs_py import channel, protocol
from famfs_py.cli.common import Parser
from famfs_py.errors import FamfsError, UsageError

EXIT_CODES = """
  0  unmounted, the daemon has exited and the device is released;
     with --if-stale: the stale mount was cleaned up, or nothing was mounted there
  1  not unmounted (not a famfs-py mount, busy, or the daemon did not exit);
     with --if-stale: a live mount or another file system is there (left alone)
  2  usage error
"""
EXIT_WAIT = 30.0


def build_parser(prog: str) -> Parser:
    parser = Parser(prog=prog, description="Unmount a famfs-py mount.", exit_codes=EXIT_CODES)
    parser.add_argument(
        "-l", "--lazy", action="store_true", help="detach now even if files are open (lazy unmount)"
    )
    parser.add_argument(
        "--if-stale",
        action="store_true",
        help="only clean up a stale mount (its daemon is gone); succeed if nothing is mounted",
    )
    parser.add_argument("-d", "--debug", action="store_true", help="debug logging")
    parser.add_argument("mountpoint", metavar="MOUNTPOINT")
    return parser


def _unmount(mountpoint: str, lazy: bool) -> None:
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    command = [tool, "-u"] if tool else ["umount"]
    if lazy:
        command.append("-z" if tool else "-l")
    result = subprocess.run([*command, mountpoint], capture_output=True, text=True)
    if result.returncode != 0:
        why = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "failed"
        hint = " (files are open: close them, or use --lazy)" if "busy" in why.lower() else ""
        raise FamfsError(f"cannot unmount {mountpoint}: {why}{hint}")


def wait_for_exit(pid: int, timeout: float) -> bool:
    """Whether process `pid` ended within `timeout` (a zombie has ended: it holds no files
    and no claim any more, whoever reaps it)."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([pidfd], [], [], timeout)[0])
    finally:
        os.close(pidfd)


def clean_if_stale(given: str, mountpoint: str) -> int:
    """Unmount `mountpoint` only if it holds a famfs-py mount whose daemon is gone."""
    if not channel.is_mountpoint(mountpoint):
        if os.path.ismount(mountpoint):
            raise FamfsError(
                f"{given} holds another file system, not famfs-py (unmount it yourself)"
            )
        print(f"famfs-py: nothing mounted on {mountpoint}")
        return 0
    try:
        with channel.Channel(mountpoint, timeout=10) as chan:
            pid = chan.call(protocol.Status()).daemon_pid
    except FamfsError as exc:
        if exc.errno != errno.ENOTCONN:  # someone listens but does not answer: not stale
            raise FamfsError(
                f"the daemon of {given} is there but does not answer ({exc.message}); "
                f"stop it, or 'famfs-py umount --lazy {given}'"
            ) from None
    else:
        raise FamfsError(
            f"{given} is mounted and its daemon (pid {pid}) answers: not stale "
            f"('famfs-py umount {given}' unmounts it)"
        )
    _unmount(mountpoint, lazy=True)
    print(f"famfs-py: cleaned up the stale mount at {mountpoint} (its daemon was gone)")
    return 0


def run(args: argparse.Namespace) -> int:
    if not args.mountpoint:
        raise UsageError(
            "no mount point given (under systemd: set FAMFS_PY_MOUNTPOINT in "
            "/etc/famfs-py/<instance>.conf or a drop-in)"
        )
    mountpoint = os.path.realpath(args.mountpoint)
    if args.if_stale:
        return clean_if_stale(args.mountpoint, mountpoint)
    if not channel.is_mountpoint(mountpoint):
        raise FamfsError(f"{args.mountpoint} is not a famfs-py mount")
    try:
        with channel.Channel(mountpoint, timeout=10) as chan:
            pid = chan.call(protocol.Status()).daemon_pid
    except FamfsError:
        pid = None
    if pid is None:
        _unmount(mountpoint, lazy=True)
        print(f"famfs-py: cleaned up the stale mount at {mountpoint} (its daemon was gone)")
        return 0
    _unmount(mountpoint, args.lazy)
    if not wait_for_exit(pid, EXIT_WAIT):
        raise FamfsError(
            f"unmounted {mountpoint}, but daemon {pid} has not exited after "
            f"{EXIT_WAIT:.0f}s (the device may still be claimed)"
        )
    print(f"famfs-py: unmounted {mountpoint}")
    return 0
