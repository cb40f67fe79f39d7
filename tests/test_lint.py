"""The code base stays ruff clean (part of the suite so CI enforces it)."""

from __future__ import annotations

import subprocess

from conftest import BIN, REPO


def test_ruff_check_is_clean():
    result = subprocess.run(
        [str(BIN / "ruff"), "check", "famfs_py", "mkfs", "tests", "bench"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
