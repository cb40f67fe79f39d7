"""Two hosts, one memory: two guests booted at once on the same backing file, a master and a
--rw client (guest/inguest/two_hosts.py); then this host opens the memory as an emulated
device and finds the same tree and bytes."""

from __future__ import annotations

import json
import shutil

import pytest
from helpers import Host, assert_no_traceback, fingerprint

from guest import runs
from guest.conftest import expect_check, expect_clean_boot
from guest.inguest import two_hosts

pytestmark = pytest.mark.guest

XFAIL: dict[str, str] = {}
HOST_UUID = "c0c0c0c0-1111-4222-8333-000000000c0c"  # a third host: a client of the guests' fs


BOOTS = ["two-hosts"]


@pytest.fixture(scope="module")
def pair(guest_boots) -> runs.PairResult:
    return guest_boots.get("two-hosts")


@pytest.mark.parametrize("role", ["A", "B"])
def test_boot_is_clean(pair, role):
    expect_clean_boot(pair.master if role == "A" else pair.client)


@pytest.mark.parametrize("name", two_hosts.MASTER.names())
def test_master(pair, name):
    expect_check(pair.master, name, XFAIL.get(name))


@pytest.mark.parametrize("name", two_hosts.CLIENT.names())
def test_client(pair, name):
    expect_check(pair.client, name, XFAIL.get(name))


def test_host_sees_the_same_tree_and_bytes(pair, tmp_path):
    manifest_file = pair.xfer / "A.manifest.json"
    if not manifest_file.exists() or pair.image is None:
        pytest.skip(f"the master left no manifest (guest A exit {pair.master.status})")
    image = pair.image
    expected = json.loads(manifest_file.read_text())
    host = Host(tmp_path / "host", HOST_UUID)
    before = fingerprint(image)
    host.ok("dax", "create", "dax0.0", "--backing", image)
    try:
        fsck = host.cli("fsck", "dax0.0")
        assert fsck.returncode == 0, fsck.out
        mountpoint = tmp_path / "mnt"
        mountpoint.mkdir()
        log_env = {"FAMFS_PY_LOG_DIR": str(tmp_path / "logs")}
        host.ok("mount", "dax0.0", mountpoint, env=log_env)
        try:
            found = two_hosts.manifest(mountpoint)
            status = json.loads(host.ok("status", "--json", mountpoint).stdout)
        finally:
            result = host.cli("umount", mountpoint)
            assert_no_traceback(result)
    finally:
        host.cli("dax", "remove", "dax0.0")
        shutil.rmtree(host.root, ignore_errors=True)
    assert status["role"] == "client", status
    assert found == expected
    assert fingerprint(image) == before, "opening the memory as a client changed it"
