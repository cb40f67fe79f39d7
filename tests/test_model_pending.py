"""Model tier: files created through the mount before their log entry (famfs_py.fs.pending):
allocation in growing runs, the tail given back, limits, the commit, parents first."""

from __future__ import annotations

import errno

import pytest
from helpers import MiB

from famfs_py import omf
from famfs_py.errors import FsError
from famfs_py.fs.namespace import ROOT_INO
from famfs_py.fs.pending import PendingFiles

pytestmark = pytest.mark.model

GiB = 1 << 30
AU = omf.ALLOC_UNIT


@pytest.fixture
def fs(master_famfs):
    return master_famfs


@pytest.fixture
def pending(fs):
    return PendingFiles(fs, delay=0.0)


def _root(fs):
    return fs.namespace.inodes[ROOT_INO]


def test_runs_double_merge_in_place_and_the_tail_is_given_back(fs, pending):
    used = fs.log.bitmap.used
    p = pending.create(_root(fs), "f", 0o640, 5, 6)
    for i in range(9):
        assert pending.write(p, i * MiB, bytes([i]) * MiB) == MiB
    assert [e.length for e in p.extents] == [16 * MiB]  # 2+2+4+8, merged: one run
    assert fs.log.bitmap.used - used == 8
    assert fs.namespace.resolve("f") is p.inode and fs.log.next_index == 0  # not logged
    inode = pending.commit(p)
    assert inode is not None and fs.log.next_index == 1
    assert fs.log.bitmap.used - used == 5  # 9 MiB in 2 MiB units
    assert inode.meta is not None and inode.meta.size == 9 * MiB
    assert (inode.uid, inode.gid, inode.mode) == (5, 6, 0o640)
    assert bytes(fs.read(inode, 8 * MiB, 3)) == b"\x08\x08\x08"


def test_a_hole_reads_as_zeros_not_as_old_memory(fs, pending):
    p = pending.create(_root(fs), "junk", 0o644, 0, 0)
    pending.write(p, 0, b"\xff" * MiB)
    pending.unlink(p)  # its space, full of 0xff, is free again
    q = pending.create(_root(fs), "holey", 0o644, 0, 0)
    pending.write(q, MiB, b"end")
    assert bytes(fs.read(q.inode, 0, MiB)) == bytes(MiB)


def test_a_full_device_is_enospc_and_gives_everything_back(fs, pending):
    free = fs.log.bitmap.free
    hog = fs.log.bitmap.allocate((free - 3) * AU)  # three units left
    p = pending.create(_root(fs), "big", 0o644, 0, 0)
    pending.write(p, 0, b"x")
    with pytest.raises(FsError) as info:
        pending.write(p, 0, bytes(8 * MiB))
    assert info.value.errno == errno.ENOSPC
    assert fs.log.bitmap.free == 3 and p.failed
    assert pending.commit(p) is None and fs.namespace.resolve("big") is None
    assert fs.log.next_index == 0
    fs.log.bitmap.release(hog)


def test_sixteen_extents_at_most_then_efbig(fs, pending):
    bitmap = fs.log.bitmap
    # free space in single units, each between used ones: no run can grow in place
    start = bitmap.find_free(1)
    assert start is not None
    bitmap.mark(omf.Extent(start * AU, bitmap.nbits * AU - start * AU))
    for k in range(20):
        bitmap.release(omf.Extent((start + 2 * k) * AU, AU))
    p = pending.create(_root(fs), "frag", 0o644, 0, 0)
    for k in range(omf.MAX_SIMPLE_EXTENTS):
        pending.write(p, k * AU, bytes(AU))
    assert len(p.extents) == omf.MAX_SIMPLE_EXTENTS
    with pytest.raises(FsError) as info:
        pending.write(p, 16 * AU, b"one more")
    assert info.value.errno == errno.EFBIG
    assert bitmap.free == 20  # all given back


def test_a_full_log_refuses_the_create(fs, pending):
    for i in range(fs.log.slots - 1):
        fs.log_entry(omf.MkdirMeta(0, 0, 0o755, f"d{i}"))
    pending.create(_root(fs), "last", 0o644, 0, 0)  # the last slot, held for it
    with pytest.raises(FsError) as info:
        pending.create(_root(fs), "one-too-many", 0o644, 0, 0)
    assert info.value.errno == errno.ENOSPC and "log is full" in str(info.value)


def test_pending_directories_are_logged_before_what_is_in_them(fs, pending):
    d = pending.create(_root(fs), "d", 0o700, 0, 0, is_dir=True)
    f = pending.create(d.inode, "f", 0o644, 0, 0)
    pending.write(f, 0, b"data")
    d.inode.mode = 0o755  # a chmod before the commit lands in the entry
    fs.create_file("d/by-cli", 4096, 0o644, 0, 0)  # logs d first (Famfs.log_parents)
    assert d.committed and fs.log.next_index == 2
    f.due = 0.0
    assert pending.due(1.0) == [f]
    pending.commit(f)
    entries = [
        omf.LogEntry.unpack(
            fs.mem.read(fs.sb.log_offset + omf.entry_offset(i), omf.LOG_ENTRY_SIZE)
        ).payload
        for i in range(3)
    ]
    assert [e.relpath for e in entries] == ["d", "d/by-cli", "d/f"]
    assert isinstance(entries[0], omf.MkdirMeta) and entries[0].mode == 0o755


def test_a_directory_waits_while_something_beneath_it_is_open(fs, pending):
    d = pending.create(_root(fs), "d", 0o755, 0, 0, is_dir=True)
    f = pending.create(d.inode, "f", 0o644, 0, 0)
    f.handles = 1  # open
    d.due = 0.0
    assert pending.due(10.0) == []
    f.handles, f.due = 0, 5.0
    assert pending.due(4.0) == []  # the file still waits: so does its directory
    assert pending.due(6.0) == [d, f]  # parents first
