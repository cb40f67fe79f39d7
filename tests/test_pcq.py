"""`famfs-py pcq`: upstream's producer/consumer queue, driven as upstream's smoke test drives
it, between two processes, between two simulated hosts, and against an independent C
implementation of the queue's layout (tests/data/pcq_peer.c) on the same memory."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from helpers import BIN, REPO, Host, Result, assert_no_traceback, wait_until

from famfs_py import pcq

PEER_SOURCE = REPO / "tests" / "data" / "pcq_peer.c"


@pytest.fixture
def fs(fresh, mounts):
    return fresh, mounts.mount(fresh)


@pytest.fixture
def two_hosts(pair, mounts, tmp_path):
    """The master and a client mounted --rw (it writes the consumer file)."""
    master, client = pair
    mmp = mounts.mount(master, tmp_path / "mnt-master")
    cmp_ = mounts.mount(client, tmp_path / "mnt-client", "--rw")
    return master, client, mmp, cmp_


def _counts(result: Result) -> dict[str, int]:
    """The numbers of upstream's summary lines (nsent, nreceived, nerrors, ...)."""
    found: dict[str, int] = {}
    for role in ("producer", "consumer", "drain"):
        line = next((ln for ln in result.stdout.splitlines() if ln.startswith(f"pcq {role}:")), "")
        for key, value in re.findall(r"(\w+)=(-?\d+)", line):
            found[f"{role}.{key}"] = int(value)
    return found


def _pcq(host: Host, *args, expect: int = 0, timeout: float = 120) -> Result:
    result = host.cli("pcq", *args, timeout=timeout)
    assert result.returncode == expect, f"pcq {args}: rc {result.returncode}\n{result.out}"
    assert_no_traceback(result)
    return result


