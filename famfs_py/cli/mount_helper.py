"""`mount.fuse.famfs-py`: what mount(8) runs for `mount -t fuse.famfs-py` and fstab lines.

mount(8) (libmount) first looks for /sbin/mount.fuse.famfs-py and runs it as
`mount.fuse.famfs-py SOURCE MOUNTPOINT [-sfnv] [-N NS] -o OPTIONS`. Without it, it runs
mount.fuse3, which runs the program named by the subtype through /bin/sh on mount's PATH:
`famfs-py SOURCE MOUNTPOINT -o OPTIONS,dev,suid`; `famfs-py` recognises that call
(`called_by_mount_fuse`) and comes here too. Either way the mount is `famfs-py mount`.
mount(8) resolves symlinks in SOURCE, so an emulated device node arrives as its memory file;
`emulated_node_for` finds the node again.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from famfs_py.cli import mount_cmd
from famfs_py.cli.common import Parser
from famfs_py.cli.run import run_command
from famfs_py.daemon import options as mount_options
from famfs_py.dax import backing
from famfs_py.dax.device import DEFAULT_EMULATION_ROOT, NAME_RE, ROOT_ENV
from famfs_py.errors import UsageError

PROG = "mount.fuse.famfs-py"
FSTYPE = "fuse.famfs-py"
EXIT_CODES = """
  0  mounted (the mount answers); with -f: the options are valid, nothing was mounted
  1  the mount failed; nothing is left mounted and the device is not claimed
  2  usage error (unknown option, bad -o option)
"""


def build_parser(prog: str) -> Parser:
    parser = Parser(
        prog=prog,
        description="Mount a famfs the way mount(8) asks: SOURCE is the dax device "
        "(/dev/daxX.Y, daxX.Y, or an emulated device node). Options are `famfs-py mount -o` "
        "options; `rw`, which mount(8) always passes, is not writable client data: ask for "
        "that with client_rw.",
        exit_codes=EXIT_CODES,
    )
    parser.add_argument("-o", dest="options", action="append", default=[], metavar="OPTIONS")
    parser.add_argument("-s", dest="sloppy", action="store_true", help="ignore unknown options")
    parser.add_argument("-f", dest="fake", action="store_true", help="check only, do not mount")
    parser.add_argument("-n", dest="no_mtab", action="store_true", help="accepted (no mtab)")
    parser.add_argument("-v", dest="verbose", action="store_true", help="more logging")
    parser.add_argument("-N", dest="namespace", help="not supported")
    parser.add_argument("-t", dest="type", help=f"accepted if {FSTYPE}")
    parser.add_argument("source", metavar="SOURCE")
    parser.add_argument("mountpoint", metavar="MOUNTPOINT")
    parser.set_defaults(prog=prog)  # what this helper is called in its messages
    return parser


def called_by_mount_fuse(argv: Sequence[str]) -> bool:
    """True for mount.fuse3's call `SOURCE MOUNTPOINT -o OPTIONS`: it always ends OPTIONS
    with its own dev or nodev and suid or nosuid."""
    if len(argv) != 4 or argv[2] != "-o" or argv[0].startswith("-"):
        return False
    options = set(argv[3].split(","))
    return bool(options & {"dev", "nodev"}) and bool(options & {"suid", "nosuid"})


def emulated_node_for(source: str, root_option: str | None) -> str | None:
    """The emulated device node whose memory file `source` is: the one its owner record
    names, else the one found in the emulation root of -o root=, else $FAMFS_PY_DAX_ROOT,
    else the default root (each node links to a memory-file name of its own, so at most one
    node matches)."""
    if NAME_RE.match(os.path.basename(source)) or not os.path.isfile(source):
        return None
    if backing.in_use(Path(source)):
        return str(backing.recorded_owner(Path(source)))
    roots = [r for r in (root_option, os.environ.get(ROOT_ENV)) if r]
    for root in [*map(Path, roots), DEFAULT_EMULATION_ROOT]:
        dev_dir = root / "dev"
        if not dev_dir.is_dir():
            continue
        for node in sorted(dev_dir.iterdir()):
            if NAME_RE.match(node.name) and os.path.realpath(node) == os.path.realpath(source):
                return str(node)
    return None


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    return run_command(prog, "mount_helper", list(sys.argv[1:] if argv is None else argv))


def run(args: argparse.Namespace) -> int:
    prog: str = args.prog
    if args.namespace:
        raise UsageError("-N (another mount namespace) is not supported")
    if args.type and args.type not in (FSTYPE, "famfs-py"):
        raise UsageError(f"-t {args.type}: this helper mounts {FSTYPE} only")
    options = []
    for group in args.options:
        for item in filter(None, (i.strip() for i in group.split(","))):
            if item == "rw":
                continue  # mount(8)'s default, not a request for writable client data
            if args.sloppy and not mount_options.is_known(item):
                print(f"{prog}: ignoring unknown mount option {item} (-s)", file=sys.stderr)
                continue
            options.append(item)
    root_option = next((o.partition("=")[2] for o in options if o.startswith("root=")), None)
    source = emulated_node_for(args.source, root_option) or args.source
    mount_argv = ["-o", ",".join(options)] if options else []
    if args.verbose:
        mount_argv.append("-v")
    mount_argv += [source, args.mountpoint]
    if args.fake:
        parser = mount_cmd.build_parser("famfs-py mount")
        mount_cmd.parse_options(parser.parse_args(mount_argv), parser)
        return 0
    return run_command("famfs-py mount", "mount_cmd", mount_argv)


if __name__ == "__main__":
    sys.exit(main())
