"""Batched creation (protocol.CreatMany, what `famfs-py cp` sends for each directory's files):
through a real daemon, each file is answered as its own Creat would be, a batch never lets a
caller do what single requests would refuse, its size is bounded, and the files it creates
are logged with one commit (a crash before it leaves none of them, after it all: see
test_reliability_crash.py)."""

from __future__ import annotations

import errno
import os

import pytest
from helpers import as_user

from famfs_py import omf, protocol, wire
from famfs_py.channel import Channel
from famfs_py.errors import FamfsError, ProtocolError
from famfs_py.replies import FileMapReply

NOBODY = 65534


@pytest.fixture
def fs(fresh, mounts):
    return fresh, mounts.mount(fresh)


def _log_entries(host) -> int:
    with open(host.memory(), "rb") as f:
        f.seek(omf.LOG_OFFSET)
        return omf.LogHeader.unpack(f.read(omf.LOG_HEADER_SIZE)).next_index


def test_each_file_of_a_batch_is_answered_as_its_own_creat(fs):
    host, mp = fs
    host.ok("mkdir", mp / "d")
    host.ok("creat", "-s", "8k", mp / "d" / "same")
    host.ok("creat", "-s", "8k", mp / "d" / "other")
    before = _log_entries(host)
    batch = protocol.CreatMany(
        (
            ("d/new1", 5000, 0o600),
            ("d/same", 8192, 0o644),  # there at this size: found, not made
            ("d/other", 4096, 0o644),  # there at another size
            ("nodir/f", 4096, 0o644),
            ("d/new2", 3 << 20, 0o644),
            (".meta/f", 4096, 0o644),
        ),
        uid=1001,
    )
    with Channel(str(mp)) as chan:
        answers = chan.call(batch).files
    new1, same, other, nodir, new2, meta = answers
    assert isinstance(new1, FileMapReply) and new1.created and new1.size == 5000
    assert isinstance(same, FileMapReply) and not same.created
    assert isinstance(other, FamfsError) and other.errno == errno.EEXIST
    assert "exists with size 8192, not 4096" in other.message
    assert isinstance(nodir, FamfsError) and nodir.errno == errno.ENOENT
    assert isinstance(new2, FileMapReply) and new2.created
    assert isinstance(meta, FamfsError)
    assert _log_entries(host) == before + 2  # the two files made: one commit held both
    st = os.stat(mp / "d" / "new1")
    assert (st.st_size, st.st_mode & 0o7777, st.st_uid) == (5000, 0o600, 1001)
    assert os.path.getsize(mp / "d" / "new2") == 3 << 20


def test_a_batch_lets_a_caller_do_nothing_single_creats_would_refuse(public_mount):
    host, mp = public_mount
    host.ok("mkdir", "-m", "0755", mp / "private")
    host.ok("mkdir", "-m", "0777", mp / "open")

    def batch() -> str:
        with Channel(str(mp)) as chan:
            answers = chan.call(
                protocol.CreatMany(
                    (("private/f", 4096, 0o644), ("open/f", 4096, 0o644), ("open/g", 4096, 0o644))
                )
            ).files
        return " ".join(f"errno{a.errno}" if isinstance(a, FamfsError) else "made" for a in answers)

    assert as_user(NOBODY, batch) == f"ok errno{errno.EACCES} made made"
    assert not (mp / "private" / "f").exists()
    assert os.stat(mp / "open" / "f").st_uid == NOBODY

    def as_root_owner() -> str:  # a stranger cannot give the files to someone else
        with Channel(str(mp)) as chan:
            answers = chan.call(protocol.CreatMany((("open/h", 4096, 0o644),), uid=0)).files
        return " ".join(f"errno{a.errno}" if isinstance(a, FamfsError) else "made" for a in answers)

    assert as_user(NOBODY, as_root_owner) == f"ok errno{errno.EPERM}"
    assert not (mp / "open" / "h").exists()


def test_a_batch_is_bounded_and_checked_as_a_whole(fs):
    host, mp = fs
    too_many = tuple((f"f{i}", 4096, 0o644) for i in range(protocol.CreatMany.MAX_FILES + 1))
    with pytest.raises(ProtocolError, match="at most 1024 files"):
        protocol.CreatMany(too_many).validate()
    before = _log_entries(host)
    with Channel(str(mp)) as chan:
        for bad in (
            b'{"op": "creat_many", "files": [["a", 4096]]}',
            b'{"op": "creat_many", "files": [["a", -1, 420]]}',
            b'{"op": "creat_many", "files": [["../a", 4096, 420]]}',
            b'{"op": "creat_many", "files": "abc"}',
        ):
            answer, _fds = chan.exchange(bad)
            with pytest.raises(FamfsError) as info:
                wire.decode_answer(answer)
            assert info.value.errno == errno.EINVAL, bad
    assert _log_entries(host) == before  # nothing of a malformed batch is made


def test_an_op_the_daemon_does_not_know_says_to_remount(fs):
    """A command newer than the mount's daemon (famfs-py upgraded under a running mount)."""
    host, mp = fs
    with Channel(str(mp)) as chan:
        answer, _fds = chan.exchange(b'{"op": "creat_many_v9", "files": []}')
    with pytest.raises(FamfsError) as info:
        wire.decode_answer(answer)
    assert info.value.errno == errno.EINVAL
    assert "unknown request 'creat_many_v9'" in info.value.message
    assert "unmount and mount again" in info.value.message
