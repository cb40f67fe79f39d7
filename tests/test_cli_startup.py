"""What a command imports before it runs (issue 25: one `famfs-py creat` within 2x Python's
own start). Guarded by the modules imported, not by time: the machine is shared and noisy."""

from __future__ import annotations

import subprocess

from helpers import BIN

# each costs a command's start more than a millisecond (python -X importtime)
HEAVY = {"typing", "collections", "re", "enum", "dataclasses", "argparse", "json", "pathlib"}

# the modules `famfs-py --help` loads beyond what Python itself started with
PROBE = """
import sys
start = set(sys.modules)
from famfs_py.cli.main import main
main(["--help"])
sys.stderr.write(" ".join(sorted(set(sys.modules) - start)))
"""


def test_dispatch_imports_nothing_heavy():
    """The dispatch every command goes through (`famfs-py --help`) loads none of the heavy
    standard modules: each command imports only what it needs."""
    result = subprocess.run(
        [str(BIN / "python"), "-c", PROBE], capture_output=True, text=True, check=True
    )
    loaded = set(result.stderr.split())
    assert "famfs_py.cli.main" in loaded, result.stderr
    assert not loaded & HEAVY, sorted(loaded & HEAVY)