def _start(host: Host, *args) -> subprocess.Popen:
    return subprocess.Popen(
        [str(BIN / "famfs-py"), "pcq", *map(str, args)],
        env={**os.environ, **host.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen, timeout: float = 120) -> Result:
    out, err = proc.communicate(timeout=timeout)
    return Result(proc.returncode, out, err)


def _status_value(path: Path) -> int:
    return int(path.read_text())


# -- the command line ------------------------------------------------------------------------


def test_bad_option_combinations_fail_as_upstreams_do(fs, tmp_path):
    host, mp = fs
    assert "producer/consumer queue" in _pcq(host, "-?").stdout
    for args in (
        ("--info", "--create", mp / "q"),
        ("--drain", "--producer", mp / "q"),
        ("--time", "10", "--nmessages", "100", mp / "q"),
        ("--create", mp / "q"),  # no bsize
        ("--create", "-D", "-v", "--bsize", "1024", "--nbuckets", "1024"),  # no file
        ("--producer", mp / "q"),  # neither -N nor --time
        ("-u", "0", "--info", mp / "q"),  # uid without create
        ("--setperm", "p", "--producer", mp / "q"),
        ("--producer", "-N", "1", "--seed", str(1 << 32), mp / "q"),  # seed without low bits
        (mp / "q",),  # nothing to do
    ):
        result = _pcq(host, *args, expect=2)
        assert result.stderr.count("\n") == 1, result.stderr
    assert not (mp / "q").exists()
    bad = _pcq(host, "--create", "-b", "1000", "-n", "16", mp / "q", expect=1)
    assert "power of 2" in bad.stderr
    _pcq(host, "--create", "-b", "1024", "-n", "16", mp / "q")
    again = _pcq(host, "--create", "-b", "1024", "-n", "16", mp / "q", expect=1)
    assert "already exists" in again.stderr
    perm = _pcq(host, "--setperm", "c", mp / "q", expect=1)
    assert "not supported" in perm.stderr
    missing = _pcq(host, "--info", mp / "nothere", expect=1)
    assert "not found" in missing.stderr
    notq = _pcq(host, "--info", mp / "q.consumer", expect=1)  # no q.consumer.consumer
    assert "not found" in notq.stderr


def test_the_layout_and_sizes_are_upstreams(fs):
    host, mp = fs
    _pcq(host, "--create", "-b", "64k", "-n", "512", mp / "q")
    assert (mp / "q").stat().st_size == (2 << 20) + 512 * 65536
    assert (mp / "q.consumer").stat().st_size == 2 << 20
    assert oct((mp / "q").stat().st_mode & 0o777) == "0o644"
    raw_p = (mp / "q").read_bytes()[: pcq.P_END]
    raw_c = (mp / "q.consumer").read_bytes()
    u64 = lambda raw, at: int.from_bytes(raw[at : at + 8], "little")
    assert [u64(raw_p, 8 * i) for i in range(5)] == [0xBEEBEE3, 512, 65536, 2 << 20, 0]
    assert u64(raw_p, 1064) == 0 and u64(raw_p, 1072) == (2 << 20) + 512 * 65536
    assert int.from_bytes(raw_c[0:4], "little") == 0xBEEBEE4 and u64(raw_c, 8) == 0
    assert u64(raw_c, 1048592) == 0 and u64(raw_c, 1048600) == 2 << 20


def test_upstreams_smoke_sequence_on_one_host(fs, tmp_path):
    """test_pcq.sh's steps: create queues of several geometries, info, drain empty, put 128,
    consume 64, drain 64, producer+consumer in one process with a seed, timed runs."""
    host, mp = fs
    status = tmp_path / "status"
    geometries = {"q1": ("64", "1K"), "q2": ("64K", "512")}
    for name, (bsize, nbuckets) in geometries.items():
        created = _pcq(host, "--create", "-v", "--bsize", bsize, "--nbuckets", nbuckets, mp / name)
        assert f"Created queue {mp / name}" in created.stdout
    for name in geometries:
        info = _pcq(host, "--info", "-v", mp / name)
        assert "contains 0 messages p next_seq 0 c next_seq 0" in info.stdout
        drained = _pcq(host, "--drain", "-v", mp / name)
        assert _counts(drained)["drain.nreceived"] == 0
        _pcq(host, "--producer", "-v", "-N", "128", "--statusfile", status, mp / name)
        assert _status_value(status) == 128
        _pcq(host, "--consumer", "-N", "64", "-v", "--statusfile", status, mp / name)
        assert _status_value(status) == 64
        assert "contains 64 messages" in _pcq(host, "--info", mp / name).stdout
        drained = _pcq(host, "--drain", "-v", "--statusfile", status, mp / name)
        assert _status_value(status) == 64 and _counts(drained)["drain.nerrors"] == 0
        _pcq(host, "-pc", "--seed", "43", "-N", "1000", "--statusfile", status, mp / name)
        assert _status_value(status) == 2000
        info = _pcq(host, "--info", mp / name)
        assert "contains 0 messages p next_seq 1128 c next_seq 1128" in info.stdout
    timed = _pcq(host, "-pc", "-s", "1", "--time", "2", mp / "q1")
    counts = _counts(timed)
    assert counts["producer.nsent"] > 0 and counts["consumer.nreceived"] > 0
    assert counts["producer.nerrors"] == counts["consumer.nerrors"] == 0
    assert re.search(r"^\d\d-\d\d \d\d:\d\d:\d\d pcq=\S+ prod\(nsent=\d+", timed.stdout, re.M)
    left = counts["producer.nsent"] - counts["consumer.nreceived"]
    assert f"contains {left} messages" in _pcq(host, "--info", mp / "q1").stdout
    drained = _pcq(host, "--drain", mp / "q1")
    assert _counts(drained)["drain.nreceived"] == left
    assert "contains 0 messages" in _pcq(host, "--info", mp / "q1").stdout


def test_producer_and_consumer_in_two_processes(fs):
    host, mp = fs
    _pcq(host, "--create", "-b", "256", "-n", "64", mp / "q")
    consumer = _start(host, "--consumer", "-N", "20000", "--seed", "7", mp / "q")  # waits
    produced = _pcq(host, "--producer", "-N", "20000", "--seed", "7", mp / "q")
    consumed = _finish(consumer)
    assert consumed.returncode == 0, consumed.out
    assert _counts(produced)["producer.nsent"] == 20000
    counts = _counts(consumed)
    assert counts["consumer.nreceived"] == 20000 and counts["consumer.nerrors"] == 0
    assert _counts(produced)["producer.nfull"] > 0  # 63 slots: the producer had to wait


# -- two hosts -------------------------------------------------------------------------------


@pytest.mark.parametrize("producer_on,count", [("master", 100000), ("client", 20000)])
def test_messages_between_two_hosts_none_lost_duplicated_or_corrupt(
    two_hosts, producer_on, count, tmp_path
):
    master, client, mmp, cmp_ = two_hosts
    _pcq(master, "--create", "-b", "1024", "-n", "1024", mmp / "q")
    wait_until(lambda: (cmp_ / "q").exists() and (cmp_ / "q.consumer").exists(), 10, "the queue")
    sender, sender_mp = (master, mmp) if producer_on == "master" else (client, cmp_)
    receiver, receiver_mp = (client, cmp_) if producer_on == "master" else (master, mmp)
    status = tmp_path / "status"
    consumer = _start(
        receiver, "--consumer", "-N", count, "--seed", "42", "-f", status, receiver_mp / "q"
    )
    produced = _pcq(sender, "--producer", "-N", count, "--seed", "42", sender_mp / "q")
    consumed = _finish(consumer)
    assert consumed.returncode == 0, consumed.out
    counts = _counts(consumed)
    # every sequence number arrived once and in order (a lost or duplicated message is a
    # sequence mismatch), every CRC and every payload was right
    assert counts["consumer.nreceived"] == count
    assert counts["consumer.nerrors"] == 0
    assert _counts(produced)["producer.nsent"] == count
    assert _status_value(status) == count
    for host, where in ((master, mmp), (client, cmp_)):
        info = _pcq(host, "--info", where / "q")
        assert f"contains 0 messages p next_seq {count} c next_seq {count}" in info.stdout
    # the instruction path ran on both sides
    for result in (produced, consumed):
        line = next(ln for ln in result.stdout.splitlines() if ln.startswith("pcq cache:"))
        flushes = int(re.search(r"(\d+) flushes", line).group(1))
        assert line.startswith("pcq cache: on") and flushes >= count, line


def test_a_consumer_on_a_client_without_rw_is_told_why(pair, mounts, tmp_path):
    master, client = pair
    mmp = mounts.mount(master, tmp_path / "m1")
    cmp_ = mounts.mount(client, tmp_path / "m2")
    _pcq(master, "--create", "-b", "1024", "-n", "16", mmp / "q")
    wait_until(lambda: (cmp_ / "q.consumer").exists(), 10, "the queue on the client")
    refused = _pcq(client, "--consumer", "-N", "1", cmp_ / "q", expect=1)
    assert "--rw" in refused.stderr
    assert "contains 0 messages" in _pcq(client, "--info", cmp_ / "q").stdout


# -- errors are found ------------------------------------------------------------------------


def _device_offset(host: Host, path: Path) -> int:
    maps = json.loads(host.ok("getmap", "--json", path).stdout)
    (extent,) = maps[0]["extents"]
    return extent["offset"]


def _poke(host: Host, offset: int, data: bytes) -> None:
    fd = os.open(host.memory(), os.O_RDWR)
    try:
        os.pwrite(fd, data, offset)
    finally:
        os.close(fd)


def test_corrupt_messages_are_errors_not_deliveries(fs, tmp_path):
    host, mp = fs
    status = tmp_path / "status"
    _pcq(host, "--create", "-b", "128", "-n", "16", mp / "q")
    _pcq(host, "--producer", "-N", "4", mp / "q")
    bucket1 = _device_offset(host, mp / "q") + (2 << 20) + 128
    _poke(host, bucket1 + 5, b"\xff")  # a payload byte of message 1
    bad = _pcq(host, "--consumer", "-N", "4", "-f", status, mp / "q", expect=1)
    counts = _counts(bad)
    assert counts["consumer.nreceived"] == 1 and counts["consumer.nerrors"] == 1
    assert counts["consumer.retries"] == 1  # the bucket was invalidated and read again
    assert "bad crc" in bad.stderr and _status_value(status) == -1

    # a message with a valid CRC but the wrong sequence number (a duplicate)
    q2 = mp / "q2"
    _pcq(host, "--create", "-b", "128", "-n", "16", q2)
    _pcq(host, "--producer", "-N", "3", q2)
    base = _device_offset(host, q2) + (2 << 20)
    with open(host.memory(), "rb") as f:
        f.seek(base)
        first = f.read(128)
    _poke(host, base + 128, first)  # bucket 1 := a copy of bucket 0 (seq 0)
    dup = _pcq(host, "--consumer", "-N", "3", q2, expect=1)
    assert "seq mismatch 0 / 1" in dup.stderr

    # the payload checked against the seed
    q3 = mp / "q3"
    _pcq(host, "--create", "-b", "256", "-n", "16", q3)
    _pcq(host, "--producer", "-N", "2", "--seed", "1", q3)
    wrong = _pcq(host, "--consumer", "-N", "2", "--seed", "2", q3, expect=1)
    assert "miscompare seq=0 ofs=0" in wrong.stderr
    assert _counts(wrong)["consumer.nerrors"] == 2


# -- the other implementation ----------------------------------------------------------------


@pytest.fixture(scope="module")
def peer(tmp_path_factory) -> Path:
    """pcq_peer, built from its C source (gcc is part of the setup)."""
    binary = tmp_path_factory.mktemp("peer") / "pcq_peer"
    subprocess.run(
        ["gcc", "-O2", "-Wall", "-Werror", "-o", str(binary), str(PEER_SOURCE)], check=True
    )
    return binary


def test_the_c_compiler_places_every_field_where_famfs_py_does(peer):
    out = subprocess.run([peer, "layout"], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == [
        f"producer_index {pcq.P_INDEX} next_seq {pcq.P_NEXT_SEQ} pcq_size {pcq.P_SIZE} "
        f"end {pcq.P_END}",
        f"consumer_index {pcq.C_INDEX} next_seq {pcq.C_NEXT_SEQ} pcqc_size {pcq.C_SIZE} "
        f"end {pcq.C_END}",
        f"crc {pcq.TRAILER - 8}",
    ]


def _peer(peer: Path, host: Host, mp: Path, mode: str, *args) -> subprocess.CompletedProcess:
    place = [
        str(host.memory()),
        str(_device_offset(host, mp / "q")),
        str((mp / "q").stat().st_size),
        str(_device_offset(host, mp / "q.consumer")),
        str((mp / "q.consumer").stat().st_size),
    ]
    return subprocess.run(
        [str(peer), mode, *place, *map(str, args)], capture_output=True, text=True, timeout=180
    )


def test_c_peer_and_famfs_py_exchange_both_ways(fs, peer):
    host, mp = fs
    _pcq(host, "--create", "-b", "512", "-n", "64", mp / "q")
    # the C peer produces while famfs-py consumes (the queue holds 63 messages)
    consumer = _start(host, "--consumer", "-N", "5000", "--seed", "9", mp / "q")
    sent = _peer(peer, host, mp, "produce", 5000, 9)
    consumed = _finish(consumer)
    assert sent.returncode == 0 and sent.stdout.strip() == "sent 5000", sent.stderr
    assert consumed.returncode == 0, consumed.out
    assert _counts(consumed)["consumer.nreceived"] == 5000
    # famfs-py produces while the C peer consumes
    producer = _start(host, "--producer", "-N", "5000", "--seed", "9", mp / "q")
    got = _peer(peer, host, mp, "consume", 5000, 9)
    produced = _finish(producer)
    assert produced.returncode == 0, produced.out
    assert got.returncode == 0 and got.stdout.strip() == "received 5000 errors 0", got.stderr
    info = _pcq(host, "--info", mp / "q").stdout
    assert "contains 0 messages p next_seq 10000 c next_seq 10000" in info


def test_a_queue_made_by_the_c_peer_is_served_by_famfs_py(fs, peer):
    host, mp = fs
    # the files as upstream's pcq_create makes them (famfs_mkfile), metadata by the C peer
    host.ok("creat", "-s", str((2 << 20) + 32 * 4096), mp / "q")
    host.ok("creat", "-s", "2m", mp / "q.consumer")
    made = _peer(peer, host, mp, "create", 32, 4096)
    assert made.returncode == 0, made.stderr
    assert "contains 0 messages" in _pcq(host, "--info", mp / "q").stdout
    both = _pcq(host, "-pc", "-N", "3000", "--seed", "5", mp / "q")
    assert _counts(both)["consumer.nreceived"] == 3000
    got_back = _pcq(host, "--producer", "-N", "20", "--seed", "5", mp / "q")
    assert _counts(got_back)["producer.nsent"] == 20
    got = _peer(peer, host, mp, "consume", 20, 5)
    assert got.stdout.strip() == "received 20 errors 0", got.stderr
