"""Inside the guest: run scenarios in order and report every check.

    python -m guest.inguest.run ROLE SCENARIO...

SCENARIO is a module of guest.inguest (its SCENARIO) or MODULE:NAME (its scenario NAME).

Exit status 0 when no check failed, 1 otherwise (skipped checks do not fail the run).
"""

from __future__ import annotations

import importlib
import sys

from guest.inguest.checks import Report, State


def main(argv: list[str]) -> int:
    role, names = argv[0], argv[1:]
    report = Report(role)
    state = State(role)
    for name in names:
        module, _, attr = name.partition(":")
        scenario = getattr(importlib.import_module(f"guest.inguest.{module}"), attr or "SCENARIO")
        scenario.run(report, state)
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
