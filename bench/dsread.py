"""`python -m bench.dsread famfs|mmap|file TABLE [--sums N]`: one reader of the datasets
group, in its own process on the client host, printing JSON.

How it reads the Arrow IPC file TABLE: `famfs` with famfs_py.arrow.read_table (device
memory), `mmap` with pyarrow.memory_map through the mount (what a new user would write),
`file` with pyarrow.ipc.open_file(path) through the mount (read into memory). Reported:
seconds to a usable table, seconds for the first sum over every column (the data touched
once), the anonymous memory (RssAnon) and mapped page cache (RssFile) the process added;
with --sums N (famfs only): N warm sums of the first column over the famfs table and over an
in-memory copy of it, taken in turn, as GiB/s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy
import pyarrow
import pyarrow.compute
import pyarrow.ipc

from famfs_py import arrow


def _rss() -> dict[str, int]:
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return {k: int(fields[k].split()[0]) << 10 for k in ("RssAnon", "RssFile")}


def _read(how: str, path: str) -> pyarrow.Table:
    if how == "famfs":
        return arrow.read_table(path)
    if how == "mmap":
        return pyarrow.ipc.open_file(pyarrow.memory_map(path)).read_all()
    return pyarrow.ipc.open_file(path).read_all()


def _sum_rate(column: pyarrow.ChunkedArray) -> float:
    start = time.perf_counter()
    pyarrow.compute.sum(column)
    return column.nbytes / (1 << 30) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dsread")
    parser.add_argument("how", choices=("famfs", "mmap", "file"))
    parser.add_argument("table")
    parser.add_argument("--sums", type=int, default=0)
    args = parser.parse_args(argv)
    pyarrow.compute.sum(pyarrow.array([1, 2]))  # load the kernels before measuring
    before = _rss()
    start = time.perf_counter()
    table = _read(args.how, args.table)
    read_s = time.perf_counter() - start
    start = time.perf_counter()
    for column in table.columns:
        pyarrow.compute.sum(column)
    scan_s = time.perf_counter() - start
    after = _rss()
    out = {
        "read_s": read_s,
        "scan_s": scan_s,
        "anon": after["RssAnon"] - before["RssAnon"],
        "mapped_page_cache": after["RssFile"] - before["RssFile"],
        "bytes": table.nbytes,
    }
    if args.sums:
        ours = table.column(0)
        copy = pyarrow.chunked_array([pyarrow.array(numpy.array(ours.to_numpy(), copy=True))])
        _sum_rate(copy)  # fault the copy in
        famfs: list[float] = []
        memory: list[float] = []
        for i in range(args.sums):
            for which in ("famfs", "memory") if i % 2 == 0 else ("memory", "famfs"):
                rate = _sum_rate(ours if which == "famfs" else copy)
                (famfs if which == "famfs" else memory).append(rate)
        out["sum_famfs"] = statistics.median(famfs)
        out["sum_memory"] = statistics.median(memory)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
