"""`make demo`'s script runs the main job, and runs again over whatever an earlier run left:
its mounts still up, or its devices' memory gone (as after a reboot cleared it)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from helpers import BIN, REPO
from helpers import is_mounted as _is_mounted

DEMO = REPO / "scripts" / "demo.sh"


def _demo(demo_dir: Path) -> str:
    env = {**os.environ, "FAMFS_PY_DEMO_DIR": str(demo_dir), "FAMFS_PY_BIN": str(BIN)}
    for key in ("FAMFS_PY_DAX_ROOT", "FAMFS_PY_SYSTEM_UUID"):
        env.pop(key, None)  # the demo chooses its hosts itself
    proc = subprocess.run(
        ["bash", DEMO], env=env, capture_output=True, text=True, timeout=300, cwd=REPO
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "demo: done" in proc.stdout
    return proc.stdout


def test_the_demo_runs_and_recovers_from_what_an_earlier_run_left(tmp_path):
    demo_dir = tmp_path / "demo"
    mounts = [demo_dir / "mnt-master", demo_dir / "mnt-client"]
    try:
        _demo(demo_dir)
        assert all(_is_mounted(mp) for mp in mounts)
        _demo(demo_dir)  # over its own mounts
        for mp in reversed(mounts):
            subprocess.run([BIN / "famfs-py", "umount", mp], check=True, capture_output=True)
        for host in ("master-host", "client-host"):
            Path(os.path.realpath(demo_dir / host / "dev" / "dax0.0")).unlink()
        out = _demo(demo_dir)  # over devices whose memory is gone
        assert "already exists" not in out
        assert (demo_dir / "mnt-client" / "data" / "README.md").read_bytes() == (
            REPO / "README.md"
        ).read_bytes()
        copied = demo_dir / "mnt-client" / "data" / "docs" / "architecture.md"  # by plain cp -r
        assert copied.read_bytes() == (REPO / "docs" / "architecture.md").read_bytes()
    finally:
        for mp in reversed(mounts):
            if _is_mounted(mp):
                subprocess.run([BIN / "famfs-py", "umount", mp], capture_output=True)
