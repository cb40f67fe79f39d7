"""`famfs-py config`: read and change the commands' settings (upstream's `famfs config`; the
files and keys are in famfs_py.config)."""

from __future__ import annotations

import argparse

from famfs_py.cli.common import Parser
from famfs_py.errors import UsageError

EXIT_CODES = """
  0  done (--get: the key is set)
  1  --get: the key is not set in any file read; or a file could not be written
  2  usage error: an unknown key, a bad value, a broken settings file, no verb
"""


def build_parser(prog: str) -> Parser:
    parser = Parser(
        prog=prog,
        description="Show or change the settings famfs-py cp and creat take their defaults "
        "from: /etc/famfs.conf (--system), ~/.famfs/famfs.conf (--global), "
        "SHADOW/config (--local, with --shadow-path); later files override earlier ones, "
        "and options on a command line override them all. Keys: interleave.nbuckets, "
        "interleave.nstrips, interleave.chunk_size, core.verbose, core.threadct.",
        exit_codes=EXIT_CODES,
    )
    verbs = parser.add_mutually_exclusive_group(required=True)
    verbs.add_argument("-l", "--list", action="store_true", help="list every setting, by file")
    verbs.add_argument("--get", metavar="KEY", help="print a key's value (merged)")
    verbs.add_argument("--set", nargs=2, metavar=("KEY", "VALUE"), help="set KEY in one file")
    verbs.add_argument("--unset", metavar="KEY", help="remove KEY from one file")
    scopes = parser.add_mutually_exclusive_group()
    for scope in ("system", "global", "local"):
        scopes.add_argument(
            f"--{scope}", dest="scope", action="store_const", const=scope, help=f"the {scope} file"
        )
    parser.add_argument(
        "--show-origin", action="store_true", help="with --list: name each file read"
    )
    parser.add_argument(
        "--shadow-path", metavar="DIR", help="a shadow tree whose config file is the local scope"
    )
    parser.add_argument("-d", "--debug", action="store_true", help=argparse.SUPPRESS)
    return parser


def run(args: argparse.Namespace) -> int:
    from famfs_py import config

    if (args.set or args.unset) and not args.scope:
        raise UsageError("--set and --unset need --system, --global or --local")
    if args.show_origin and not args.list:
        raise UsageError("--show-origin goes with --list")
    if args.set or args.unset:
        path = config.path_of(args.scope, args.shadow_path)
        values = config.read_file(path)
        if args.set:
            key, value = args.set
            config.check(key, value)
            values[key] = value.strip()
        else:
            config.check_key(args.unset)
            if values.pop(args.unset, None) is None:
                return 0  # not set there: nothing to do, as git does
        config.write_file(path, values)
        return 0
    if args.get:
        value = config.load(args.shadow_path).get(args.get)
        if value is None:
            return 1
        print(value)
        return 0
    settings = config.load(args.shadow_path)
    files = settings.files
    if args.scope:
        files = [f for f in files if f[0] == args.scope]
    for scope, path, values in files:
        if args.show_origin:
            print(f"# {path} ({scope})")
        for key in config.KEYS:
            if key in values:
                print(f"{key}={config.check(key, values[key])}")
    return 0
