"""Inside the guest: run scenarios in order and report every check.

    python -m guest.inguest.run ROLE SCENARIO...

SCENARIO is a module of guest.inguest (its SCENARIO) or MODULE:NAME (its scenario NAME).

Exit status 0 when no check failed, 1 otherwise (skipped checks do not fail the run).
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

from guest.inguest.checks import XFER, Report, State


def main(argv: list[str]) -> int:
    role, names = argv[0], argv[1:]
    report = Report(role)
    state = State(role)
    try:
        for name in names:
            module, _, attr = name.partition(":")
            scenario = getattr(
                importlib.import_module(f"guest.inguest.{module}"), attr or "SCENARIO"
            )
            scenario.run(report, state)
    finally:
        if Path("/run/systemd/system").is_dir():  # systemd is PID 1: keep its journal
            with open(XFER / f"{role}.journal", "w") as out:
                subprocess.run(["journalctl", "--no-pager", "-o", "short-monotonic"], stdout=out)
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
