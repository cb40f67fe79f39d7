"""Offline fsck on upstream's reference images and on broken filesystems."""

from __future__ import annotations

import json
import os
import struct

import pytest
from helpers import assert_no_traceback, manifest

from famfs_py import omf
from famfs_py.dax import holder
from famfs_py.dax.device import device_in_root


@pytest.mark.parametrize("name", ["A", "B", "C", "D", "E"])
def test_fsck_reports_what_upstream_reports(ref_device, name):
    host = ref_device(name)
    result = host.cli("fsck", "--json", "dax0.0")
    assert_no_traceback(result)
    report = json.loads(result.stdout)
    expected = manifest(name)["library_validation_of_image"]["famfs_build_bitmap"]
    assert report["files"] == expected["files"]
    assert report["dirs"] == expected["dirs"]
    assert report["nbits"] == expected["nbits"]
    assert report["bits_set"] == expected["bits_set"]
    assert report["alloc_bytes"] == expected["alloc_bytes"]
    assert report["collisions"] == expected["alloc_collisions"]
    assert report["sum_file_sizes"] == expected["sum_file_sizes"]
    assert report["entries"] == expected["n_entries"]
    assert len(report["bad_entries"]) == expected["bad_entries"]
    assert report["role"] == "Owner"
    assert result.returncode == expected["bad_entries"] + expected["alloc_collisions"]


def test_fsck_names_the_corrupt_entry_of_image_e(ref_device):
    host = ref_device("E")
    result = host.cli("fsck", "dax0.0")
    assert result.returncode == 1
    assert "bad entry 3" in result.stdout and "crc" in result.stdout


def test_fsck_text_report_of_a_clean_filesystem(ref_device):
    host = ref_device("B")
    result = host.ok("fsck", "-v", "dax0.0")
    assert "No allocation errors found" in result.stdout
    assert "a/b/f1" in result.stdout
    client = host.cli(
        "fsck", "dax0.0", env={"FAMFS_PY_SYSTEM_UUID": "0" * 8 + "-0000-4000-8000-" + "0" * 12}
    )
    assert "Client" in client.stdout


def _poke(host, offset: int, data: bytes) -> None:
    with open(host.memory(), "r+b") as f:
        f.seek(offset)
        f.write(data)


def test_fsck_counts_a_collision(ref_device):
    host = ref_device("B")
    # point a/b/f1 (entry 2) at top's extent and fix the CRC: a cross-link
    entry_off = omf.LOG_OFFSET + omf.entry_offset(2)
    with open(host.memory(), "rb") as f:
        f.seek(entry_off)
        entry = omf.LogEntry.unpack(f.read(omf.LOG_ENTRY_SIZE))
    meta = entry.payload
    fmap = omf.SimpleFmap((omf.Extent(12582912, 2 << 20),))
    from dataclasses import replace

    bad = omf.LogEntry.new(2, replace(meta, fmap=fmap))
    _poke(host, entry_off, bad.pack())
    result = host.cli("fsck", "--json", "dax0.0")
    report = json.loads(result.stdout)
    assert report["collisions"] == 1
    assert result.returncode == 1


def test_fsck_of_a_device_without_famfs(host):
    host.ok("dax", "create", "dax0.0", "--size", "4g")
    result = host.cli("fsck", "dax0.0")
    assert result.returncode == 1
    assert "bad superblock magic" in result.stdout
    assert_no_traceback(result)


def test_fsck_of_a_bad_log_header(ref_device):
    host = ref_device("B")
    _poke(host, omf.LOG_OFFSET + 8, struct.pack("<Q", 12345))
    result = host.cli("fsck", "dax0.0")
    assert result.returncode >= 1
    assert "log header" in result.stdout


def test_fsck_refuses_a_claimed_device(ref_device):
    host = ref_device("A")
    with holder.claim(device_in_root("dax0.0", host.root), "a mount"):
        result = host.cli("fsck", "dax0.0")
    assert result.returncode == 128
    assert "busy" in result.stderr and "mount point" in result.stderr
    assert_no_traceback(result)


def test_fsck_of_a_missing_device(host):
    result = host.cli("fsck", "dax4.4")
    assert result.returncode == 128 and "does not exist" in result.stderr
    assert_no_traceback(result)


@pytest.mark.parametrize("memory", [0, 4096])
def test_missing_memory_is_a_clear_error_for_fsck_mkfs_and_mount(host, memory, tmp_path):
    host.ok("dax", "create", "dax0.0", "--size", "4g")
    host.ok("mkfs", "dax0.0")
    os.truncate(host.memory(), memory)  # the device says 4 GiB; the memory behind it is gone
    result = host.cli("fsck", "dax0.0")
    assert_no_traceback(result)
    assert result.returncode == 1 and "cannot be read" in result.stdout, result.out
    result = host.cli("mkfs", "dax0.0")
    assert_no_traceback(result)
    assert result.returncode == 2, result.out  # refused: a filesystem, or no memory
    assert ("memory error" if memory == 0 else "already holds") in result.stderr
    (tmp_path / "m").mkdir()
    result = host.cli("mount", "dax0.0", tmp_path / "m", env={"FAMFS_PY_LOG_DIR": str(tmp_path)})
    assert_no_traceback(result)
    assert result.returncode == 1 and "cannot be read" in result.stderr, result.out


def test_fsck_of_a_device_without_memory(host):
    host.ok("dax", "create", "dax0.0", "--size", "4g")
    (host.root / "sys/bus/dax/devices/dax0.0/size").write_text("0\n")  # a seed device
    result = host.cli("fsck", "dax0.0")
    assert_no_traceback(result)
    assert result.returncode == 1 and "holds 0 bytes" in result.stdout


def test_fsck_of_a_header_counting_every_slot_is_quick(fresh):
    """next_index is outside the header's CRC: a flipped bit there makes every slot of the
    log "committed", each one corrupt. fsck must report them, not crawl."""
    with open(fresh.memory(), "r+b") as f:
        f.seek(omf.LOG_OFFSET + 40)
        f.write(struct.pack("<Q", omf.log_slots(omf.DEFAULT_LOG_LEN)))
    result = fresh.cli("fsck", "--json", "dax0.0", timeout=60)  # a crawl would take minutes
    assert_no_traceback(result)
    assert len(json.loads(result.stdout)["bad_entries"]) == omf.log_slots(omf.DEFAULT_LOG_LEN)
