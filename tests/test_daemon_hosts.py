"""Two simulated hosts on one memory: the master creates, the client follows on its own."""

from __future__ import annotations

import json
import os

import pytest
from helpers import wait_until


@pytest.fixture
def mounted_pair(pair, mounts, tmp_path):
    master, client = pair
    mmp = mounts.mount(master, tmp_path / "mnt-master")
    cmp = mounts.mount(client, tmp_path / "mnt-client")
    return master, client, mmp, cmp


def test_client_sees_the_masters_files_without_a_command(mounted_pair, tmp_path):
    master, client, mmp, cmp = mounted_pair
    src = tmp_path / "tree"
    for d in range(10):
        (src / f"dir{d}").mkdir(parents=True)
        for f in range(9):
            (src / f"dir{d}" / f"file{f}").write_bytes(os.urandom(1000 + 997 * (d * 9 + f)))
    master.ok("cp", "-r", src, mmp / "tree")
    expected = sorted(
        os.path.relpath(os.path.join(dp, n), src)
        for dp, dns, fns in os.walk(src)
        for n in dns + fns
    )
    assert len(expected) == 100

    def client_has_all() -> bool:
        return all(os.path.exists(cmp / "tree" / p) for p in expected)

    wait_until(client_has_all, what="the client following the master's log")
    for rel in expected:
        if (src / rel).is_file():
            assert (cmp / "tree" / rel).read_bytes() == (src / rel).read_bytes(), rel
    status = json.loads(client.ok("status", "--json", cmp).stdout)
    assert status["role"] == "client" and status["files"] == 90 and status["directories"] == 11


def test_data_written_on_the_master_is_read_byte_exact_on_the_client(mounted_pair):
    master, client, mmp, cmp = mounted_pair
    master.ok("creat", "-s", "3m", mmp / "shared")
    wait_until(lambda: (cmp / "shared").exists())
    first = os.urandom(3 << 20)
    (mmp / "shared").open("r+b").write(first)
    assert (cmp / "shared").read_bytes() == first
    # a second write is seen at the next open (close-to-open, cache=auto)
    second = os.urandom(3 << 20)
    with open(mmp / "shared", "r+b") as f:
        f.write(second)
    assert (cmp / "shared").read_bytes() == second


def test_client_data_is_read_only_unless_mounted_rw(mounted_pair, host_factory, mounts, tmp_path):
    master, client, mmp, cmp = mounted_pair
    master.ok("creat", "-s", "4096", mmp / "f")
    wait_until(lambda: (cmp / "f").exists())
    with pytest.raises(OSError) as info:
        open(cmp / "f", "r+b")
    assert info.value.errno == 30  # EROFS
    other = host_factory("other", "11111111-2222-4333-8444-555555555555")
    other.ok("dax", "create", "dax0.0", "--share", master.node())
    omp = mounts.mount(other, tmp_path / "mnt-other", "--rw")
    with open(omp / "f", "r+b") as f:
        f.write(b"from a client")
    assert (mmp / "f").read_bytes()[:13] == b"from a client"


def test_logplay_replays_now_and_prints_upstreams_summary(mounted_pair):
    master, client, mmp, cmp = mounted_pair
    master.ok("mkdir", mmp / "d")
    master.ok("creat", "-s", "1m", mmp / "d" / "f")
    out = client.ok("logplay", cmp).stdout
    assert out.startswith("famfs_logplay: 2 log entries;")
    assert (cmp / "d" / "f").exists()


def test_cache_never_sees_the_other_hosts_writes_without_reopening(pair, mounts, tmp_path):
    master, client = pair
    mmp = mounts.mount(master, tmp_path / "mnt-master")
    cmp = mounts.mount(client, tmp_path / "mnt-client", "-c", "never")
    master.ok("creat", "-s", "8k", mmp / "f")
    wait_until(lambda: (cmp / "f").exists())
    with open(cmp / "f", "rb", buffering=0) as reader:
        assert reader.read(5) == bytes(5)
        with open(mmp / "f", "r+b", buffering=0) as writer:
            writer.write(b"fresh")
        reader.seek(0)
        assert reader.read(5) == b"fresh"  # direct I/O: no stale page cache
