"""A filesystem of 4 KiB allocation units (mkfs --4k) on a real /dev/dax0.0: fsck reports
alloc_unit 0x1000, a 5,000-byte file costs 8 KiB (upstream's test_4k.sh), small files
copied with cp -r read back byte-exact through FUSE, open_mapped shows exactly a small
file's bytes from a mapping of the 2 MiB-aligned device range around it, and the whole
filesystem survives a remount. Runs last in its boot: it makes a new filesystem.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

from guest.inguest.checks import (
    DEVICE,
    Scenario,
    State,
    cli,
    is_mounted,
    sh,
    sha256,
)

SCENARIO = Scenario("small_units")
check = SCENARIO.check
TREE = {f"d{i % 3}/f{i:03d}": 1 + (i * 797) % 9000 for i in range(60)}


def _allocated(target: Path | str) -> int:
    out = cli("fsck", target).stdout
    return int(next(ln.split()[2] for ln in out.splitlines() if "Allocated bytes:" in ln))


@check("mkfs_4k")
def mkfs_4k(state: State) -> str:
    if is_mounted(state.mountpoint):
        cli("umount", state.mountpoint)
    cli("-f", "--4k", "--devdax", DEVICE, prog="mkfs.famfs-py")
    found = re.search(r"alloc_unit: *(0x[0-9a-f]+)", cli("fsck", "--devdax", DEVICE).stdout)
    assert found and found.group(1) == "0x1000", found
    state.mountpoint.mkdir(parents=True, exist_ok=True)
    cli("mount", "--devdax", DEVICE, state.mountpoint)
    return "alloc_unit: 0x1000, mounted"


@check("a_5000_byte_file_costs_8_kib", needs="mkfs_4k")
def small_file_cost(state: State) -> str:
    mp = state.mountpoint
    base = _allocated(mp)
    cli("creat", "-r", "-S", "1", "-s", "5000", mp / "small0")
    cli("verify", "-S", "1", "-f", mp / "small0")
    delta = _allocated(mp) - base
    assert delta == 8192, delta
    return f"{delta} bytes"


@check("cp_small_tree", needs="mkfs_4k")
def cp_small_tree(state: State) -> str:
    src = Path("/tmp/small-src")
    data = {}
    for name, size in TREE.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        data[name] = os.urandom(size)
        (src / name).write_bytes(data[name])
    cli("cp", "-r", src, state.mountpoint / "tree")
    bad = [n for n, d in data.items() if (state.mountpoint / "tree" / n).read_bytes() != d]
    assert not bad, bad
    state.expected = {f"tree/{n}": sha256(state.mountpoint / "tree" / n) for n in data}
    return f"{len(data)} files byte-exact through FUSE"


@check("open_mapped_small_file", needs="cp_small_tree")
def open_mapped_small_file(state: State) -> str:
    name = "tree/d1/f001"
    code = (
        "import famfs_py, hashlib, sys\n"
        "with famfs_py.open_mapped(sys.argv[1]) as m:\n"
        "    print(len(m), hashlib.sha256(m[:]).hexdigest())\n"
    )
    run = sh(f"{sys.executable} -c '{code}' {state.mountpoint / name}")
    size, digest = run.stdout.split()
    assert int(size) == TREE[name[5:]] and digest == state.expected[name], run.out
    fmap = json.loads(cli("getmap", "--json", state.mountpoint / name).stdout)
    return f"{size} bytes, as through FUSE; map {fmap}"


@check("remount_keeps_every_byte", needs="cp_small_tree")
def remount(state: State) -> str:
    cli("umount", state.mountpoint)
    assert cli("fsck", "--devdax", DEVICE, ok=False).returncode == 0
    cli("mount", "--devdax", DEVICE, state.mountpoint)
    bad = [n for n, d in state.expected.items() if sha256(state.mountpoint / n) != d]
    assert not bad, bad
    return f"{len(state.expected)} files byte-exact after a remount"
