"""Device dax's alignment rule, on emulated devices: every mapping's device offset, length and
address is a multiple of the device's `align`, or the mapping fails with EINVAL as devdax's
does — and every mapping famfs-py makes (the daemon's, the mapped API's, the copy tools')
keeps the rule, on 2 MiB and on 1 GiB devices."""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

import pytest
from helpers import MiB

import famfs_py
from famfs_py.dax.device import device_in_root
from famfs_py.dax.memory import DeviceMemory, map_range, reserve, unmap
from famfs_py.mapping import open_file_memory

GiB = 1 << 30


def _device(host):
    return device_in_root("dax0.0", host.root)


def test_unaligned_mappings_of_an_emulated_device_fail_as_devdax_does(fresh):
    device = _device(fresh)
    align = device.align
    assert align == 2 * MiB
    fd = os.open(device.node, os.O_RDONLY)
    try:
        for offset, length in ((4096, 2 * MiB), (0, 0xC8), (2 * MiB, 3 * MiB)):
            with pytest.raises(OSError) as info:
                map_range(fd, length, offset=offset, writable=False, align=align)
            assert info.value.errno == errno.EINVAL
            assert "alignment (2 MiB)" in str(info.value)
        unaligned = reserve(4 * MiB, align) + 4096
        with pytest.raises(OSError) as info:
            map_range(fd, 2 * MiB, offset=0, writable=False, align=align, address=unaligned)
        assert info.value.errno == errno.EINVAL
        unmap(unaligned - 4096, 4 * MiB)
        base = map_range(fd, 2 * MiB, offset=2 * MiB, writable=False, align=align)
        assert base % align == 0
        unmap(base, 2 * MiB)
    finally:
        os.close(fd)
    with pytest.raises(OSError) as info:
        DeviceMemory(device.node, 0xC8, writable=False, align=align)  # the old superblock probe
    assert info.value.errno == errno.EINVAL


def _device_mappings(pid: int | str, memory: Path) -> list[tuple[int, int, int]]:
    """(start, end, file offset) of every mapping of the device's memory file in `pid`."""
    target = os.stat(memory)
    out = []
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            fields = line.split()
            if len(fields) < 6:
                continue
            major, minor = (int(x, 16) for x in fields[3].split(":"))
            if int(fields[4]) != target.st_ino or os.makedev(major, minor) != target.st_dev:
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            out.append((start, end, int(fields[2], 16)))
    return out


def _daemon_pid(host, mp) -> int:
    out = host.ok("status", mp).stdout
    return int(re.search(r"daemon pid (\d+)", out).group(1))


def _assert_aligned(mappings, align: int) -> None:
    assert mappings, "no mapping of the device memory was found"
    for start, end, offset in mappings:
        assert start % align == 0 and end % align == 0 and offset % align == 0, (
            f"{start:#x}-{end:#x} at offset {offset:#x} is not aligned to {align:#x}"
        )


def test_every_mapping_of_device_memory_is_aligned(fresh, mounts):
    mp = mounts.mount(fresh)
    fresh.ok("creat", "-s", "3m", "-r", "-S", "7", mp / "plain")
    fresh.ok("creat", "-s", "20m", "-N", "3", "-B", "4", "-C", "2m", mp / "striped")
    fresh.ok("creat", "-s", "5000", mp / "small")
    memory = fresh.memory()
    _assert_aligned(_device_mappings(_daemon_pid(fresh, mp), memory), 2 * MiB)
    with (
        famfs_py.open_mapped(mp / "plain") as a,
        famfs_py.open_mapped(mp / "striped", "r+") as b,
        famfs_py.open_mapped(mp / "small") as c,
        open_file_memory(str(mp / "striped"), write=False) as d,
    ):
        assert len(a) == 3 * MiB and len(b) == 20 * MiB and len(c) == 5000 and d.size == 20 * MiB
        assert a[:] == (mp / "plain").read_bytes()
        mine = _device_mappings("self", memory)
        assert len(mine) >= 1 + 10 + 1 + 1  # one per piece: the striped file has 10 chunks
        _assert_aligned(mine, 2 * MiB)
    assert _device_mappings("self", memory) == []  # closing unmapped everything


@pytest.fixture
def gib_aligned(host, mounts):
    """A 4 GiB emulated device aligned to 1 GiB, with a famfs, mounted."""
    host.ok("dax", "create", "dax0.0", "--size", "4g", "--align", "1g")
    host.ok("mkfs", "dax0.0")
    return host, mounts.mount(host)


def test_a_device_aligned_to_1_gib_serves_every_tool(gib_aligned):
    host, mp = gib_aligned
    host.ok("creat", "-s", "3m", "-r", "-S", "11", mp / "plain")
    host.ok("verify", "-S", "11", "-f", mp / "plain")
    host.ok("creat", "-s", "12m", "-N", "2", "-B", "2", "-C", "2m", "-r", "-S", "5", mp / "s")
    host.ok("verify", "-S", "5", "-f", mp / "s")  # piece by piece: no single run is possible
    host.ok("chkread", mp / "s")
    _assert_aligned(_device_mappings(_daemon_pid(host, mp), host.memory()), GiB)
    with famfs_py.open_mapped(mp / "plain") as m:  # one piece: a window of a 1 GiB mapping
        assert m[:] == (mp / "plain").read_bytes()
        _assert_aligned(_device_mappings("self", host.memory()), GiB)


def test_open_mapped_reports_why_a_file_cannot_be_one_run(gib_aligned):
    host, mp = gib_aligned
    host.ok("creat", "-s", "12m", "-N", "2", "-B", "2", "-C", "2m", mp / "s")
    with pytest.raises(OSError) as info:
        famfs_py.open_mapped(mp / "s")
    assert info.value.errno == errno.EINVAL
    assert "use a device aligned to 2 MiB" in str(info.value)
    assert _device_mappings("self", host.memory()) == []  # nothing left behind
