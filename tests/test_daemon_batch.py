"""Batched creation (`creat_many`, what `cp -r` sends): through the real daemon, each item is
made or refused as its own creat/mkdir would be, the made ones are logged with one commit,
and a crash before that commit leaves none of the batch, after it all of it."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
from helpers import CLIENT_UUID, as_user, wait_gone
from plugins.famfs_switches import CRASH_ENV

from famfs_py import omf, protocol
from famfs_py.channel import Channel
from famfs_py.errors import FamfsError
from famfs_py.replies import FileMapReply, MkdirReply

NOBODY = 65534


def _batch(mp: Path, items: list, **kwargs) -> list:
    with Channel(str(mp)) as chan:
        return chan.call(protocol.CreatMany(tuple(items), **kwargs)).results


def _entries(host) -> int:
    report = json.loads(host.ok("fsck", "--json", "dax0.0").stdout)
    assert report["problems"] == 0 and report["collisions"] == 0, report
    return report["entries"]


def _log_header(host) -> omf.LogHeader:
    with open(host.memory(), "rb") as f:
        f.seek(omf.LOG_OFFSET)
        return omf.LogHeader.unpack(f.read(omf.LOG_HEADER_SIZE))


def test_a_batch_makes_what_it_can_and_says_why_for_each_of_the_rest(fresh, mounts):
    host = fresh
    mp = mounts.mount(host)
    host.ok("creat", "-s", "4096", mp / "there")
    results = _batch(
        mp,
        [
            ("d", None, 0o750),  # a directory, then files in it: the same batch
            ("d/a", 4096, 0o640),
            ("d/a", 4096, 0o644),  # again, the same size: the file as it is
            ("d/a", 8192, 0o644),  # again, another size
            ("there", 8192, 0o644),  # an existing file of another size
            ("there", 4096, 0o644),  # ... of its size
            ("nodir/x", 4096, 0o644),
            ("d/" + "n" * 100, 4096, 0o644),
            ("d/empty", 0, 0o644),
            ("d/huge", 1 << 50, 0o644),  # no space: nothing of it stays, the next fits
            ("d", None, 0o755),  # mkdir -p of what is there
            ("there/under", 4096, 0o644),
            ("d/b", 3 * omf.ALLOC_UNIT + 5, 0o600),
        ],
    )
    made, dir_again = results[0], results[10]
    assert isinstance(made, MkdirReply) and made.created == ["d"]
    assert isinstance(dir_again, MkdirReply) and dir_again.created == []
    a, a_again, b = results[1], results[2], results[12]
    assert isinstance(a, FileMapReply) and a.created and a.size == 4096
    assert isinstance(a_again, FileMapReply) and not a_again.created and a_again.ino == a.ino
    assert isinstance(b, FileMapReply) and b.created
    codes = {k: r.errno for k, r in enumerate(results) if isinstance(r, FamfsError)}
    assert codes == {
        3: errno.EEXIST,
        4: errno.EEXIST,
        6: errno.ENOENT,
        7: errno.ENAMETOOLONG,
        8: errno.EINVAL,
        9: errno.ENOSPC,
        11: errno.ENOTDIR,
    }, [str(r) for r in results]
    assert "d/a exists with size 4096, not 8192" in str(results[3])
    assert "d/huge: no space" in str(results[9])
    assert isinstance(results[5], FileMapReply) and not results[5].created
    # one entry per made object (d, d/a, d/b), with one commit
    header = _log_header(host)
    assert header.next_index == header.next_seqnum == 4
    assert sorted(os.listdir(mp / "d")) == ["a", "b"]
    assert oct(os.stat(mp / "d").st_mode & 0o7777) == "0o750"
    assert os.stat(mp / "d" / "b").st_size == 3 * omf.ALLOC_UNIT + 5
    assert os.stat(mp / "d" / "a").st_ino == a.ino
    host.ok("umount", mp)
    assert _entries(host) == 4
    mounts.mount(host, mp)  # replayed: the same tree, the same inodes
    assert sorted(os.listdir(mp / "d")) == ["a", "b"]
    assert os.stat(mp / "d" / "a").st_ino == a.ino
    host.ok("creat", "-s", "1m", mp / "after")  # the space of the refused items is free


def test_a_batch_is_refused_item_by_item_as_single_requests_would_be(public_mount):
    host, mp = public_mount
    host.ok("creat", "-s", "1m", "-m", "0600", mp / "secret")
    host.ok("mkdir", "-m", "0700", mp / "closed")
    host.ok("mkdir", "-m", "0755", "-u", str(NOBODY), "-g", str(NOBODY), mp / "theirs")

    def single(request):
        def action():
            with Channel(str(mp)) as chan:
                return chan.call(request)

        return action

    for request, code in (  # the rules the batch must keep
        (protocol.Creat("mine", 4096), errno.EACCES),
        (protocol.Creat("theirs/x", 4096, gid=0), errno.EPERM),
    ):
        assert as_user(NOBODY, single(request)).startswith(f"error {code}")

    def batch(items, **kwargs):
        def action():
            return [
                f"E{r.errno}" if isinstance(r, FamfsError) else type(r).__name__
                for r in _batch(mp, items, **kwargs)
            ]

        return action

    items = [
        ("theirs/ro", None, 0o555),  # the caller's own directory, which it may not write
        ("theirs/ro/f", 4096, 0o644),  # single requests refuse it once ro exists
        ("theirs/rw", None, 0o755),
        ("theirs/rw/f", 4096, 0o644),
        ("mine", 4096, 0o644),  # the root directory is root's
        ("closed/new", 4096, 0o644),  # a 0700 directory of root's
        ("secret", 1 << 20, 0o644),  # exists (its size), not the caller's to read
    ]
    text = as_user(NOBODY, batch(items))
    assert text == (
        "ok ['MkdirReply', 'E13', 'MkdirReply', 'FileMapReply', 'E13', 'E13', 'E13']"
    ), text
    assert os.stat(mp / "theirs" / "rw" / "f").st_uid == NOBODY
    assert not (mp / "theirs" / "ro" / "f").exists() and not (mp / "mine").exists()
    text = as_user(NOBODY, batch([("theirs/g", 4096, 0o644)], gid=0))  # another's group
    assert text.startswith(f"error {errno.EPERM}"), text
    assert not (mp / "theirs" / "g").exists()


def test_a_batch_over_the_limit_is_refused_whole(fresh, mounts):
    mp = mounts.mount(fresh)
    limit = protocol.CreatMany.MAX_ITEMS
    with Channel(str(mp)) as chan, pytest.raises(FamfsError) as caught:
        chan.call(protocol.CreatMany(tuple((f"f{i}", 1, 0o644) for i in range(limit + 1))))
    assert caught.value.errno == errno.EINVAL and f"at most {limit} items" in str(caught.value)
    assert os.listdir(mp) == [".meta"] and _log_header(fresh).next_index == 0
    assert len(_batch(mp, [(f"f{i}", 1, 0o644) for i in range(limit)])) == limit  # the limit: ok


def _daemon_pid(host, mp: Path) -> int:
    return int(json.loads(host.ok("status", "--json", mp).stdout)["daemon_pid"])


@pytest.mark.parametrize(
    ("step", "committed"),
    [("mid-entry", False), ("after-entry", False), ("mid-header", False), ("after-header", True)],
)
def test_a_crash_in_a_batch_leaves_none_of_it_or_all_of_it(
    pair, mounts, monkeypatch, tmp_path, step, committed
):
    """cp -r: its mkdir is the first append, its batch of files the second; the master dies
    at `step` of the batch's append. The client, mounted all along, agrees."""
    host, client = pair
    cmp = mounts.mount(client, tmp_path / "mnt-client")
    monkeypatch.setenv(CRASH_ENV, f"{step}:2")
    mp = mounts.mount(host)
    monkeypatch.delenv(CRASH_ENV)
    pid = _daemon_pid(host, mp)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(20):
        (src / f"f{i:02d}").write_bytes(os.urandom(1000 + i))
    killed = host.cli("cp", "-r", src, mp / "dst")
    assert killed.returncode != 0, killed.out
    wait_gone(pid)
    header = _log_header(host)
    assert header.next_index == (21 if committed else 1), header
    client.ok("logplay", cmp)
    assert (cmp / "dst").is_dir()
    assert sorted(os.listdir(cmp / "dst")) == (sorted(os.listdir(src)) if committed else [])
    host.ok("umount", mp)
    assert _entries(host) == (21 if committed else 1)
    mounts.mount(host, mp)
    assert sorted(os.listdir(mp / "dst")) == (sorted(os.listdir(src)) if committed else [])
    host.ok("cp", "-r", src, mp / "dst")  # the copy again: complete, nothing in the way
    for name in os.listdir(src):
        assert (mp / "dst" / name).stat().st_size == (src / name).stat().st_size


def test_cp_of_a_tree_of_small_files_reads_back_exactly_on_a_client(host_factory, mounts, tmp_path):
    master = host_factory("master")
    master.ok("dax", "create", "dax0.0", "--size", "4g")
    master.ok("mkfs", "--4k", "dax0.0")
    client = host_factory("client", CLIENT_UUID)
    client.ok("dax", "create", "dax0.0", "--share", master.node())
    cmp = mounts.mount(client, tmp_path / "mnt-client")
    mp = mounts.mount(master)
    src = tmp_path / "tree"
    contents = {}
    for i in range(600):
        name = f"d{i % 4}/" + (f"e{i % 3}/" if i % 5 == 0 else "") + f"f{i:04d}"
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        contents[name] = os.urandom(1 + (i * 97) % 12000)
        (src / name).write_bytes(contents[name])
    master.ok("cp", "-r", src, mp / "t")
    client.ok("logplay", cmp)
    for name, data in contents.items():
        assert (cmp / "t" / name).read_bytes() == data, name
