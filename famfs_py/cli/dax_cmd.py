"""`famfs-py dax`: emulated dax devices, daxctl style (create, list, reconfigure, remove,
inject-error, clear-errors), and the emulated memory no device uses any more."""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import sys
from pathlib import Path

from famfs_py.cli.common import (
    Parser,
    add_root_option,
    parse_size,
    print_json,
    resolve_device_or_fail,
)
from famfs_py.dax import backing, emulated
from famfs_py.dax.device import (
    DEFAULT_EMULATION_ROOT,
    DaxDevice,
    device_in_root,
    emulation_root,
    list_devices,
)
from famfs_py.dax.failure_delivery import MF_FLAG_NAMES
from famfs_py.dax.sysfs import DaxMode
from famfs_py.errors import FamfsError, UsageError

MODE_CHOICES = [DaxMode.FAMFS, DaxMode.DEVDAX, DaxMode.SYSTEM_RAM, DaxMode.DISABLED]

EXIT_CODES = """
  0  success (inject-error: the holder handled the error, or nobody holds the device)
  1  the operation failed (the message says why)
  2  usage error
  inject-error exits with the kernel's delivery result when it is not 0: 6 (ENXIO, the
  device is dead) or 95 (EOPNOTSUPP, no holder; the error is still recorded), or the
  holder's own errno
"""


def _parse_flags(text: str) -> int:
    flags = 0
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if part in MF_FLAG_NAMES:
            flags |= MF_FLAG_NAMES[part]
            continue
        try:
            flags |= int(part, 0)
        except ValueError:
            names = ", ".join(MF_FLAG_NAMES)
            raise argparse.ArgumentTypeError(
                f"{part!r} is not a flag ({names}, or a number)"
            ) from None
    return flags


def build_parser(prog: str) -> Parser:
    parser = Parser(
        prog=prog,
        description="Manage emulated dax devices (and list real ones).",
        exit_codes=EXIT_CODES,
    )
    parser.add_argument("-d", "--debug", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=Parser)

    p = sub.add_parser(
        "create",
        help="create an emulated device",
        description="Create an emulated device. Its memory is a new file in "
        "$FAMFS_PY_MEMORY_DIR, else in famfs-py's tmpfs at /run/famfs-py/memory (2 MiB pages; "
        "mounted on first use, as root), else in /dev/shm (4 KiB pages, with a warning); "
        "or the file given with --backing, or another device's memory (--share).",
    )
    p.add_argument("name", metavar="NAME", help="daxX.Y")
    p.add_argument(
        "--size", type=parse_size, help="size (k/m/g suffixes); default: the backing file's size"
    )
    memory = p.add_mutually_exclusive_group()
    memory.add_argument(
        "--backing", metavar="FILE", help="use FILE as the memory (created if missing)"
    )
    memory.add_argument(
        "--share",
        metavar="DEVICE",
        help="share the memory of another emulated device (another host)",
    )
    p.add_argument("--mode", default="famfs", choices=MODE_CHOICES)
    p.add_argument("--align", type=parse_size, default=2 << 20, help=argparse.SUPPRESS)
    p.add_argument(
        "--coherent",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="this host's CPU caches are coherent with the other hosts' over this memory, so "
        "mounts (flush=auto) and mkfs need not flush them (default: not coherent, like a "
        "fabric pool shared by hosts; with --share: as the shared device)",
    )
    add_root_option(p)

    p = sub.add_parser(
        "list",
        help="list devices (daxctl-style) and orphaned emulated memory",
        description="List the devices of the emulation root (or the real ones), then the "
        "emulated memory no device uses: memory whose device is gone (orphaned: 'dax remove "
        "--orphans' reclaims it) and memory made by an earlier famfs-py that records no owner.",
    )
    p.add_argument("--json", action="store_true", help="print a JSON array (devices only)")
    p.add_argument(
        "--orphans",
        action="store_true",
        help="list only the emulated memory no device uses (with --json: "
        '[{"memory", "size", "allocated", "owner"}], owner null when not recorded)',
    )
    add_root_option(p)

    p = sub.add_parser("reconfigure", help="change a device's mode")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--mode", required=True, choices=MODE_CHOICES)
    add_root_option(p)

    p = sub.add_parser(
        "remove",
        help="remove an emulated device, or reclaim orphaned memory",
        description="Remove emulated device NAME (also one whose memory is gone), or reclaim "
        "emulated memory no device uses: --orphans takes every memory file whose device is "
        "gone; --memory FILE takes the files named (also those of unknown owner), refusing "
        "memory a device still uses.",
    )
    p.add_argument("name", metavar="NAME", nargs="?")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--orphans", action="store_true", help="reclaim every orphaned memory file")
    what.add_argument("--memory", metavar="FILE", nargs="+", help="reclaim these memory files")
    add_root_option(p)

    p = sub.add_parser("inject-error", help="record a memory error and tell the holder")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--offset", type=parse_size, required=True)
    p.add_argument("--length", type=parse_size, required=True)
    p.add_argument(
        "--flags",
        type=_parse_flags,
        default=0,
        help="action-required, must-kill, pre-remove, or a number (sw-simulated is always added)",
    )
    add_root_option(p)

    p = sub.add_parser("clear-errors", help="forget injected errors (device unclaimed)")
    p.add_argument("name", metavar="NAME")
    add_root_option(p)
    return parser


def _root(args: argparse.Namespace) -> Path:
    return emulation_root(args.root) or DEFAULT_EMULATION_ROOT


