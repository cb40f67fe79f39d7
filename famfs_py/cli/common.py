"""Shared pieces of the command line: parser construction, argument types, device lookup."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from famfs_py.cli import values
from famfs_py.errors import FamfsError, UsageError


class Parser(argparse.ArgumentParser):
    """argparse with `-h/--help/-?` (`help_flags`: where upstream gives -h another meaning),
    exit codes in the epilog, and usage errors exiting 2."""

    def __init__(
        self,
        *args: Any,
        exit_codes: str | None = None,
        help_flags: tuple[str, ...] = ("-h", "--help", "-?"),
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("add_help", False)
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        if exit_codes:
            epilog = kwargs.get("epilog")
            codes = "exit codes:\n" + exit_codes.strip("\n")
            kwargs["epilog"] = f"{epilog}\n\n{codes}" if epilog else codes
        super().__init__(*args, **kwargs)
        self.add_argument(*help_flags, action="help", help="show this help and exit")


def _argument_type(parse: Callable[[str], int]) -> Callable[[str], int]:
    """`parse` (famfs_py.cli.values) as an argparse type: its message, as it says it."""

    def typed(text: str) -> int:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    typed.__name__ = parse.__name__
    return typed


parse_size = _argument_type(values.size)
parse_mode = _argument_type(values.mode)
parse_id = _argument_type(values.numeric_id)


def add_mode_selectors(parser: argparse.ArgumentParser, nofuse_short: bool = True) -> None:
    """Upstream's kernel-mode selectors: famfs-py is always a FUSE filesystem, so --fuse
    asks for what it does anyway and --nofuse (famfs v1, the kernel module) is refused."""
    parser.add_argument(
        "--fuse", action="store_true", help="accepted: famfs-py is a FUSE filesystem (upstream)"
    )
    names = ["-F", "--nofuse"] if nofuse_short else ["--nofuse"]
    parser.add_argument(
        *names, dest="nofuse", action="store_true", help="refused: no famfs v1 kernel mode"
    )


def check_mode_selectors(args: argparse.Namespace) -> None:
    if getattr(args, "nofuse", False):
        raise UsageError(
            "--nofuse selects upstream's famfs v1 kernel module, which famfs-py does not use: "
            "famfs-py is a FUSE filesystem only (drop --nofuse)"
        )


def print_json(data: object) -> None:
    import json

    json.dump(data, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


def resolve_device_or_fail(
    spec: str, root: str | None = None, kind: type[FamfsError] = FamfsError
) -> Any:
    """The DaxDevice `spec` names, or an error of `kind` that says where it was looked for."""
    from famfs_py.dax.device import resolve_device

    try:
        return resolve_device(spec, root)
    except OSError as exc:
        raise kind(
            f"{exc.strerror} (give daxX.Y, /dev/daxX.Y, or an emulated node; "
            "emulated devices: set --root or FAMFS_PY_DAX_ROOT)",
            exc.errno,
        ) from None


def add_root_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--root",
        metavar="DIR",
        help="emulation root of emulated devices (default: $FAMFS_PY_DAX_ROOT, else real "
        "devices under /sys, then /run/famfs-py/emul)",
    )


def add_system_uuid_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--system-uuid",
        metavar="UUID",
        help="act as the host with this system UUID (default: $FAMFS_PY_SYSTEM_UUID, else "
        "/opt/famfs/system_uuid)",
    )


def this_host_uuid(args: argparse.Namespace) -> Any:
    from famfs_py.fs.identity import system_uuid

    try:
        return system_uuid(getattr(args, "system_uuid", None))
    except (ValueError, OSError) as exc:
        raise UsageError(f"cannot tell this host's system UUID: {exc}") from None


def add_interleave_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-N", "--nstrips", type=int, help="interleave: strips per file")
    parser.add_argument("-B", "--nbuckets", type=int, help="interleave: buckets of the device")
    parser.add_argument(
        "-C", "--chunksize", type=parse_size, help="interleave: chunk size (default 2m)"
    )
    parser.add_argument(
        "--shadow-path",
        metavar="DIR",
        help="also read DIR/config for defaults (see famfs-py config)",
    )


def apply_config(args: argparse.Namespace) -> None:
    """Defaults from the settings files (famfs_py.config) where the command line gave none:
    -N/-B/-C (only when both strips and buckets are known), -v, -t."""
    from famfs_py import config

    settings = config.load(args.shadow_path)
    if settings.values:
        given = (args.nstrips, args.nbuckets, args.chunksize) != (None, None, None)
        nstrips = args.nstrips if args.nstrips is not None else settings.get("interleave.nstrips")
        nbuckets = (
            args.nbuckets if args.nbuckets is not None else settings.get("interleave.nbuckets")
        )
        if given or (nstrips and nbuckets):  # the settings alone interleave only when whole
            args.nstrips, args.nbuckets = nstrips, nbuckets
            if args.chunksize is None:
                args.chunksize = settings.get("interleave.chunk_size")
        if not args.verbose:
            args.verbose = settings.get("core.verbose") or 0
    if args.threadct is None:
        args.threadct = settings.get("core.threadct")


def interleave_fields(args: argparse.Namespace) -> dict[str, int]:
    """Request fields for -N/-B/-C (any of them turns interleaving on)."""
    if args.nstrips is None and args.nbuckets is None and args.chunksize is None:
        return {}
    if not args.nstrips or not args.nbuckets:
        raise UsageError("interleaving needs both -N NSTRIPS and -B NBUCKETS")
    return {
        "nstrips": args.nstrips,
        "nbuckets": args.nbuckets,
        "chunk_size": args.chunksize or (2 << 20),
    }
