"""The fsspec protocol famfs:// (fsspec.open, pandas, Dask) and the README's data examples, run
as written on two emulated hosts (issue 26). The client keeps its page cache (`-c always`), so
`fincore` would count any read that went through the mount."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import warnings

import pytest
from helpers import as_user, readme_block, resident, wait_until

pa = pytest.importorskip("pyarrow")
fsspec = pytest.importorskip("fsspec")
pd = pytest.importorskip("pandas")
import pyarrow.parquet as pq  # noqa: E402

from famfs_py.fsspec import FamfsSpecFileSystem, MappedReader  # noqa: E402
from famfs_py.lease import CopyWarning  # noqa: E402


@pytest.fixture
def hosts(pair, mounts, tmp_path):
    master, client = pair
    mmp = mounts.mount(master, tmp_path / "m1")
    cmp_ = mounts.mount(client, tmp_path / "m2", "-c", "always")
    return master, client, mmp, cmp_


def trades(n: int, seed: int):
    symbols = ["ACME", "INIT", "ZETA"]
    return pd.DataFrame(
        {
            "symbol": [symbols[(i * seed) % 3] for i in range(n)],
            "qty": [(i * 7 + seed) % 100 for i in range(n)],
        }
    )


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    """`code` in a fresh interpreter (as a user would run it), with famfs-py importable."""
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )


def test_the_protocol_is_registered_through_the_entry_points():
    assert fsspec.get_filesystem_class("famfs") is FamfsSpecFileSystem


def test_fsspec_open_and_pandas_read_parquet_read_device_memory(hosts, tmp_path):
    master, client, mmp, cmp_ = hosts
    frame = trades(5000, 1)
    frame.to_parquet(tmp_path / "t.parquet")
    master.ok("cp", tmp_path / "t.parquet", mmp / "t.parquet")
    wait_until((cmp_ / "t.parquet").exists, timeout=30, what="the client seeing t.parquet")
    url = f"famfs://{cmp_ / 't.parquet'}"
    local = (tmp_path / "t.parquet").read_bytes()
    with fsspec.open(url) as f:
        assert isinstance(f, MappedReader)
        assert f.read(4) == b"PAR1"
        f.seek(-4, io.SEEK_END)
        assert f.read() == b"PAR1"
        f.seek(0)
        assert f.read() == local
    fs = fsspec.filesystem("famfs")
    assert fs.size(url) == len(local) and fs.isfile(url) and fs.isdir(f"famfs://{cmp_}")
    assert str(cmp_ / "t.parquet") in fs.ls(f"famfs://{cmp_}", detail=False)
    assert pd.read_parquet(url).equals(frame)
    assert resident(cmp_ / "t.parquet") == 0  # pandas read it from device memory


def test_writing_through_fsspec_goes_through_the_masters_mount(fresh, mounts):
    mp = mounts.mount(fresh)
    fs = fsspec.filesystem("famfs")
    with fs.open(f"famfs://{mp / 'w.bin'}", "wb") as f:
        f.write(b"hello")
    assert (mp / "w.bin").read_bytes() == b"hello"
    with pytest.raises(OSError, match="written once whole"):
        fs.open(f"famfs://{mp / 'w.bin'}", "ab")


def test_a_reader_without_device_access_reads_through_the_mount(public_mount, tmp_path):
    host, mp = public_mount
    (tmp_path / "x.bin").write_bytes(b"abc" * 1000)
    host.ok("cp", tmp_path / "x.bin", mp / "x.bin")

    def read() -> str:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with fsspec.open(f"famfs://{mp / 'x.bin'}") as f:
                data = f.read()
        said = [w for w in caught if issubclass(w.category, CopyWarning)]
        return f"{data == b'abc' * 1000} {len(said)}"

    assert as_user(65534, read) == "ok True 1"


def test_the_readmes_table_example_runs_as_written_on_two_hosts(hosts):
    master, client, mmp, cmp_ = hosts
    write = readme_block("arrow.write_table").replace("/mnt/famfs", str(mmp))
    run = run_python(write)
    assert run.returncode == 0, run.stderr
    wait_until((cmp_ / "prices.arrow").exists, timeout=30, what="the client seeing the table")
    read = readme_block("arrow.read_table").replace("/mnt/famfs", str(cmp_))
    run = run_python(read)
    assert run.returncode == 0, run.stderr
    assert "price_mean" in run.stdout and "10.75" in run.stdout and "3.25" in run.stdout
    assert resident(cmp_ / "prices.arrow") == 0


def test_the_readmes_dask_example_runs_as_written(hosts, tmp_path):
    pytest.importorskip("dask.dataframe")
    master, client, mmp, cmp_ = hosts
    local = tmp_path / "trades"
    local.mkdir()
    parts = [trades(2000, seed) for seed in (1, 2, 4)]
    for i, part in enumerate(parts):
        pq.write_table(pa.Table.from_pandas(part), local / f"part.{i}.parquet")
    master.ok("cp", "-r", local, mmp / "trades")
    wait_until(
        (cmp_ / "trades" / "part.2.parquet").exists, timeout=30, what="the client seeing them"
    )
    code = readme_block("dask.dataframe").replace("/mnt/famfs", str(cmp_))
    run = run_python(code)
    assert run.returncode == 0, run.stderr
    expected = pd.concat(parts).groupby("symbol").qty.sum().sort_index().to_dict()
    assert run.stdout.strip() == str(expected)
    for i in range(3):
        assert resident(cmp_ / "trades" / f"part.{i}.parquet") == 0


def test_dask_reads_through_the_pyarrow_filesystem_too(fresh, mounts, tmp_path):
    dd = pytest.importorskip("dask.dataframe")
    from famfs_py.arrow import FamfsFileSystem

    mp = mounts.mount(fresh, tmp_path / "m", "-c", "always")
    local = tmp_path / "ds"
    local.mkdir()
    for i in range(3):
        part = pa.table({"a": list(range(i * 100, i * 100 + 100))})
        pq.write_table(part, local / f"p{i}.parquet")
    fresh.ok("cp", "-r", local, mp / "ds")
    frame = dd.read_parquet(str(mp / "ds"), filesystem=FamfsFileSystem())
    assert frame.a.sum().compute() == sum(range(300))
    assert [resident(mp / "ds" / f"p{i}.parquet") for i in range(3)] == [0, 0, 0]
