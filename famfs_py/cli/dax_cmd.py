"""`famfs-py dax`: emulated dax devices, daxctl style (create, list, reconfigure, remove,
inject-error, clear-errors)."""

from __future__ import annotations

import argparse
import errno
import os

from famfs_py.cli.common import (
    Parser,
    add_root_option,
    parse_size,
    print_json,
    resolve_device_or_fail,
)
from famfs_py.errors import FamfsError

EXIT_CODES = """
  0  success (inject-error: the holder handled the error, or nobody holds the device)
  1  the operation failed (the message says why)
  2  usage error
  inject-error exits with the kernel's delivery result when it is not 0: 6 (ENXIO, the
  device is dead) or 95 (EOPNOTSUPP, no holder; the error is still recorded), or the
  holder's own errno
"""


def _parse_flags(text: str) -> int:
    from famfs_py.dax.holder import MF_FLAG_NAMES

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

    p = sub.add_parser("create", help="create an emulated device")
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
    p.add_argument("--mode", default="famfs", choices=["famfs", "devdax", "system-ram", "disabled"])
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

    p = sub.add_parser("list", help="list devices (daxctl-style)")
    p.add_argument("--json", action="store_true", help="print a JSON array")
    add_root_option(p)

    p = sub.add_parser("reconfigure", help="change a device's mode")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--mode", required=True, choices=["famfs", "devdax", "system-ram", "disabled"])
    add_root_option(p)

    p = sub.add_parser("remove", help="remove an emulated device")
    p.add_argument("name", metavar="NAME")
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


def _root(args: argparse.Namespace):  # -> Path
    from famfs_py.dax.device import DEFAULT_EMULATION_ROOT, emulation_root

    return emulation_root(args.root) or DEFAULT_EMULATION_ROOT


def _emulated(args: argparse.Namespace):  # -> DaxDevice
    from famfs_py.dax.device import device_in_root

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
            1,
            errno.ENODEV,
        )
    return device


def _delivery_note(rc: int | None) -> str:
    if rc is None:
        return ""
    return f" (pre-remove delivered to the holder: {os.strerror(rc) if rc else 'ok'})"


def run(args: argparse.Namespace) -> int:
    from famfs_py.dax import emulated
    from famfs_py.dax.device import list_devices

    try:
        if args.action == "create":
            device = emulated.create(
                args.name,
                args.size,
                _root(args),
                backing=args.backing,
                share=args.share,
                mode=args.mode,
                align=args.align,
                coherent=args.coherent,
            )
            print(device.path)
        elif args.action == "list":
            root = args.root or os.environ.get("FAMFS_PY_DAX_ROOT")
            devices = list_devices(root)
            rows = [emulated.describe(d) for d in devices]
            if args.json:
                print_json(rows)
            else:
                for row in rows:
                    state = f" {row['state']}" if "state" in row else ""
                    holder = f" held by {row['holder']}" if row.get("holder") else ""
                    facts = f"align {row.get('align', '?')}\tnuma node {row.get('numa_node', '?')}"
                    print(f"{row['chardev']}\t{row['size']}\t{row['mode']}{state}\t{facts}{holder}")
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
            1,
            getattr(exc, "errno", None),
        ) from None
    return 0
