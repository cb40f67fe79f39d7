"""Entry point of `mkfs.famfs-py`, the same command as `famfs-py mkfs`."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from famfs_py.cli.run import run_command


def main(argv: Sequence[str] | None = None) -> int:
    return run_command("mkfs.famfs-py", "mkfs_cmd", sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
