"""famfs_py.arrow: tables written on the master, read zero-copy on a client (issue 26).

Two emulated hosts share one memory; the client is mounted with `-c always` so that pages a
reader pulls through the mount stay in its page cache, where `fincore` counts them: a
read that copies shows there, a zero-copy read does not."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
from helpers import MiB, as_user, device_ranges, resident, wait_until

pa = pytest.importorskip("pyarrow")
import pyarrow.dataset as pads  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from famfs_py import arrow as famfs_arrow  # noqa: E402
from famfs_py import publish  # noqa: E402
from famfs_py.lease import CopyWarning, WrongFormat  # noqa: E402


@pytest.fixture
def hosts(pair, mounts, tmp_path):
    """(master, client, master's mount, client's mount with the page cache kept)."""
    master, client = pair
    mmp = mounts.mount(master, tmp_path / "m1")
    cmp_ = mounts.mount(client, tmp_path / "m2", "-c", "always")
    return master, client, mmp, cmp_


def small_table(n: int = 100_000, start: int = 0):
    return pa.table(
        {
            "id": pa.array(range(start, start + n), pa.int64()),
            "x": pa.array([i * 0.5 for i in range(start, start + n)], pa.float64()),
            "name": pa.array([f"row{i}" for i in range(start, start + n)]),
        }
    )


def all_in_device(table, memory: Path) -> bool:
    """Every buffer of `table` lies in a mapping of the device's memory."""
    ranges = device_ranges(memory)
    for column in table.columns:
        for chunk in column.chunks:
            for buf in chunk.buffers():
                if buf is None:
                    continue
                if not any(lo <= buf.address and buf.address + buf.size <= hi for lo, hi in ranges):
                    return False
    return True


def wait_seen(path: Path) -> None:
    wait_until(path.exists, timeout=30, what=f"{path} appearing")


def test_master_writes_a_table_the_client_reads_it_zero_copy(hosts):
    master, client, mmp, cmp_ = hosts
    table = small_table()
    famfs_arrow.write_table(table, mmp / "t.arrow")
    assert os.path.getsize(mmp / "t.arrow") == famfs_arrow.ipc_size(table)  # exactly
    wait_seen(cmp_ / "t.arrow")
    got = famfs_arrow.read_table(cmp_ / "t.arrow")
    assert got.equals(table)
    assert all_in_device(got, client.memory())
    assert resident(cmp_ / "t.arrow") == 0  # nothing came through the page cache
    assert famfs_arrow.read_table(cmp_ / "t.arrow", columns=["x"]).column_names == ["x"]


READER = textwrap.dedent(
    """
    import json, sys
    import pyarrow, pyarrow.compute, pyarrow.ipc
    from famfs_py import arrow

    def rss():
        fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
        return {k: int(fields[k].split()[0]) << 10 for k in ("RssAnon", "RssFile", "RssShmem")}

    path, how = sys.argv[1], sys.argv[2]
    before = rss()
    if how == "famfs":
        table = arrow.read_table(path)
    else:  # what a new user would do: pyarrow's own memory map, through the mount
        table = pyarrow.ipc.open_file(pyarrow.memory_map(path)).read_all()
    total = pyarrow.compute.sum(table.column("v")).as_py()  # touches every byte
    after = rss()
    print(json.dumps({"sum": total, **{k: after[k] - before[k] for k in after}}))
    """
)


