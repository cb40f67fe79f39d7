"""Change announcements (famfs_py.fs.changes) on one emulated memory, without a mount: the
area, slots given by the master, records and heads, and what a reader makes of a writer
that died, fell behind or left a torn record (issue 23)."""

from __future__ import annotations

import uuid

import pytest
from helpers import MASTER_UUID, GiB

from famfs_py import omf
from famfs_py.dax import emulated
from famfs_py.fs import changes
from famfs_py.fs.changes import EVERYTHING, Change
from famfs_py.fs.filesystem import Famfs
from famfs_py.fs.mkfs import mkfs

pytestmark = pytest.mark.model

MASTER = uuid.UUID(MASTER_UUID)
CLIENT = uuid.UUID("0c1d2e3f-4a5b-4c6d-8e7f-901122334455")


@pytest.fixture
def hosts(tmp_path):
    """(master's Famfs, a --rw client's Famfs) on one memory."""
    dev = emulated.create("dax0.0", 4 * GiB, tmp_path / "master")
    mkfs(dev, system_uuid=MASTER)
    other = emulated.create("dax0.0", None, tmp_path / "client", share=str(dev.node))
    master = Famfs.open(dev, this_host=MASTER, flush="on")
    client = Famfs.open(other, this_host=CLIENT, writable_client=True, flush="on")
    yield master, client
    client.close()
    master.close()
    emulated.remove(other)
    emulated.remove(dev)


def _area(fs: Famfs) -> changes.Area:
    return changes.Area(fs.mem, fs.coherency, fs.sb.fs_uuid)


def test_the_area_lies_past_the_superblock_and_before_the_log():
    assert omf.SUPERBLOCK_STRUCT_SIZE <= changes.AREA
    assert changes.AREA + changes.AREA_SIZE <= omf.LOG_OFFSET


def test_the_master_gives_a_slot_to_a_host_that_asks(hosts):
    master, client = hosts
    area, asking = _area(master), _area(client)
    assert not asking.valid()  # nothing until the master formats it
    area.format(MASTER)
    assert asking.valid() and asking.table() == {MASTER: changes.MASTER_SLOT}
    asking.request(CLIENT)
    assert area.serve_request() == (CLIENT, 1)
    assert area.serve_request() is None  # the same request again: nothing new
    assert asking.table() == {MASTER: 0, CLIENT: 1}
    other = uuid.UUID("11111111-2222-4333-8444-555555555555")
    asking.request(other)
    asking.request(CLIENT)  # another request overwrote it: that host asks again later
    assert area.serve_request() is None
    asking.request(other)
    assert area.serve_request() == (other, 2)


def test_a_listener_follows_a_writer_and_ignores_its_own_slot(hosts):
    master, client = hosts
    area = _area(master)
    area.format(MASTER)
    listener = changes.Listener(_area(client))
    assert listener.poll() == []
    writer = changes.Announcer(area, 0)
    writer.announce(Change(16, 4096, 8))
    writer.announce(Change(17, 0, changes.WHOLE))
    assert listener.poll() == [Change(16, 4096, 8), Change(17, 0, changes.WHOLE)]
    assert listener.poll() == []
    own = changes.Listener(area, own_slot=0)
    writer.announce(Change(16, 0, 1))
    assert own.poll() == []


def test_a_change_recorded_but_not_published_is_published_at_the_next_start(hosts):
    master, client = hosts
    area = _area(master)
    area.format(MASTER)
    listener = changes.Listener(_area(client))
    writer = changes.Announcer(area, 0)
    writer.prepare(Change(16, 0, 8))  # ... and the daemon dies before publish()
    assert listener.poll() == []  # nobody waits for it, nobody sees it yet
    again = changes.Announcer(area, 0)
    assert again.recovered and listener.poll() == [Change(16, 0, 8)]
    assert not changes.Announcer(area, 0).recovered  # once only


def test_a_reader_that_fell_behind_or_finds_a_torn_record_drops_everything(hosts):
    master, client = hosts
    area = _area(master)
    area.format(MASTER)
    listener = changes.Listener(_area(client))
    writer = changes.Announcer(area, 0)
    for i in range(changes.RING + 1):
        writer.announce(Change(16, i, 1))
    assert listener.poll() == [EVERYTHING]
    writer.announce(Change(16, 0, 1))
    master.mem.write(changes.record_offset(0, writer.seq - 1) + 9, b"torn")
    assert listener.poll() == [EVERYTHING]


def test_what_another_filesystem_left_in_the_region_is_not_taken_for_ours(hosts, tmp_path):
    master, client = hosts
    area = _area(master)
    area.format(MASTER)
    changes.Announcer(area, 0).announce(Change(16, 0, 8))
    stranger = changes.Area(master.mem, master.coherency, uuid.uuid4())
    assert not stranger.valid() and stranger.table() == {}
    assert stranger.head(0) is None and stranger.record(0, 0) is None


def test_a_batch_is_published_by_one_head_and_followed_whole(hosts):
    master, client = hosts
    area = _area(master)
    area.format(MASTER)
    listener = changes.Listener(_area(client))
    writer = changes.Announcer(area, 0)
    batch = [Change(100 + i, 0, 4096) for i in range(changes.BATCH + 3)]  # two heads
    writer.announce_many(batch)
    assert writer.seq == len(batch)
    assert listener.poll() == batch


def test_a_batch_recorded_but_not_published_is_published_whole_at_the_next_start(hosts):
    master, client = hosts
    area = _area(master)
    area.format(MASTER)
    listener = changes.Listener(_area(client))
    writer = changes.Announcer(area, 0)
    writer.announce(Change(15, 0, 1))
    assert listener.poll() == [Change(15, 0, 1)]
    batch = [Change(16 + i, 0, 8) for i in range(5)]
    for ahead, change in enumerate(batch):  # announce_many's records, then the daemon dies
        writer.prepare(change, ahead)
    assert listener.poll() == []
    again = changes.Announcer(area, 0)
    assert again.recovered and again.seq == 6 and listener.poll() == batch
