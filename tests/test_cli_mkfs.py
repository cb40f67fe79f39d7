"""mkfs.famfs-py end to end: what it writes, and every refusal leaving the device untouched."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid

import pytest
from helpers import CLIENT_UUID, GiB, MiB, assert_no_traceback, fingerprint, manifest, run_cli

from famfs_py import omf
from famfs_py.dax import holder
from famfs_py.dax.device import device_in_root
from famfs_py.fs.mkfs import mkfs


def _head(host, length: int) -> bytes:
    with open(host.memory(), "rb") as f:
        return f.read(length)


@pytest.fixture
def dev(host):
    host.ok("dax", "create", "dax0.0", "--size", "4g")
    return host


def _refused(host, *args, expect: str, prog: str = "mkfs.famfs-py") -> None:
    before = fingerprint(host.memory())
    result = host.cli(*args, prog=prog)
    assert result.returncode == 2, result.out
    assert_no_traceback(result)
    assert expect in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, "errors are one line"
    assert fingerprint(host.memory()) == before, "a refused mkfs changed the device"


def test_mkfs_writes_a_superblock_and_empty_log(dev):
    out = dev.ok("dax0.0", prog="mkfs.famfs-py").stdout
    assert "15420 entries" in out
    raw = _head(dev, 12 * MiB)
    sb = omf.Superblock.unpack(raw)
    assert sb.problems() == []
    assert str(sb.system_uuid) == dev.system_uuid
    assert sb.dev_size == 4 * GiB
    assert sb.dev_name == "/dev/dax0.0"
    hdr = omf.LogHeader.unpack(raw[omf.LOG_OFFSET :])
    assert hdr.problems(sb.log_len) == [] and hdr.next_index == 0
    # also reachable as `famfs-py mkfs`
    dev.ok("mkfs", "-f", "dax0.0")


def test_mkfs_bytes_equal_upstream_image_a_for_the_same_uuids(dev, ref_images):
    man = manifest("A")["superblock"]
    device = device_in_root("dax0.0", dev.root)
    mkfs(
        device,
        system_uuid=uuid.UUID(man["ts_system_uuid"]),
        fs_uuid=uuid.UUID(man["ts_uuid"]),
        dev_uuid=uuid.UUID(man["ts_dev_uuid"]),
    )
    with open(ref_images("A"), "rb") as ref, open(dev.memory(), "rb") as ours:
        region = omf.LOG_OFFSET + omf.DEFAULT_LOG_LEN
        assert ours.read(region) == ref.read(region)


def test_mkfs_refuses_an_existing_filesystem_without_force(dev):
    dev.ok("dax0.0", prog="mkfs.famfs-py")
    _refused(dev, "dax0.0", expect="already holds a famfs filesystem")
    dev.ok("-f", "dax0.0", prog="mkfs.famfs-py")


def test_mkfs_refuses_another_hosts_filesystem_without_force(dev):
    dev.ok("dax0.0", prog="mkfs.famfs-py", env={"FAMFS_PY_SYSTEM_UUID": CLIENT_UUID})
    _refused(dev, "dax0.0", expect="belongs to another host")


def test_mkfs_refuses_a_claimed_device_even_with_force(dev):
    script = textwrap.dedent(
        """
        import sys, time
        from pathlib import Path
        from famfs_py.dax import holder
        from famfs_py.dax.device import device_in_root
        c = holder.claim(device_in_root("dax0.0", Path(sys.argv[1])), "a mount")
        print("claimed", flush=True)
        time.sleep(600)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(dev.root)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "claimed"
        _refused(dev, "-f", "dax0.0", expect="busy")
    finally:
        proc.kill()
        proc.wait()
    dev.ok("-f", "dax0.0", prog="mkfs.famfs-py")


def test_mkfs_refuses_a_device_under_4_gib(host):
    host.ok("dax", "create", "dax0.0", "--size", "1g")
    _refused(host, "dax0.0", expect="at least 4 GiB")
    # tests may opt in for emulated devices
    host.ok("--allow-small", "dax0.0", prog="mkfs.famfs-py")


@pytest.mark.parametrize("loglen", ["4m", "12m", "0", "3"])
def test_mkfs_refuses_a_bad_log_length(dev, loglen):
    _refused(dev, "-l", loglen, "dax0.0", expect="power of two")


def test_mkfs_accepts_a_larger_log(dev):
    dev.ok("--loglen", "16m", "dax0.0", prog="mkfs.famfs-py")
    hdr = omf.LogHeader.unpack(_head(dev, omf.LOG_OFFSET + 48)[omf.LOG_OFFSET :])
    assert hdr.log_len == 16 * MiB and hdr.slots == omf.log_slots(16 * MiB)


def test_mkfs_refuses_what_is_not_a_dax_device(dev, tmp_path):
    plain = tmp_path / "plain.img"
    plain.write_bytes(b"x")
    result = dev.cli(str(plain), prog="mkfs.famfs-py")
    assert result.returncode == 2 and "not a dax device" in result.stderr
    assert_no_traceback(result)
    result = dev.cli("dax3.3", prog="mkfs.famfs-py")
    assert result.returncode == 2 and "does not exist" in result.stderr


def test_mkfs_refuses_a_device_in_devdax_mode(host):
    host.ok("dax", "create", "dax0.0", "--size", "4g", "--mode", "devdax")
    _refused(host, "dax0.0", expect="devdax mode")


def test_mkfs_kill_zeroes_only_the_magic(dev):
    dev.ok("dax0.0", prog="mkfs.famfs-py")
    before = _head(dev, 12 * MiB)
    _refused(dev, "-k", "dax0.0", expect="add -f")
    dev.ok("-f", "-k", "dax0.0", prog="mkfs.famfs-py")
    after = _head(dev, 12 * MiB)
    assert after[:8] == bytes(8)
    assert after[8:] == before[8:]
    _refused(dev, "-f", "-k", "dax0.0", expect="no famfs superblock")
    # a killed filesystem can be made again without -f
    dev.ok("dax0.0", prog="mkfs.famfs-py")


def test_mkfs_usage_errors_exit_2_and_help_lists_exit_codes(dev):
    result = run_cli("--bogus", "dax0.0", prog="mkfs.famfs-py")
    assert result.returncode == 2 and "usage" in result.stderr
    for flag in ("-h", "--help", "-?"):
        result = run_cli(flag, prog="mkfs.famfs-py")
        assert result.returncode == 0 and "exit codes" in result.stdout


def test_mkfs_holds_the_claim_while_it_writes(dev):
    # after mkfs the device is free again
    dev.ok("dax0.0", prog="mkfs.famfs-py")
    assert holder.holder_info(device_in_root("dax0.0", dev.root)) is None


@pytest.mark.parametrize("magic", [omf.SUPER_MAGIC ^ 1 << 5, 0xFFFF_FFFF_FFFF_FFFF])
def test_mkfs_refuses_a_damaged_superblock_without_force(dev, magic):
    dev.ok("dax0.0", prog="mkfs.famfs-py")
    with open(dev.memory(), "r+b") as f:
        f.write(magic.to_bytes(8, "little"))
    _refused(dev, "dax0.0", expect="damaged famfs superblock")
    dev.ok("-f", "dax0.0", prog="mkfs.famfs-py")
