"""`famfs-py dax`: emulated devices with the real sysfs shape, shared between hosts."""

from __future__ import annotations

import json
import os

from helpers import CLIENT_UUID, GiB, assert_no_traceback, memory_dir

from famfs_py.dax.device import device_in_root


def test_create_makes_the_real_sysfs_layout(host):
    out = host.ok("dax", "create", "dax0.0", "--size", "4g").stdout.strip()
    assert out == str(host.node())
    devdir = host.root / "sys" / "bus" / "dax" / "devices" / "dax0.0"
    assert (devdir / "size").read_text() == f"{4 * GiB}\n"
    assert (devdir / "align").read_text() == "2097152\n"
    assert (devdir / "resource").read_text().startswith("0x")
    assert (devdir / "modalias").read_text() == "dax:t0\n"
    assert (devdir / "dev").read_text().strip().count(":") == 1
    start = int((devdir / "mapping0" / "start").read_text(), 16)
    end = int((devdir / "mapping0" / "end").read_text(), 16)
    assert end - start + 1 == 4 * GiB
    assert os.readlink(devdir / "driver").endswith("drivers/fsdev_dax")
    memory = host.memory()
    assert memory.parent == memory_dir() and memory.stat().st_size == 4 * GiB


def test_list_json_is_daxctl_style(host):
    host.ok("dax", "create", "dax0.0", "--size", "4g")
    host.ok("dax", "create", "dax1.0", "--size", "2g", "--mode", "devdax")
    rows = json.loads(host.ok("dax", "list", "--json").stdout)
    assert [r["chardev"] for r in rows] == ["dax0.0", "dax1.0"]
    assert rows[0]["mode"] == "famfs" and rows[0]["size"] == 4 * GiB
    assert rows[1]["mode"] == "devdax" and rows[1]["align"] == 2 << 20
    host.ok("dax", "reconfigure", "dax1.0", "--mode", "disabled")
    rows = json.loads(host.ok("dax", "list", "--json").stdout)
    assert rows[1]["state"] == "disabled"


def test_reconfigure_follows_the_kernels_rules(host):
    host.ok("dax", "create", "dax0.0", "--size", "1g")
    result = host.cli("dax", "reconfigure", "dax0.0", "--mode", "system-ram")
    assert result.returncode == 1 and "devdax mode first" in result.stderr
    host.ok("dax", "reconfigure", "dax0.0", "--mode", "devdax")
    host.ok("dax", "reconfigure", "dax0.0", "--mode", "system-ram")
    assert device_in_root("dax0.0", host.root).mode == "system-ram"


def test_two_hosts_share_one_memory(host_factory):
    one = host_factory("one")
    two = host_factory("two", CLIENT_UUID)
    one.ok("dax", "create", "dax0.0", "--size", "1g")
    two.ok("dax", "create", "dax0.0", "--share", str(one.node()))
    assert os.path.samefile(one.memory(), two.memory())
    with open(one.node(), "r+b") as f:
        f.seek(5 << 20)
        f.write(b"hello")
    with open(two.node(), "rb") as f:
        f.seek(5 << 20)
        assert f.read(5) == b"hello"
    # removing one host's device keeps the other's memory
    one.ok("dax", "remove", "dax0.0")
    with open(two.node(), "rb") as f:
        f.seek(5 << 20)
        assert f.read(5) == b"hello"
    memory = two.memory()
    two.ok("dax", "remove", "dax0.0")
    assert not memory.exists()


def test_errors_are_one_line(host):
    for args in (
        ("dax", "remove", "dax0.0"),
        ("dax", "create", "bogus", "--size", "1g"),
        ("dax", "create", "dax0.0", "--size", "3m"),
        ("dax", "create", "dax0.0"),
    ):
        result = host.cli(*args)
        assert result.returncode == 1, (args, result.out)
        assert_no_traceback(result)
        assert len(result.stderr.strip().splitlines()) == 1
    host.ok("dax", "create", "dax0.0", "--size", "1g")
    result = host.cli("dax", "create", "dax0.0", "--size", "1g")
    assert result.returncode == 1 and "already exists" in result.stderr


def test_a_device_is_named_by_name_or_path(host):
    host.ok("dax", "create", "dax0.0", "--size", "4g")
    host.ok("mkfs", str(host.node()))
    # /dev/daxX.Y means the emulated device when an emulation root is chosen
    host.ok("fsck", "/dev/dax0.0")
    # and a node path works without any root
    env = {k: v for k, v in os.environ.items() if k != "FAMFS_PY_DAX_ROOT"}
    from helpers import run_cli

    result = run_cli(
        "fsck", str(host.node()), env={**env, "FAMFS_PY_SYSTEM_UUID": host.system_uuid}
    )
    assert result.returncode == 0, result.out


def test_inject_error_records_badblocks_and_reports_no_holder(host):
    host.ok("dax", "create", "dax0.0", "--size", "1g")
    result = host.cli("dax", "inject-error", "dax0.0", "--offset", "0x400000", "--length", "4096")
    assert result.returncode == 95  # EOPNOTSUPP: nobody holds it, but it is recorded
    badblocks = (host.root / "sys/bus/dax/devices/dax0.0/badblocks").read_text()
    assert badblocks == f"{0x400000 // 512} 8\n"
    host.ok("dax", "clear-errors", "dax0.0")
    assert (host.root / "sys/bus/dax/devices/dax0.0/badblocks").read_text() == ""
    host.ok("dax", "reconfigure", "dax0.0", "--mode", "disabled")
    result = host.cli("dax", "inject-error", "dax0.0", "--offset", "0", "--length", "4096")
    assert result.returncode == 6  # ENXIO: the device is dead