def test_a_256_mib_table_adds_no_anonymous_memory_nor_page_cache_on_the_client(hosts):
    numpy = pytest.importorskip("numpy")
    master, client, mmp, cmp_ = hosts
    values = numpy.arange(32 * MiB, dtype=numpy.int64)  # 256 MiB
    famfs_arrow.write_table(pa.table({"v": values}), mmp / "big.arrow")
    expected = int(values.sum())
    del values
    wait_seen(cmp_ / "big.arrow")

    def read(how: str) -> dict:
        run = subprocess.run(
            [sys.executable, "-c", READER, str(cmp_ / "big.arrow"), how],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stderr
        return json.loads(run.stdout)

    ours = read("famfs")
    assert ours["sum"] == expected
    assert ours["RssAnon"] + ours["RssFile"] < 8 * MiB, ours
    assert resident(cmp_ / "big.arrow") == 0
    theirs = read("mount")  # the measurement sees a copy where there is one
    assert theirs["sum"] == expected
    assert resident(cmp_ / "big.arrow") > 200 * MiB


def test_a_dataset_of_tables_scans_zero_copy_and_parquet_reads_from_device_memory(hosts, tmp_path):
    master, client, mmp, cmp_ = hosts
    master.ok("mkdir", mmp / "ds")
    parts = [small_table(50_000, start=i * 50_000) for i in range(3)]
    for i, part in enumerate(parts):
        famfs_arrow.write_table(part, mmp / "ds" / f"part-{i}.arrow")
    local = tmp_path / "t.parquet"
    pq.write_table(pa.concat_tables(parts), local)
    master.ok("cp", local, mmp / "t.parquet")
    wait_seen(cmp_ / "t.parquet")
    wait_seen(cmp_ / "ds" / "part-2.arrow")

    fs = famfs_arrow.FamfsFileSystem()
    dataset = pads.dataset(str(cmp_ / "ds"), filesystem=fs, format="ipc")
    scanned = dataset.to_table().sort_by("id")
    assert scanned.equals(pa.concat_tables(parts))
    unsorted = dataset.to_table()
    assert all_in_device(unsorted, client.memory())
    assert pads.dataset(f"famfs://{cmp_ / 'ds'}", filesystem=fs, format="ipc").count_rows() == (
        150_000
    )

    assert pq.read_table(str(cmp_ / "t.parquet"), filesystem=fs).equals(pa.concat_tables(parts))
    assert resident(cmp_ / "t.parquet") == 0
    for name in ("part-0.arrow", "part-1.arrow", "part-2.arrow"):
        assert resident(cmp_ / "ds" / name) == 0


def test_a_reader_without_device_access_gets_the_same_table_and_one_warning(public_mount):
    host, mp = public_mount
    table = small_table(1000)
    famfs_arrow.write_table(table, mp / "t.arrow")

    def read() -> str:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            got = famfs_arrow.read_table(mp / "t.arrow")
        said = [str(w.message) for w in caught if issubclass(w.category, CopyWarning)]
        assert len(said) == 1 and "\n" not in said[0], said
        assert "through the mount" in said[0] and "copies" in said[0], said
        return f"{got.equals(table)} {said[0]}"

    result = as_user(65534, read)
    assert result.startswith("ok True "), result


def test_wrong_formats_are_named(fresh, mounts, tmp_path):
    mp = mounts.mount(fresh)
    local = tmp_path / "t.parquet"
    pq.write_table(small_table(10), local)
    fresh.ok("cp", local, mp / "t.parquet")
    fresh.ok("creat", "-s", "4k", mp / "zeros")
    with pytest.raises(WrongFormat, match=r"t\.parquet is not an Arrow IPC file \(it is a Parquet"):
        famfs_arrow.read_table(mp / "t.parquet")
    with pytest.raises(WrongFormat, match="zeros: never written"):
        famfs_arrow.read_table(mp / "zeros")
    with pytest.raises(OSError, match="not in a famfs-py mount"):
        famfs_arrow.read_table(local)
    fresh.ok("creat", "-s", "4k", mp / "cut.arrow")
    with open(mp / "cut.arrow", "r+b") as f:  # an Arrow file's magic, then nothing
        f.write(b"ARROW1\0\0")
    with pytest.raises(WrongFormat, match=r"cut\.arrow is not a complete Arrow IPC file"):
        famfs_arrow.read_table(mp / "cut.arrow")


def test_write_table_refuses_an_existing_file_and_loses_nothing(fresh, mounts):
    mp = mounts.mount(fresh)
    table = small_table(10)
    famfs_arrow.write_table(table, mp / "t.arrow")
    with pytest.raises(FileExistsError):
        famfs_arrow.write_table(small_table(20), mp / "t.arrow")
    assert famfs_arrow.read_table(mp / "t.arrow").equals(table)


def test_a_poisoned_table_raises_eio(fresh, mounts):
    mp = mounts.mount(fresh)
    famfs_arrow.write_table(small_table(10), mp / "t.arrow")
    getmap = json.loads(fresh.ok("getmap", "--json", mp / "t.arrow").stdout)
    offset = int(getmap[0]["extents"][0]["offset"])
    fresh.ok("dax", "inject-error", "dax0.0", "--offset", str(offset), "--length", "4096")
    with pytest.raises(OSError) as info:
        famfs_arrow.read_table(mp / "t.arrow")
    assert info.value.errno == errno.EIO
    with pytest.raises(OSError) as info:
        pads.dataset(str(mp / "t.arrow"), filesystem=famfs_arrow.FamfsFileSystem(), format="ipc")
    assert info.value.errno == errno.EIO  # the daemon's errno, through pyarrow


HOLDER = textwrap.dedent(
    """
    import sys
    import pyarrow.compute
    from famfs_py import arrow
    table = arrow.read_table(sys.argv[1])
    print(pyarrow.compute.sum(table.column("id")).as_py(), flush=True)
    sys.stdin.readline()                      # the device is removed meanwhile
    print(pyarrow.compute.sum(table.column("id")).as_py(), flush=True)
    """
)


def test_a_table_in_use_when_the_device_is_removed_faults_as_the_mapped_api_says(fresh, mounts):
    mp = mounts.mount(fresh)
    famfs_arrow.write_table(small_table(1000), mp / "t.arrow")
    memory = fresh.memory()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(mp / "t.arrow")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == str(sum(range(1000)))
        inode = os.stat(memory).st_ino
        maps = Path(f"/proc/{holder.pid}/maps")

        def maps_device() -> bool:
            return any(
                len(f := line.split()) >= 6 and int(f[4]) == inode
                for line in maps.read_text().splitlines()
            )

        assert maps_device()
        fresh.ok("dax", "remove", "dax0.0")
        wait_until(lambda: not maps_device(), timeout=30, what="the holder's mapping withdrawn")
        holder.stdin.write("go\n")
        holder.stdin.flush()
        assert holder.wait(timeout=30) == -signal.SIGSEGV  # touching it faults
    finally:
        holder.kill()
        holder.wait()


def test_publication_waits_for_the_whole_table(hosts):
    """No other host sees a table before it is complete: the write goes through the
    master's mount and is logged only at its commit (issue 24)."""
    master, client, mmp, cmp_ = hosts
    table = small_table(10_000)
    seen_during_write: list[bool] = []

    def fill(f) -> None:
        sink = pa.PythonFile(f, mode="w")
        with pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
            client.ok("logplay", cmp_)  # the client replays everything logged so far
            seen_during_write.append((cmp_ / "t.arrow").exists())

    publish.write_new(mmp / "t.arrow", famfs_arrow.ipc_size(table), fill)
    assert seen_during_write == [False]
    wait_seen(cmp_ / "t.arrow")
    assert famfs_arrow.read_table(cmp_ / "t.arrow").equals(table)


def test_a_write_that_fails_publishes_nothing(hosts):
    master, client, mmp, cmp_ = hosts

    def fill(f) -> None:
        f.write(b"ARROW1\0\0" + bytes(1000))
        raise RuntimeError("the writer failed half way")

    with pytest.raises(RuntimeError, match="half way"):
        publish.write_new(mmp / "t.arrow", 4096, fill)
    assert not (mmp / "t.arrow").exists()  # created through the mount, dropped before its commit
    client.ok("logplay", cmp_)
    assert not (cmp_ / "t.arrow").exists()


def test_parquet_written_through_the_filesystem_is_created_through_the_mount(hosts):
    master, client, mmp, cmp_ = hosts
    fs = famfs_arrow.FamfsFileSystem()
    table = small_table(1000)
    pq.write_table(table, str(mmp / "w.parquet"), filesystem=fs)
    wait_seen(cmp_ / "w.parquet")
    assert pq.read_table(str(cmp_ / "w.parquet"), filesystem=fs).equals(table)
    with pytest.raises(FileExistsError):
        fs.open_output_stream(str(mmp / "w.parquet"))
