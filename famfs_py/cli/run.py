"""Running one command: parse its arguments, run it, and map what it raised to the process
exit, in this one place (famfs_py.errors: each kind carries its exit code). Every entry point
(`famfs-py`, `mkfs.famfs-py`, `mount.fuse.famfs-py`) runs its command through `run_command`.
"""

from __future__ import annotations

import importlib
import os
import sys

from famfs_py.errors import FamfsError

TYPE_CHECKING = False  # not typing's: every command imports this module (mypy reads it as true)
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

PROG = "famfs-py"
EXIT_INTERRUPTED = 130
EXIT_INTERNAL = 70  # a bug, not a user error (EX_SOFTWARE)


def configure_logging(debug: bool = False) -> None:
    """One-line log messages on stderr. Imports logging only when asked to debug: commands
    must start fast (without configuration, warnings still reach stderr)."""
    if not (debug or os.environ.get("FAMFS_PY_DEBUG")):
        return
    import logging

    logging.basicConfig(level=logging.DEBUG, format=f"{PROG}: %(levelname)s: %(message)s")


def run_command(prog: str, module_name: str, argv: Sequence[str]) -> int:
    module = importlib.import_module(f"famfs_py.cli.{module_name}")
    parser = module.build_parser(prog)
    args = parser.parse_args(list(argv))
    debug = bool(getattr(args, "debug", False))
    configure_logging(debug)
    return _guarded(prog, lambda: module.run(args), debug)


def run_plain(prog: str, module_name: str, argv: Sequence[str]) -> int | None:
    """Run a command's plain form (famfs_py.cli.creat_plain): its module's `parse(argv)`
    returns what to run, or None when the command line is not the plain form, and then this
    returns None (run_command runs the command in full)."""
    module = importlib.import_module(f"famfs_py.cli.{module_name}")
    plain = module.parse(argv)
    if plain is None:
        return None
    configure_logging()
    return _guarded(prog, lambda: module.run(plain), False)


def _guarded(prog: str, run: Callable[[], int | None], debug: bool) -> int:
    """Run a command and map what it raised to the process exit."""
    try:
        return int(run() or 0)
    except FamfsError as exc:
        print(f"{prog}: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 1
    except Exception as exc:  # a bug, not a user error: still one line unless debugging
        if debug or os.environ.get("FAMFS_PY_DEBUG"):
            raise
        print(
            f"{prog}: internal error: {type(exc).__name__}: {exc} "
            "(rerun with FAMFS_PY_DEBUG=1 for details, and please report it)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL
