"""Filesystems of 4 KiB allocation units (`mkfs --4k`, upstream's test_4k.sh) beside default
2 MiB ones: what fsck reports, what a file costs, and every tool on them (creat, cp, verify,
interleave, pcq, shadow YAML, fsck's collisions, the mapped API, memory failures)."""

from __future__ import annotations

import errno
import json
import os
import re
from pathlib import Path

import pytest
from helpers import Host, MiB, assert_no_traceback

import famfs_py
from famfs_py import omf, protocol
from famfs_py.channel import Channel, locate
from famfs_py.fs.shadow_yaml import parse_shadow_yaml

KiB = 1 << 10
UNITS = {"4k": 4 * KiB, "2m": 2 * MiB}


def _mkfs(host: Host, unit: str, *extra: str) -> None:
    host.ok("dax", "create", "dax0.0", "--size", "4g", *extra)
    host.ok("mkfs", *(["--4k"] if unit == "4k" else []), "dax0.0")


@pytest.fixture(params=sorted(UNITS))
def unit_fs(request, host, mounts):
    """A mounted famfs of each allocation unit: (host, mount point, unit in bytes)."""
    _mkfs(host, request.param)
    return host, mounts.mount(host), UNITS[request.param]


def _allocated(host: Host, target: Path | str) -> int:
    """fsck's 'Allocated bytes:' figure, read as test_4k.sh reads it (grep | awk '{print $3}')."""
    out = host.ok("fsck", target).stdout
    return int(next(ln.split()[2] for ln in out.splitlines() if "Allocated bytes:" in ln))


def _extents(path: Path) -> list[dict]:
    where = locate(str(path))
    with Channel(where.mountpoint) as chan:
        fmap = chan.call(protocol.Getmap(where.relpath)).fmap
    return [{"offset": e.offset, "length": e.length} for e in omf.fmap_extents(fmap)]


