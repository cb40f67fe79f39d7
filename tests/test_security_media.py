"""Another host writing the shared memory behind the hosts' backs (issue 28 items 3, 8, 9): a
foreign append, forged counters, a `mkfs -f` of the memory two hosts have mounted. Every
host notices, says what happened, and serves nothing it cannot stand behind."""

from __future__ import annotations

import pytest
from helpers import MiB, wait_until

from famfs_py import omf, protocol, replies
from famfs_py.channel import Channel


@pytest.fixture
def mounted_pair(pair, mounts, tmp_path):
    master, client = pair
    mmp = mounts.mount(master, tmp_path / "mnt-master")
    cmp = mounts.mount(client, tmp_path / "mnt-client")
    return master, client, mmp, cmp


def _committed(memory) -> int:
    with open(memory, "rb") as f:
        f.seek(omf.LOG_OFFSET + omf.COUNTERS_OFFSET + 8)
        return int.from_bytes(f.read(8), "little")


def foreign_append(memory, payload: omf.FileMeta | omf.MkdirMeta) -> int:
    """Append one valid entry and commit it, as a second writer on another host would."""
    index = _committed(memory)
    with open(memory, "r+b") as f:
        f.seek(omf.LOG_OFFSET + omf.entry_offset(index))
        f.write(omf.LogEntry.new(index, payload).pack())
        f.seek(omf.LOG_OFFSET + omf.COUNTERS_OFFSET)
        f.write(omf.pack_counters(index + 1, index + 1))
    return index


def file_over(path: str, offset: int, length: int = 2 * MiB) -> omf.FileMeta:
    fmap = omf.SimpleFmap((omf.Extent(offset, length),))
    return omf.FileMeta(length, omf.FM_ALL_HOSTS_RW, 0, 0, 0o666, path, fmap)


def _logplay(mp) -> replies.LogplayReply:
    with Channel(str(mp)) as chan:
        return chan.call(protocol.Logplay())


def test_replay_refuses_files_over_the_superblock_or_the_log(mounted_pair):
    """Item 9: such a file was served, and an ordinary user writing it destroyed the log."""
    master, client, mmp, cmp = mounted_pair
    master.ok("creat", "-s", "1m", mmp / "first")
    wait_until(lambda: (cmp / "first").exists(), what="the client following")
    memory = master.memory()
    over_log = foreign_append(memory, file_over("over-log", omf.LOG_OFFSET))
    inside = foreign_append(memory, file_over("inside-log", omf.LOG_OFFSET + 4 * MiB))
    straddling = foreign_append(memory, file_over("straddling", omf.LOG_OFFSET + 6 * MiB, 4 * MiB))

    def followed() -> replies.LogplayReply | None:
        reply = _logplay(cmp)
        return reply if reply.entries > straddling else None

    reply = wait_until(followed, what="the client reading the new entries")
    for name in ("over-log", "inside-log", "straddling"):
        assert not (cmp / name).exists(), name
    for index in (over_log, inside, straddling):
        assert any(
            b.startswith(f"log entry {index}:") and "over the superblock and log" in b
            for b in reply.bad
        ), reply.bad
    assert (cmp / "first").exists()
