"""Batched creation (`creat_many`, what `cp -r` sends) through the real daemon, beyond
tests/test_creat_many.py: a crash at each step of the batch's last entry and its one commit
leaves none of the batch or all of it, and a client mounted all along agrees; a tree of small
files copied by `cp -r` reads back exactly on a client."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import CLIENT_UUID, wait_gone
from plugins.famfs_switches import CRASH_ENV

from famfs_py import omf

NOBODY = 65534


def _entries(host) -> int:
    report = json.loads(host.ok("fsck", "--json", "dax0.0").stdout)
    assert report["problems"] == 0 and report["collisions"] == 0, report
    return report["entries"]


def _log_header(host) -> omf.LogHeader:
    with open(host.memory(), "rb") as f:
        f.seek(omf.LOG_OFFSET)
        return omf.LogHeader.unpack(f.read(omf.LOG_HEADER_SIZE))


def _daemon_pid(host, mp: Path) -> int:
    return int(json.loads(host.ok("status", "--json", mp).stdout)["daemon_pid"])


@pytest.mark.parametrize(
    ("step", "committed"),
    [("mid-entry", False), ("after-entry", False), ("mid-header", False), ("after-header", True)],
)
def test_a_crash_in_a_batch_leaves_none_of_it_or_all_of_it(
    pair, mounts, monkeypatch, tmp_path, step, committed
):
    """cp -r: its mkdir is the first entry, its batch of 20 files the next 20, committed
    once; the master dies at `step` of the last file's entry or of the batch's commit. The
    client, mounted all along, agrees."""
    host, client = pair
    cmp = mounts.mount(client, tmp_path / "mnt-client")
    monkeypatch.setenv(CRASH_ENV, f"{step}:21")
    mp = mounts.mount(host)
    monkeypatch.delenv(CRASH_ENV)
    pid = _daemon_pid(host, mp)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(20):
        (src / f"f{i:02d}").write_bytes(os.urandom(1000 + i))
    killed = host.cli("cp", "-r", src, mp / "dst")
    assert killed.returncode != 0, killed.out
    wait_gone(pid)
    header = _log_header(host)
    assert header.next_index == (21 if committed else 1), header
    client.ok("logplay", cmp)
    assert (cmp / "dst").is_dir()
    assert sorted(os.listdir(cmp / "dst")) == (sorted(os.listdir(src)) if committed else [])
    host.ok("umount", mp)
    assert _entries(host) == (21 if committed else 1)
    mounts.mount(host, mp)
    assert sorted(os.listdir(mp / "dst")) == (sorted(os.listdir(src)) if committed else [])
    host.ok("cp", "-r", src, mp / "dst")  # the copy again: complete, nothing in the way
    for name in os.listdir(src):
        assert (mp / "dst" / name).stat().st_size == (src / name).stat().st_size


def test_cp_of_a_tree_of_small_files_reads_back_exactly_on_a_client(host_factory, mounts, tmp_path):
    master = host_factory("master")
    master.ok("dax", "create", "dax0.0", "--size", "4g")
    master.ok("mkfs", "--4k", "dax0.0")
    client = host_factory("client", CLIENT_UUID)
    client.ok("dax", "create", "dax0.0", "--share", master.node())
    cmp = mounts.mount(client, tmp_path / "mnt-client")
    mp = mounts.mount(master)
    src = tmp_path / "tree"
    contents = {}
    for i in range(600):
        name = f"d{i % 4}/" + (f"e{i % 3}/" if i % 5 == 0 else "") + f"f{i:04d}"
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        contents[name] = os.urandom(1 + (i * 97) % 12000)
        (src / name).write_bytes(contents[name])
    master.ok("cp", "-r", src, mp / "t")
    client.ok("logplay", cmp)
    for name, data in contents.items():
        assert (cmp / "t" / name).read_bytes() == data, name


def test_creat_multi_sends_its_files_in_batches_and_answers_each_in_order(fresh, mounts, tmp_path):
    """creat -M: more files than one CreatMany holds, an error amid them, an entry without
    a size that adopts a file made earlier in the same command, one outside the mount."""
    host = fresh
    mp = mounts.mount(host)
    host.ok("creat", "-s", "4k", mp / "exists")
    count = 1100  # over protocol.CreatMany.MAX_FILES (1024): two requests
    args = [a for i in range(count) for a in ("-M", f"{mp}/m{i:04d},4096")]
    args[1000:1000] = ["-M", f"{mp}/exists,8k", "-M", f"{mp}/m0003,0", "-M", f"{tmp_path}/out,4k"]
    before = _log_header(host).next_index
    result = host.cli("creat", "-v", *args)
    assert result.returncode == 2, result.out
    assert f"Create complete for {count + 1} of {count + 3} files with 2 errs" in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("famfs-py creat: ")]
    assert [e.split(": ")[1] for e in errors] == [f"{mp}/exists", f"{tmp_path}/out"], errors
    assert "exists with size 4096, not 8192" in errors[0]
    assert f"{mp}/m0003: exists, 4096 bytes" in result.stdout
    assert len(os.listdir(mp)) == count + 2  # .meta and exists too
    assert _log_header(host).next_index == before + count
