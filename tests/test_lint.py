"""The code base stays ruff and mypy clean (part of the suite so CI enforces `make lint`), and
no module of the library grows past 600 lines."""

from __future__ import annotations

import subprocess

from helpers import BIN, REPO


def test_ruff_check_is_clean():
    paths = [p for p in ("famfs_py", "mkfs", "tests", "bench") if (REPO / p).is_dir()]
    result = subprocess.run(
        [str(BIN / "ruff"), "check", *paths],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_clean():
    paths = [p for p in ("famfs_py", "mkfs", "tests", "bench") if (REPO / p).is_dir()]
    result = subprocess.run(
        [str(BIN / "ruff"), "format", "--check", *paths], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_is_clean():
    result = subprocess.run([str(BIN / "mypy")], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_library_module_is_over_600_lines():
    long = {
        str(p.relative_to(REPO)): n
        for p in (REPO / "famfs_py").rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 600
    }
    assert not long, long
