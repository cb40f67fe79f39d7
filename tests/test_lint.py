"""The code base stays ruff clean (part of the suite so CI enforces it)."""

from __future__ import annotations

import subprocess

from conftest import BIN, REPO


def test_ruff_check_is_clean():
    paths = [p for p in ("famfs_py", "mkfs", "tests", "bench") if (REPO / p).is_dir()]
    result = subprocess.run(
        [str(BIN / "ruff"), "check", *paths],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
