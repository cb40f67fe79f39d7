"""Running one command: parse its arguments, run it, and map what it raised to the process
exit, in this one place (famfs_py.errors: each kind carries its exit code). Every entry point
(`famfs-py`, `mkfs.famfs-py`, `mount.fuse.famfs-py`) runs its command through `run_command`.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence

from famfs_py.errors import FamfsError

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
    configure_logging(getattr(args, "debug", False))
    try:
        return int(module.run(args) or 0)
    except FamfsError as exc:
        print(f"{prog}: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 1
    except Exception as exc:  # a bug, not a user error: still one line unless debugging
        if getattr(args, "debug", False) or os.environ.get("FAMFS_PY_DEBUG"):
            raise
        print(
            f"{prog}: internal error: {type(exc).__name__}: {exc} "
            "(rerun with FAMFS_PY_DEBUG=1 for details, and please report it)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL
