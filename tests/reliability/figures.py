"""The campaign's figures (cases run, kills survived, creates under load, divergences):
counted by the tests, printed at the end of the pytest run, and merged into the JSON file
named by FAMFS_PY_RELIABILITY_FIGURES when it is set (docs/reliability-figures.json holds
the figures of the runs the report quotes)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

FIGURES_ENV = "FAMFS_PY_RELIABILITY_FIGURES"
FIGURES: dict[str, float] = {}


def add(name: str, amount: float = 1) -> None:
    FIGURES[name] = FIGURES.get(name, 0) + amount


def most(name: str, value: float) -> None:
    """Keep the largest value seen (a worst case, e.g. the slowest convergence)."""
    FIGURES[name] = max(FIGURES.get(name, value), value)


def summary_lines() -> list[str]:
    return [f"{name}: {value:g}" for name, value in sorted(FIGURES.items())]


def write(run: str) -> Path | None:
    """Merge this run's figures into the JSON file (if one is named); returns its path."""
    target = os.environ.get(FIGURES_ENV)
    if not target or not FIGURES:
        return None
    path = Path(target)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    data.setdefault("runs", {})[run] = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        **{k: round(v, 3) for k, v in sorted(FIGURES.items())},
    }
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path
