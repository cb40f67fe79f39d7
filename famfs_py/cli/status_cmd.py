"""`famfs-py status`: a mount's role, device, claim, log usage, capacity, cache, CPU cache
flushing and health."""

from __future__ import annotations

import argparse

from famfs_py import channel, protocol
from famfs_py.cli.common import Parser, print_json
from famfs_py.fs.status import Flushing
from famfs_py.replies import StatusReply

EXIT_CODES = """
  0  the mount is healthy
  1  not a famfs-py mount, or its daemon does not answer
  2  usage error
  3  the mount is degraded (poisoned ranges), failsafe, or its device was removed
"""


def build_parser(prog: str) -> Parser:
    parser = Parser(
        prog=prog, description="Show the state of a famfs-py mount.", exit_codes=EXIT_CODES
    )
    parser.add_argument("--json", action="store_true", help="print JSON with stable keys")
    parser.add_argument("-d", "--debug", action="store_true", help="debug logging")
    parser.add_argument("mountpoint", metavar="MOUNTPOINT")
    return parser


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.2f} GiB"


def _size(n: int) -> str:
    return f"{n >> 30} GiB" if n >= 1 << 30 else f"{n >> 20} MiB" if n >= 1 << 20 else f"{n} B"


def _flushing(info: Flushing | None) -> str:
    """The CPU cache flushing in force, and what the daemon has done of it."""
    if not info:
        return "unknown (an older daemon)"
    text = info.reason
    if info.enabled:
        text += f", {info.flush_instruction}/{info.invalidate_instruction}"
    done = info.counters
    return (
        f"{text}; daemon: {done['flush']['calls']} flushes ({done['flush']['lines']} lines), "
        f"{done['invalidate']['calls']} invalidates ({done['invalidate']['lines']} lines)"
    )


def text_lines(status: StatusReply) -> list[str]:
    cap = status.capacity
    lines = [
        f"mount:      {status.mountpoint} (daemon pid {status.daemon_pid})",
        f"role:       {status.role}" + ("" if status.writable_data else " (file data read-only)"),
        f"device:     {status.device} ({status.device_mode} mode, "
        f"align {_size(status.device_align)}, {_gib(status.device_size)}"
        + (f", numa node {status.numa_node}" if status.numa_node is not None else "")
        + (", emulated)" if status.emulated else ")"),
        f"claimed by: pid {status.holder_pid}",
        f"fs uuid:    {status.fs_uuid}",
        f"files:      {status.files} files, {status.directories} directories",
        f"log:        {status.log.used} of {status.log.slots} entries used",
        f"capacity:   {_gib(cap.size)}, {_gib(cap.allocated)} allocated, {_gib(cap.free)} free",
        f"cache:      {status.cache}",
        f"flushing:   {_flushing(status.cache_flush)}",
        f"health:     {status.health}",
    ]
    if status.failsafe:
        lines.append(f"failsafe:   {status.failsafe}")
    if status.removed:
        lines.append("removed:    the device was removed; unmount this filesystem")
    for bad in status.poisoned:
        files = ", ".join(bad.files) or "no file (free space or metadata)"
        lines.append(f"poisoned:   {bad.offset:#x}+{bad.length:#x}: {files}")
    return lines


def run(args: argparse.Namespace) -> int:
    located = channel.locate(args.mountpoint)
    with channel.Channel(located.mountpoint) as chan:
        status = chan.call(protocol.Status())
    if args.json:
        print_json(status.to_fields())
    else:
        print("\n".join(text_lines(status)))
    return 0 if status.healthy else 3