def _round_up(n: int, unit: int) -> int:
    return -(-n // unit) * unit


# -- upstream's test_4k.sh ----------------------------------------------------------------------
def test_fsck_reports_the_allocation_unit_mkfs_chose(host):
    host.ok("dax", "create", "dax0.0", "--size", "4g")
    made = host.ok("mkfs", "-f", "--4k", "dax0.0")
    assert "alloc unit:   0x1000" in made.stdout
    assert re.search(r"alloc_unit: *0x1000", host.ok("fsck", "dax0.0").stdout)
    host.ok("mkfs", "-f", "dax0.0")
    assert re.search(r"alloc_unit: *0x200000", host.ok("fsck", "dax0.0").stdout)
    made = host.cli("-f", "--4k", "dax0.0", prog="mkfs.famfs-py")
    assert made.returncode == 0 and "0x1000" in made.stdout


def test_a_5000_byte_file_costs_8_kib_on_a_4k_filesystem(host, mounts):
    _mkfs(host, "4k")
    mp = mounts.mount(host)
    base = _allocated(host, mp)
    host.ok("creat", "-r", "-S", "1", "-s", "5000", mp / "small0")
    host.ok("verify", "-S", "1", "-f", mp / "small0")
    assert _allocated(host, mp) - base == 8192
    assert host.cli("fsck", mp).returncode == 0
    assert os.stat(mp / "small0").st_blocks * 512 == 8192


# -- both allocation units -----------------------------------------------------------------------
@pytest.mark.parametrize("size", [1, 4095, 4096, 4097, 5000, 3 * MiB + 1])
def test_a_file_costs_its_size_rounded_up_to_the_unit(unit_fs, size):
    host, mp, unit = unit_fs
    before = _allocated(host, mp)
    host.ok("creat", "-r", "-S", "3", "-s", str(size), mp / "f")
    host.ok("verify", "-S", "3", "-f", mp / "f")
    assert _allocated(host, mp) - before == _round_up(size, unit)
    [extent] = _extents(mp / "f")
    assert extent["offset"] % unit == 0 and extent["length"] == _round_up(size, unit)


def test_statfs_is_exact(unit_fs):
    host, mp, unit = unit_fs
    for i in range(3):
        host.ok("creat", "-s", "5000", mp / f"f{i}")
    vfs = os.statvfs(mp)
    assert vfs.f_frsize == unit and vfs.f_blocks * unit == 4 << 30
    used = (vfs.f_blocks - vfs.f_bfree) * unit
    assert used == _allocated(host, mp)
    assert used == 2 * MiB + 8 * MiB + 3 * _round_up(5000, unit)  # superblock, log, files


def test_small_files_copied_read_and_written_through_the_mount(unit_fs, tmp_path):
    host, mp, unit = unit_fs
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    contents = {}
    for i in range(40):
        name = f"sub/f{i}" if i % 2 else f"f{i}"
        contents[name] = os.urandom(1 + i * 377)
        (src / name).write_bytes(contents[name])
    before = _allocated(host, mp)
    host.ok("cp", "-r", src, mp / "dst")
    for name, data in contents.items():
        assert (mp / "dst" / name).read_bytes() == data
    host.ok("cp", "-r", "-c", src, mp / "dst")  # compares equal
    spent = _allocated(host, mp) - before
    assert spent == sum(_round_up(len(d), unit) for d in contents.values())
    # neighbours stay intact when one small file is rewritten in place
    target = mp / "dst" / "f2"
    new = os.urandom(len(contents["f2"]))
    with open(target, "r+b") as f:
        f.write(new)
    assert target.read_bytes() == new
    for name, data in contents.items():
        if name != "f2":
            assert (mp / "dst" / name).read_bytes() == data
    fd = os.open(target, os.O_WRONLY)
    try:
        with pytest.raises(OSError) as info:  # never past the file
            os.pwrite(fd, b"x", len(new))
        assert info.value.errno == errno.EFBIG
    finally:
        os.close(fd)
    assert host.cli("fsck", mp).returncode == 0


# -- interleaving (upstream's rules: a power of two, a multiple of the unit, buckets >= 1 GiB) --
@pytest.mark.parametrize(
    "unit,chunk,ok",
    [
        ("4k", "4k", True),
        ("4k", "64k", True),
        ("4k", "6k", False),
        ("4k", "2k", False),
        ("2m", "4k", False),
        ("2m", "2m", True),
    ],
)
def test_interleave_chunks_follow_upstreams_rules(host, mounts, unit, chunk, ok):
    _mkfs(host, unit)
    mp = mounts.mount(host)
    result = host.cli("creat", "-N", "2", "-B", "4", "-C", chunk, "-s", "300000", mp / "s")
    assert_no_traceback(result)
    assert (result.returncode == 0) == ok, result.out
    if not ok:
        assert "chunk size" in result.stderr and not (mp / "s").exists()
        return
    data = os.urandom(300000)
    with open(mp / "s", "r+b") as f:
        f.write(data)
    assert (mp / "s").read_bytes() == data
    strips = json.loads(host.ok("getmap", "--json", mp / "s").stdout)
    assert strips  # the map is served
    assert host.cli("fsck", mp).returncode == 0


def test_buckets_under_1_gib_are_refused_on_4k_too(host, mounts):
    _mkfs(host, "4k")
    mp = mounts.mount(host)
    result = host.cli("creat", "-N", "2", "-B", "8", "-C", "4k", "-s", "1m", mp / "s")
    assert result.returncode != 0 and "1 GiB" in result.stderr


# -- the mapped API --------------------------------------------------------------------------
def test_a_mapped_small_file_shows_exactly_its_bytes(host, mounts):
    _mkfs(host, "4k")
    mp = mounts.mount(host)
    for name, size in (("a", 5000), ("b", 100), ("c", 9000)):
        host.ok("creat", "-r", "-S", "7", "-s", str(size), mp / name)
    before = {n: (mp / n).read_bytes() for n in "ac"}
    with famfs_py.open_mapped(mp / "b", "r+") as m:
        assert len(m) == 100
        assert m[:] == (mp / "b").read_bytes()
        m[:] = b"z" * 100
        m.flush()
        with pytest.raises(ValueError):
            m.flush(0, 101)  # never past the file
        with pytest.raises(IndexError):
            m[100]
    assert (mp / "b").read_bytes() == b"z" * 100
    assert {n: (mp / n).read_bytes() for n in "ac"} == before
    host.ok("verify", "-S", "7", "-f", mp / "a")


def test_chunks_smaller_than_the_device_alignment_cannot_be_one_run(host, mounts):
    _mkfs(host, "4k")
    mp = mounts.mount(host)
    host.ok("creat", "-N", "2", "-B", "4", "-C", "4k", "-s", "64k", "-r", "-S", "2", mp / "s")
    host.ok("verify", "-S", "2", "-f", mp / "s")  # piece by piece
    with pytest.raises(OSError) as info:
        famfs_py.open_mapped(mp / "s")
    assert info.value.errno == errno.EINVAL
    assert "use a device aligned to 4 KiB" in str(info.value)


def test_a_device_aligned_to_4_kib_maps_4_kib_chunks_as_one_run(host, mounts):
    _mkfs(host, "4k", "--align", "4k")
    mp = mounts.mount(host)
    host.ok("creat", "-N", "2", "-B", "4", "-C", "4k", "-s", "64k", "-r", "-S", "2", mp / "s")
    with famfs_py.open_mapped(mp / "s") as m:
        assert m[:] == (mp / "s").read_bytes()
        assert len(m.pieces) == 16


# -- pcq, shadow YAML, fsck --------------------------------------------------------------------
def test_pcq_on_a_4k_filesystem(host, mounts, tmp_path):
    _mkfs(host, "4k")
    mp = mounts.mount(host)
    host.ok("pcq", "--create", "-b", "64", "-n", "16", mp / "q")
    status = tmp_path / "status"
    host.ok("pcq", "--producer", "-N", "10", "--statusfile", status, mp / "q", timeout=120)
    host.ok("pcq", "--consumer", "-N", "10", "--statusfile", status, mp / "q", timeout=120)
    assert status.read_text().strip() == "10"
    assert host.cli("fsck", mp).returncode == 0


def test_shadow_yaml_of_a_4k_filesystem(host, mounts, tmp_path):
    _mkfs(host, "4k")
    mp = mounts.mount(host)
    host.ok("creat", "-s", "5000", mp / "f")
    (tmp_path / "sh" / "root").mkdir(parents=True)
    host.ok("logplay", "--shadow", tmp_path / "sh", mp)
    meta = parse_shadow_yaml((tmp_path / "sh" / "root" / "f").read_text())
    [extent] = meta.fmap.extents  # type: ignore[union-attr]
    assert meta.size == 5000 and extent.length == 0x2000 and extent.offset % 4096 == 0


def test_fsck_counts_collisions_in_4k_units(host, mounts):
    _mkfs(host, "4k")
    mp = mounts.mount(host)
    host.ok("creat", "-s", "9000", mp / "f")
    host.ok("clone", mp / "f", mp / "g")
    report = json.loads(host.cli("fsck", "--json", mp).stdout)
    assert report["collisions"] == 3  # 9000 bytes: three 4 KiB units counted twice
    host.ok("umount", mp)
    assert host.cli("fsck", "dax0.0").returncode == 3


# -- memory failures ---------------------------------------------------------------------------
def _read_errno(path: Path) -> int | None:
    try:
        path.read_bytes()
    except OSError as exc:
        return exc.errno
    return None


def test_a_bad_page_costs_the_files_that_share_it(host, mounts):
    _mkfs(host, "4k")
    mp = mounts.mount(host)
    for i in range(6):
        host.ok("creat", "-r", "-S", str(i + 1), "-s", "3000", mp / f"f{i}")
    offsets = {i: _extents(mp / f"f{i}")[0]["offset"] for i in range(6)}
    assert len(set(o // 4096 for o in offsets.values())) == 6  # one 4 KiB unit each
    host.ok("dax", "inject-error", "dax0.0", "--offset", str(offsets[2]), "--length", "4096")
    assert _read_errno(mp / "f2") == errno.EIO
    for i in (0, 1, 3, 4, 5):
        host.ok("verify", "-S", str(i + 1), "-f", mp / f"f{i}")
    # a failure reported for a whole 2 MiB page costs every file in it, and only those
    page = offsets[4] - offsets[4] % (2 * MiB)
    host.ok("dax", "inject-error", "dax0.0", "--offset", str(page), "--length", str(2 * MiB))
    for i, offset in offsets.items():
        hit = page <= offset < page + 2 * MiB or i == 2
        assert (_read_errno(mp / f"f{i}") == errno.EIO) == hit, i


# -- copying many small files (creations asked for together) ------------------------------------
def test_cp_of_many_small_files_in_batches(host, mounts, tmp_path):
    _mkfs(host, "4k")
    mp = mounts.mount(host)
    src = tmp_path / "many"
    (src / "a" / "b").mkdir(parents=True)
    contents = {}
    for i in range(300):  # more than one batch and more than one pipeline window
        name = ("a/b/" if i % 3 == 0 else "") + f"f{i:03d}"
        contents[name] = os.urandom(1 + (i * 53) % 9000)
        (src / name).write_bytes(contents[name])
    host.ok("cp", "-r", "-t", "2", src, mp / "dst")
    for name, data in contents.items():
        assert (mp / "dst" / name).read_bytes() == data
    host.ok("cp", "-r", "-c", src, mp / "dst")
    host.ok("cp", "-r", src, mp / "dst")  # again over the same files: restartable


def test_cp_stops_at_a_file_it_cannot_create_and_leaves_none_unfilled(host, mounts, tmp_path):
    _mkfs(host, "4k")
    mp = mounts.mount(host)
    src = tmp_path / "s"
    src.mkdir()
    contents = {f"f{i:02d}": os.urandom(100 + i) for i in range(20)}
    for name, data in contents.items():
        (src / name).write_bytes(data)
    host.ok("mkdir", mp / "dst")
    host.ok("creat", "-s", "7", mp / "dst" / "f10")  # in the way: the wrong size
    result = host.cli("cp", "-r", src, mp / "dst")
    assert_no_traceback(result)
    assert result.returncode == 1 and "f10" in result.stderr and "stopping" in result.stderr
    for name, data in contents.items():
        target = mp / "dst" / name
        if name == "f10":
            assert target.stat().st_size == 7
        elif target.exists():  # created with the batch: then it holds its bytes
            assert target.read_bytes() == data
    assert all((mp / "dst" / f"f{i:02d}").exists() for i in range(10))
