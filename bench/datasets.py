"""The "datasets" group (issue 26): an Arrow table written on the master, read on a client.

The master writes one table (4 columns of 8-byte numbers: 1 GiB, 256 MiB with --quick) with
famfs_py.arrow.write_table; every round, readers on the client (bench/dsread.py, each in a
process of its own) read it with famfs_py.arrow.read_table (device memory) and with pyarrow
through the client's mount (`pyarrow.memory_map`, and `pyarrow.ipc.open_file(path)`), in an
order that rotates by round. Measured per reader: time to a usable table, the first sum over
every column, anonymous memory added, and the page cache its reads filled (counted with
cachestat(2) on a descriptor opened before the reader starts: the mount's default cache mode
drops a file's pages at each open, so opening it afterwards would count nothing). Then a
warm sum of one column over the famfs table against the same sum over an in-memory copy, in
the same process, taken in turn.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from typing import TYPE_CHECKING

from . import model as m
from .env import REPO, BenchError, GiB, Host, MiB

if TYPE_CHECKING:  # rounds imports this module
    from .rounds import Bench

CLIENT_UUID = "0c1d2e3f-4a5b-4c6d-8e7f-901122334455"
DEVICE = "dax8.0"
SYS_CACHESTAT = 451  # the same number on every architecture (Linux >= 6.5)


class _Range(ctypes.Structure):
    _fields_ = (("off", ctypes.c_uint64), ("len", ctypes.c_uint64))


class _Stat(ctypes.Structure):
    _fields_ = tuple(
        (name, ctypes.c_uint64)
        for name in ("cache", "dirty", "writeback", "evicted", "recently_evicted")
    )


def page_cache_bytes(fd: int) -> int:
    """Bytes of the file open at `fd` in the page cache (cachestat(2))."""
    libc = ctypes.CDLL(None, use_errno=True)
    stat = _Stat()
    if libc.syscall(SYS_CACHESTAT, fd, ctypes.byref(_Range(0, 0)), ctypes.byref(stat), 0):
        raise OSError(ctypes.get_errno(), "cachestat")
    return stat.cache * os.sysconf("SC_PAGE_SIZE")


class DatasetsGroup:
    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.env = bench.env
        self.prepared = False

    def prepare(self) -> None:
        import numpy
        import pyarrow

        from famfs_py import arrow

        env = self.env
        env.dax_create(DEVICE, 4 * GiB)
        env.host.cli("mkfs", "-f", DEVICE)
        self.client = Host(env.base / "ds-client", env.host.log_dir, CLIENT_UUID)
        self.client.root.mkdir(exist_ok=True)
        self.client.cli("dax", "create", DEVICE, "--share", str(env.host.root / "dev" / DEVICE))
        env.stack.callback(self.client.cli, "dax", "remove", DEVICE, check=False)
        master = env.stack.enter_context(env.famfs_mount(DEVICE, "ds-master"))
        client = env.stack.enter_context(env.famfs_mount(DEVICE, "ds-client-mnt", host=self.client))
        rows = (256 * MiB if self.bench.cfg.quick else GiB) // 32
        ids = numpy.arange(rows, dtype=numpy.int64)
        table = pyarrow.table(
            {"id": ids, "x": ids * 0.5, "y": ids * 3, "z": ids * 0.25}  # 4 × rows × 8 bytes
        )
        arrow.write_table(table, master.mountpoint / "table.arrow")
        del table, ids
        self.path = client.mountpoint / "table.arrow"
        env.host.cli("logplay", str(master.mountpoint))
        self.client.cli("logplay", str(client.mountpoint))
        if not self.path.exists():
            raise BenchError(f"the client does not see {self.path}")
        self.prepared = True

    def _reader(self, how: str, sums: int = 0) -> dict:
        fd = os.open(self.path, os.O_RDONLY)  # opened first: see the module's docstring
        try:
            argv = [sys.executable, "-m", "bench.dsread", how, str(self.path)]
            if sums:
                argv += ["--sums", str(sums)]
            run = subprocess.run(
                argv, capture_output=True, text=True, timeout=600, cwd=REPO, env=self.client.env
            )
            if run.returncode != 0:
                raise BenchError(f"bench.dsread {how}: {run.stderr.strip()[-2000:]}")
            out = json.loads(run.stdout)
            out["page_cache"] = page_cache_bytes(fd)
            return out
        finally:
            os.close(fd)

    def run(self, r: int) -> None:
        if not self.prepared:
            self.prepare()
        readers = list(m.DS_READERS)
        shift = r % len(readers)
        for how, system in readers[shift:] + readers[:shift]:
            out = self._reader(how, sums=9 if how == "famfs" else 0)
            rec = self.bench.rec
            rec("ds_read_table", system, out["read_s"])
            rec("ds_first_scan", system, out["scan_s"])
            rec("ds_anon", system, out["anon"] / MiB)
            rec("ds_page_cache", system, out["page_cache"] / MiB)
            if how == "famfs":
                rec("ds_column_sum", m.DS_FAMFS, out["sum_famfs"])
                rec("ds_column_sum", m.DS_MEMORY, out["sum_memory"])
