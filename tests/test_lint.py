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


def test_mypy_refuses_a_misspelt_reply_field(tmp_path):
    """Replies are typed end to end: a command that reads a field the reply does not have
    fails the type check, where a dict would have failed at run time."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from famfs_py import channel, protocol\n\n\n"
        "def pid(chan: channel.Channel) -> int:\n"
        "    return chan.call(protocol.Status()).deamon_pid\n"
    )
    result = subprocess.run(
        [str(BIN / "mypy"), "--config-file", str(REPO / "pyproject.toml"), str(probe)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert '"StatusReply" has no attribute "deamon_pid"' in result.stdout, result.stdout