def _emulated(args: argparse.Namespace) -> DaxDevice:
    if "/" in args.name:
        device = resolve_device_or_fail(args.name, args.root)
    else:
        device = device_in_root(args.name, _root(args))
    if not device.emulated:
        raise FamfsError(f"{device.path} is a real device: use daxctl to manage it")
    if not device.exists():
        raise FamfsError(
            f"no emulated device {args.name} under {device.emulation_root} "
            "(see 'famfs-py dax list --root DIR')",
            errno.ENODEV,
        )
    return device


def _list(args: argparse.Namespace) -> None:
    root = args.root or os.environ.get("FAMFS_PY_DAX_ROOT")
    orphans = backing.orphans()
    if args.orphans:
        if args.json:
            print_json(
                [
                    {
                        "memory": str(o.path),
                        "size": o.size,
                        "allocated": o.allocated,
                        "owner": str(o.owner) if o.owner else None,
                    }
                    for o in orphans
                ]
            )
        else:
            for orphan in orphans:
                print(orphan.describe())
        return
    rows = [emulated.describe(d) for d in list_devices(root)]
    if args.json:
        print_json(rows)
        return
    for row in rows:
        state = f" {row['state']}" if "state" in row else ""
        holder = f" held by {row['holder']}" if row.get("holder") else ""
        facts = f"align {row.get('align', '?')}\tnuma node {row.get('numa_node', '?')}"
        missing = ""
        if row.get("memory_missing"):
            missing = (
                f"\tmemory missing: {row['memory']} is gone; remove the device with "
                f"'famfs-py dax remove {row['path']}'"
            )
        print(f"{row['chardev']}\t{row['size']}\t{row['mode']}{state}\t{facts}{holder}{missing}")
    for orphan in orphans:
        print(orphan.describe())


def _reclaim(args: argparse.Namespace) -> None:

    if args.orphans:
        reclaimed, refused, total = 0, 0, 0
        for orphan in backing.orphans():
            if not orphan.reclaimable:
                continue
            try:
                if backing.reclaim(orphan.path, unowned_ok=False):
                    reclaimed += 1
                    total += orphan.allocated
                    print(f"reclaimed {orphan.path} ({orphan.allocated / (1 << 20):.1f} MiB)")
            except PermissionError:
                refused += 1
                print(
                    f"famfs-py dax remove: cannot reclaim {orphan.path}: another user's "
                    "(run as root)",
                    file=sys.stderr,
                )
        for record in backing.stale_owner_records():
            with contextlib.suppress(OSError):
                record.unlink()
        print(f"{reclaimed} orphaned memory file(s), {total / (1 << 20):.1f} MiB reclaimed")
        if refused:
            raise FamfsError(f"remove --orphans: {refused} file(s) left (not yours)")
        return
    for name in args.memory:
        path = Path(name).absolute()
        if not backing.is_memory_file(path):
            raise FamfsError(f"remove --memory {name}: not an emulated memory file")
        try:
            removed = backing.reclaim(path, unowned_ok=True)
        except OSError as exc:
            fix = ": remove that device instead" if exc.errno == errno.EBUSY else ""
            raise FamfsError(f"remove --memory {name}: {exc.strerror}{fix}", exc.errno) from None
        print(f"reclaimed {path}" if removed else f"{path}: being set up or gone; left alone")


def _delivery_note(rc: int | None) -> str:
    if rc is None:
        return ""
    return f" (pre-remove delivered to the holder: {os.strerror(rc) if rc else 'ok'})"


def _check_create_flags(args: argparse.Namespace) -> None:
    """What `emulated.create` would refuse, said with the flags."""
    why = None
    if args.backing and args.share:
        why = "give --backing or --share, not both"
    elif args.size == 0:
        why = "give a device size (--size)"
    elif args.size is None and not args.share:
        if not args.backing:
            why = "give a device size (--size)"
        elif not os.path.exists(args.backing):
            why = f"backing file {args.backing} does not exist: give --size"
    if why:
        raise FamfsError(f"create {args.name}: {why}")


def run(args: argparse.Namespace) -> int:
    if args.action == "remove" and not (args.name or args.orphans or args.memory):
        raise UsageError("remove: give a device NAME, --orphans or --memory FILE")
    try:
        if args.action == "create":
            _check_create_flags(args)
            device = emulated.create(
                args.name,
                args.size,
                _root(args),
                backing=args.backing,
                share=args.share,
                mode=args.mode,
                align=args.align,
                coherent=args.coherent,
                warn=lambda text: print(f"famfs-py dax create: warning: {text}", file=sys.stderr),
            )
            print(device.path)
        elif args.action == "list":
            _list(args)
        elif args.action == "remove" and (args.orphans or args.memory):
            if args.name:
                raise UsageError("remove: give a device NAME, or --orphans/--memory, not both")
            _reclaim(args)
        elif args.action == "reconfigure":
            rc = emulated.reconfigure(_emulated(args), args.mode)
            print(f"{args.name}: mode {args.mode}{_delivery_note(rc)}")
        elif args.action == "remove":
            rc = emulated.remove(_emulated(args))
            print(f"{args.name}: removed{_delivery_note(rc)}")
        elif args.action == "inject-error":
            rc = emulated.inject_error(_emulated(args), args.offset, args.length, args.flags)
            verdict = "handled by the holder" if rc == 0 else os.strerror(rc)
            print(f"{args.name}: error at {args.offset:#x}+{args.length:#x} recorded; {verdict}")
            return rc
        elif args.action == "clear-errors":
            count = emulated.clear_errors(_emulated(args))
            print(f"{args.name}: {count} injected error range(s) cleared")
    except (ValueError, OSError) as exc:
        message = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise FamfsError(
            f"{args.action} {args.name if 'name' in args else ''}: {message}".strip(),
            getattr(exc, "errno", None),
        ) from None
    return 0
