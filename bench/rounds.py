"""The benchmark run: prepare the devices and files once, then rounds in which every group
(one system: famfs-py in a cache mode, a baseline, the memcpy limit, mount times) measures
each case it takes part in once. The group order rotates from round to round so that no
system always runs first or last on this noisy machine.

The same two big files sit on two devices: the main one, whose memory is where famfs-py puts
emulated memory (its own huge-page tmpfs: 2 MiB pages, as on devdax), and one whose memory is
a /dev/shm file (4 KiB pages, as emulated memory was before). Each cache mode's group reads
both side by side with tmpfs, and copies in-process out of and into both.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import famfs_py
from famfs_py import omf
from famfs_py.dax import backing

from . import io, logfill
from . import model as m
from .datasets import DatasetsGroup
from .env import BenchError, Environment, GiB, KiB, MiB, drop_caches, run
from .flushcost import FlushGroup
from .model import Results
from .smallfiles import SmallFiles, scale_run

SMALL = 4 * KiB  # the size of every small file
SEED = "0x5eed1234"


@dataclass(frozen=True)
class Config:
    quick: bool
    rounds: int
    file_size: int  # the sequential-I/O file
    stat_files: int
    rand_ops: int
    cp_files: int
    creat_runs: int
    log256_entries: int
    scale_files: int  # the scale run's filesystem (full runs only; 0: none)

    @classmethod
    def make(cls, quick: bool, rounds: int | None = None) -> Config:
        slots256 = omf.log_slots(256 * MiB)
        if quick:
            return cls(True, rounds or 3, 128 * MiB, 2_000, 3_000, 1_000, 3, slots256 // 20, 0)
        return cls(
            False, rounds or 5, 1 * GiB, 10_000, 20_000, 10_000, 5, slots256 * 9 // 10, 200_000
        )

    def sizes(self) -> dict[str, tuple[int, int]]:
        """The run's sizes a target may depend on: field -> (this run's, the full run's)."""
        full = Config.make(False)
        return {n: (getattr(self, n), getattr(full, n)) for n in SIZE_FIELDS}


SIZE_FIELDS = (
    "file_size",
    "stat_files",
    "rand_ops",
    "cp_files",
    "creat_runs",
    "log256_entries",
    "scale_files",
)


@dataclass(frozen=True)
class Features:
    """famfs-py features that may land later; each case using one is skipped until then."""

    creat_multi: bool
    randomize: bool
    verify: bool

    @classmethod
    def detect(cls, env: Environment) -> Features:
        creat_help = env.host.cli("creat", "--help", check=False).stdout
        verify = env.host.cli("verify", "--help", check=False).returncode == 0
        return cls(
            creat_multi="--multi" in creat_help or re.search(r"(^|\s)-M\b", creat_help) is not None,
            randomize=re.search(r"(^|\s)-r\b", creat_help) is not None
            and re.search(r"(^|\s)-S\b", creat_help) is not None,
            verify=verify,
        )


def _roundup(value: int, unit: int) -> int:
    return -(-value // unit) * unit


def _tree(entries: int, per_dir: int = 100, dir_digits: int = 5) -> list:
    """`entries` log entries: a directory, then `per_dir` files in it, and so on."""
    items: list = []
    for index in range(entries):
        group = index // (per_dir + 1)
        if index % (per_dir + 1) == 0:
            items.append(logfill.DirSpec(f"d{group:0{dir_digits}d}"))
        else:
            items.append(logfill.FileSpec(f"d{group:0{dir_digits}d}/f{index:06d}", SMALL))
    return items


GROUPS = (
    "memcpy",
    "tmpfs",
    "fuse-auto",
    "fuse-never",
    "famfs-always",
    "famfs-readahead",
    "mount",
    "flush",
    "datasets",
)
EXPERIMENTS = ("famfs-readahead",)  # what famfs-py could do; full runs only
SHM = Path("/dev/shm")  # where the 4 KiB-page device's memory goes


class Bench:
    def __init__(self, env: Environment, cfg: Config, results: Results) -> None:
        self.env = env
        self.cfg = cfg
        self.results = results
        self.chunk = io.aligned_buffer(io.CHUNK)  # every 1 MiB read/write goes through it
        self.offsets = io.random_offsets(cfg.file_size, cfg.rand_ops)
        self.flush_group = FlushGroup(self)
        self.datasets_group = DatasetsGroup(self)

    def log(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def rec(self, case: str, system: str, value: float) -> None:
        self.results.add(case, system, value)

    # -- preparation ---------------------------------------------------------------------
    def prepare(self) -> None:
        cfg, env = self.cfg, self.env
        size = cfg.file_size
        pattern = os.urandom(io.CHUNK)
        self.features = Features.detect(env)
        self.log(f"features: {self.features}")

        # tmpfs like /dev/shm here (huge=never): the kernel baseline and the minimal server's
        # files
        small_total = (cfg.stat_files + cfg.cp_files * (cfg.rounds + 1)) * 8 * KiB
        self.tmp = env.tmpfs("tmpfs", 2 * size + small_total + 256 * MiB, "never")
        self.t_read, self.t_write = self.tmp / "read", self.tmp / "write"
        for path in (self.t_read, self.t_write):
            path.touch()
            logfill.fill_region(path, 0, size, pattern)
        self.stat_names = [f"f{i:05d}" for i in range(cfg.stat_files)]
        (self.tmp / "stat").mkdir()
        for name in self.stat_names:
            (self.tmp / "stat" / name).write_bytes(pattern[:SMALL])
        self.cp_src = self.tmp / "cpsrc"
        self.cp_src.mkdir()
        for i in range(cfg.cp_files):
            (self.cp_src / f"s{i:05d}").write_bytes(pattern[i : i + SMALL])

        # the main device: two big files for sequential I/O and the small files to stat
        items: list = [
            logfill.DirSpec("seq"),
            logfill.FileSpec("seq/read", size),
            logfill.FileSpec("seq/write", size),
            logfill.DirSpec("stat"),
        ]
        items += [logfill.FileSpec(f"stat/{n}", SMALL) for n in self.stat_names]
        later = cfg.rounds * 8  # creat -r files (small files go to bench/smallfiles.py)
        main_size = _roundup(
            16 * MiB + (2 + cfg.rounds) * size + (cfg.stat_files + later) * omf.ALLOC_UNIT, GiB
        )
        started = time.perf_counter()
        self.main_mem = env.dax_create("dax0.0", max(main_size, 4 * GiB))
        built = logfill.build(
            "dax0.0", env.host.root, items, keep_extents={"seq/read", "seq/write"}
        )
        read_ext, write_ext = built.extents["seq/read"], built.extents["seq/write"]
        logfill.fill_region(self.main_mem, read_ext.offset, size, pattern)
        logfill.fill_region(self.main_mem, write_ext.offset, size, pattern)
        self.region_r = io.MappedRegion(self.main_mem, read_ext.offset, size)
        self.region_w = io.MappedRegion(self.main_mem, write_ext.offset, size)
        self.log(
            f"main device: {main_size / GiB:.0f} GiB, {built.entries} log entries "
            f"({time.perf_counter() - started:.1f} s)"
        )

        # the same two files on a device whose memory is a /dev/shm file (4 KiB pages)
        items_4k: list[logfill.FileSpec | logfill.DirSpec] = [
            logfill.DirSpec("seq"),
            logfill.FileSpec("seq/read", size),
            logfill.FileSpec("seq/write", size),
        ]
        self.mem_4k = env.dax_create(
            "dax3.0",
            max(4 * GiB, _roundup(16 * MiB + 2 * size, GiB)),
            SHM / f"famfs-py-bench.{os.getpid()}.dax3.0",
        )
        built_4k = logfill.build("dax3.0", env.host.root, items_4k)
        read_4k, write_4k = built_4k.extents["seq/read"], built_4k.extents["seq/write"]
        logfill.fill_region(self.mem_4k, read_4k.offset, size, pattern)
        logfill.fill_region(self.mem_4k, write_4k.offset, size, pattern)
        self.region_4k_r = io.MappedRegion(self.mem_4k, read_4k.offset, size)
        self.region_4k_w = io.MappedRegion(self.mem_4k, write_4k.offset, size)

        # devices to mount: a full 8 MiB log, and a 256 MiB log filled in good part
        started = time.perf_counter()
        slots8 = omf.log_slots(omf.DEFAULT_LOG_LEN)
        env.dax_create("dax1.0", _roundup(16 * MiB + slots8 * omf.ALLOC_UNIT, GiB))
        b8 = logfill.build("dax1.0", env.host.root, _tree(slots8), keep_extents=set())
        n256 = cfg.log256_entries
        env.dax_create("dax2.0", _roundup(512 * MiB + n256 * omf.ALLOC_UNIT, GiB))
        b256 = logfill.build(
            "dax2.0", env.host.root, _tree(n256), log_len=256 * MiB, keep_extents=set()
        )
        self.log(
            f"mount devices: {b8.entries}/{b8.slots} and {b256.entries}/{b256.slots} entries "
            f"({time.perf_counter() - started:.1f} s)"
        )
        self.log_entries = {"mount_8m_full": b8.entries, "mount_256m": b256.entries}
        self.small = SmallFiles(self)  # small files on 4 KiB allocation units
        self.results.note(
            "mount_256m",
            m.FAMFS_AUTO,
            f"{b256.entries:,} of {b256.slots:,} entries ({100 * b256.entries / b256.slots:.0f}%)",
        )

        # the memcpy limit: mappings kept faulted in (made warm again at each round: the
        # famfs-py groups punch holes in the write regions), and a large buffer of process
        # memory (touched: the source of the process-memory memcpy)
        self.warm_r = self.region_r.map()
        self.warm_w = self.region_w.map(writable=True)
        self.warm_4k = self.region_4k_r.map()
        self.warm_4k_w = self.region_4k_w.map(writable=True)
        self.large = bytearray(size)
        for off in range(0, size, io.CHUNK):
            self.large[off : off + io.CHUNK] = pattern
        self._check_pages()
        self.warm_r_rw = self.region_r.map(writable=True)  # an address for kernel copies
        self._anchor = ctypes.c_char.from_buffer(self.warm_r_rw)
        self.warm_r_address = ctypes.addressof(self._anchor)

    def _check_pages(self) -> None:
        """Say what pages each device's memory really sits on (the shmem huge pages mapped in
        this process after faulting the read file in), in the notes and on stderr."""
        size = self.cfg.file_size
        for mapping, memory, want in (
            (self.warm_r, self.main_mem, True),
            (self.warm_4k, self.mem_4k, False),
        ):
            io.copy_out(mapping, size)
            huge = io.huge_mapped(memory)
            where = f"{memory.parent} ({'huge' if backing.huge_pages(memory.parent) else 'no huge'}"
            text = f"{where} pages; {huge / size:.0%} of the file mapped as 2 MiB pages)"
            self.log(f"memory of {memory.name}: {text}")
            if (huge >= size // 2) != want:
                warning = f"NOT on {'2 MiB' if want else '4 KiB'} pages: {text}"
                self.log(f"bench: warning: {warning}")
                for pair in m.PAGE_PAIRS:
                    self.results.note(
                        pair.case, pair.system_2m if want else pair.system_4k, warning
                    )

    # -- the round -----------------------------------------------------------------------
    def groups(self) -> list[tuple[str, Callable[[int], None]]]:
        return [
            ("memcpy", self.group_memcpy),
            ("tmpfs", self.group_tmpfs),
            ("fuse-auto", lambda r: self.group_fuse(r, "auto")),
            ("fuse-never", lambda r: self.group_fuse(r, "never")),
            ("famfs-always", self.group_always),
            ("famfs-readahead", self.group_readahead),
            ("mount", self.group_mounts),
            ("flush", self.flush_group.run),
            ("datasets", self.datasets_group.run),
        ]

    def run(self, only: list[str] | None = None) -> None:
        groups = [g for g in self.groups() if g[0] in only] if only else self.groups()
        if self.cfg.quick and not only:
            groups = [g for g in groups if g[0] not in EXPERIMENTS]
        for r in range(self.cfg.rounds):
            shift = r % len(groups)
            for name, group in groups[shift:] + groups[:shift]:
                started = time.perf_counter()
                group(r)
                seconds = time.perf_counter() - started
                self.log(f"round {r + 1}/{self.cfg.rounds}: {name} ({seconds:.1f} s)")
        if self.cfg.scale_files and not only:
            started = time.perf_counter()
            scale_run(self, self.cfg.scale_files)
            self.log(f"scale run: {time.perf_counter() - started:.1f} s")

    # -- shared measurements -------------------------------------------------------------
    def _seq(self, system: str, read: Path, write: Path, punch: Callable[[], None] | None) -> None:
        """Cold read and write (first after a fresh start), warm read and write, then a
        write into memory never written (`punch` gives the write file's memory back).
        Without `punch`, reads only."""
        size = self.cfg.file_size
        gib = size / GiB

        def timed(case: str, measure: Callable[[], float]) -> None:
            self.rec(case, system, gib / measure())

        timed("seq_read_cold", lambda: io.seq_read(read, size, buf=self.chunk))
        if punch is not None:
            timed("seq_write_cold", lambda: io.seq_write(write, size, buf=self.chunk))
        timed("seq_read_warm", lambda: io.seq_read(read, size, buf=self.chunk))
        if punch is not None:
            timed("seq_write_warm", lambda: io.seq_write(write, size, buf=self.chunk))
            punch()
            timed("seq_write_first", lambda: io.seq_write(write, size, buf=self.chunk))

    def _punch_main_w(self) -> None:
        io.punch_hole(self.main_mem, self.region_w.offset, self.cfg.file_size)

    def _punch_4k_w(self) -> None:
        io.punch_hole(self.mem_4k, self.region_4k_w.offset, self.cfg.file_size)

    def _punch_tmpfs_w(self) -> None:
        io.punch_hole(self.t_write, 0, self.cfg.file_size)

    def _rand(self, system: str, path: Path) -> None:
        for case, direct in (("randread_4k_odirect", True), ("randread_4k_buffered", False)):
            self.rec(case, system, io.rand_read(path, self.offsets, direct=direct) / 1000)

    def _meta(self, sides: list[tuple[str, Path]]) -> None:
        """stat and open+close every small file of each (system, directory), cold (after
        drop_caches, which empties every side) then warm. Run last in a group: what follows
        reloads Python from disk."""
        lists = [
            (system, [str(directory / n) for n in self.stat_names]) for system, directory in sides
        ]
        per = 1e6 / len(self.stat_names)
        for loop, cold, warm in (
            (io.stat_all, "stat_cold", "stat_warm"),
            (io.open_close_all, "open_close_cold", "open_close_warm"),
        ):
            drop_caches()
            for system, paths in lists:
                self.rec(cold, system, loop(paths) * per)
            for system, paths in lists:
                self.rec(warm, system, loop(paths) * per)

    @staticmethod
    def _warm_python() -> None:
        """Load what the famfs-py commands import into the page cache (after drop_caches),
        so that process start times measure CPU, not this machine's disk. famfs_py's bytecode
        is compiled first, as installing a package does: with PYTHONDONTWRITEBYTECODE set (as
        in some shells) every command would otherwise compile its modules from source."""
        package = Path(famfs_py.__file__).parent
        run([sys.executable, "-m", "compileall", "-q", str(package)])
        run([str(host_bin("famfs-py")), "--help"])
        code = "import famfs_py.cli.mount_cmd, famfs_py.daemon.mount, famfs_py.cli.creat_cmd"
        run([sys.executable, "-c", code + ", famfs_py.cli.cp_cmd, famfs_py.cli.umount_cmd"])

    @staticmethod
    def _timed(cmd: list[str], env: dict[str, str] | None = None) -> float:
        start = time.perf_counter()
        run(cmd, env=env)
        return time.perf_counter() - start

    # -- groups --------------------------------------------------------------------------
    def group_memcpy(self, r: int) -> None:
        size = self.cfg.file_size
        gib = size / GiB
        for mapping in (self.warm_r, self.warm_4k):  # untimed: fault everything in
            io.copy_out(mapping, size)
        for mapping in (self.warm_w, self.warm_4k_w):
            io.copy_in(mapping, size, self.chunk)

        def fresh(
            region: io.MappedRegion,
            case: str,
            system: str,
            dest: bytearray | None = None,
            src: bytes | bytearray | mmap.mmap | None = None,
        ) -> float:
            """Copy through a mapping made just now (its page faults are part of it)."""
            mapping = region.map(writable=src is not None)
            try:
                if src is None:
                    seconds = io.copy_out(mapping, size, dest)
                else:
                    seconds = io.copy_in(mapping, size, src)
                self.rec(case, system, gib / seconds)
                return gib / seconds
            finally:
                mapping.close()

        # cold: a fresh mapping of memory that is allocated (2 MiB and 4 KiB pages)
        fresh(self.region_r, "seq_read_cold", m.MEMCPY_1M)
        fresh(self.region_4k_r, "seq_read_cold", m.MEMCPY_4K)
        fresh(self.region_r, "seq_read_cold", m.MEMCPY_LARGE, dest=self.large)
        self.rec("seq_read_cold", m.MEMCPY_POPULATE, gib / io.populate_then_copy(self.region_r))
        fresh(self.region_4k_r, "seq_read_cold", m.MEMCPY_LARGE_4K, dest=self.large)
        fresh(self.region_w, "seq_write_cold", m.MEMCPY_1M, src=self.chunk)
        fresh(self.region_w, "seq_write_cold", m.MEMCPY_LARGE, src=self.large)
        fresh(self.region_4k_w, "seq_write_cold", m.MEMCPY_4K, src=self.chunk)
        fresh(self.region_4k_w, "seq_write_cold", m.MEMCPY_LARGE_4K, src=self.large)
        # warm: mappings faulted in long ago
        warm_1m = gib / io.copy_out(self.warm_r, size)
        self.rec("seq_read_warm", m.MEMCPY_1M, warm_1m)
        self.rec("seq_read_warm", m.MEMCPY_LARGE, gib / io.copy_out(self.warm_r, size, self.large))
        self.rec("seq_read_warm", m.MEMCPY_4K, gib / io.copy_out(self.warm_4k, size))
        self.rec(
            "seq_read_warm", m.MEMCPY_LARGE_4K, gib / io.copy_out(self.warm_4k, size, self.large)
        )
        self.rec("seq_write_warm", m.MEMCPY_1M, gib / io.copy_in(self.warm_w, size, self.chunk))
        self.rec("seq_write_warm", m.MEMCPY_LARGE, gib / io.copy_in(self.warm_w, size, self.large))
        self.rec("seq_write_warm", m.MEMCPY_4K, gib / io.copy_in(self.warm_4k_w, size, self.chunk))
        self.rec(
            "seq_write_warm", m.MEMCPY_LARGE_4K, gib / io.copy_in(self.warm_4k_w, size, self.large)
        )
        # first touch: memory given back, then written through a fresh mapping
        for region, punch, system in (
            (self.region_w, self._punch_main_w, m.MEMCPY_1M),
            (self.region_4k_w, self._punch_4k_w, m.MEMCPY_4K),
        ):
            punch()
            fresh(region, "seq_write_first", system, src=self.chunk)
        for region, punch, system in (
            (self.region_w, self._punch_main_w, m.MEMCPY_LARGE),
            (self.region_4k_w, self._punch_4k_w, m.MEMCPY_LARGE_4K),
        ):
            punch()
            fresh(region, "seq_write_first", system, src=self.large)
        kiops = len(self.offsets) / 1000 / io.rand_copy(self.warm_r, self.offsets)
        self.rec("randread_4k_odirect", m.MEMCPY_1M, kiops)
        self.rec("randread_4k_buffered", m.MEMCPY_1M, kiops)
        for case in ("randomize", "verify"):
            self.rec(case, m.MEMCPY_1M, warm_1m)
        io.copy_out(self.warm_r_rw, size)  # untimed: fault it in
        for system, how in ((m.KCOPY_PROC_MEM, "proc_mem"), (m.KCOPY_VM_READV, "vm_readv")):
            seconds = io.kernel_copy_out(self.warm_r_address, size, how)
            self.rec("mapped_read", system, gib / seconds)

    def group_tmpfs(self, r: int) -> None:
        """The kernel and process baselines of creation (tmpfs's I/O and metadata are
        measured side by side with famfs-py in group_fuse)."""
        self._warm_python()
        seconds = self._timed(["cp", "-r", str(self.cp_src), str(self.tmp / f"cp-r{r}")])
        self.rec("create_batch", m.CP_TMPFS, seconds * 1e3 / self.cfg.cp_files)
        for k in range(self.cfg.creat_runs):
            target = str(self.tmp / f"creat-r{r}-{k}")
            seconds = self._timed(["truncate", "-s", "4k", target])
            self.rec("creat_single", m.TRUNCATE, seconds * 1e3)
            seconds = self._timed([sys.executable, "-c", "pass"])
            self.rec("creat_single", m.PYTHON, seconds * 1e3)

    def group_fuse(self, r: int, cache: str) -> None:
        """famfs-py (-c auto or never), the minimal pyfuse3 server in the matching mode and
        tmpfs, side by side: both servers start fresh, then every measurement is taken for
        each of the three in turn (order alternating by round), so that a slow minute of
        this machine hits all of them alike. famfs-py on 4 KiB pages takes part in the
        sequential reads (and, for -c auto, both devices in the in-process copies)."""
        auto = cache == "auto"
        famfs, minimal = (m.FAMFS_AUTO, m.MIN_CACHED) if auto else (m.FAMFS_NEVER, m.MIN_DIRECT)
        famfs_4k = m.FAMFS_AUTO_4K if auto else m.FAMFS_NEVER_4K
        tree = self.cfg.stat_files if auto else 0
        files = [self.t_read, self.t_write]
        self._warm_python()  # the server's start time is the floor of a mount's
        with (
            self.env.famfs_mount("dax0.0", f"mnt-{cache}", cache) as mount,
            self.env.famfs_mount("dax3.0", f"mnt-{cache}-4k", cache) as mount_4k,
            self.env.minimal_server(f"min-{cache}", files, not auto, tree) as server,
        ):
            drop_caches()
            fmp, smp = mount.mountpoint, server.mountpoint
            sides = [
                (famfs, fmp / "seq" / "read", fmp / "seq" / "write", self._punch_main_w, fmp),
                (minimal, smp / "read", smp / "write", self._punch_tmpfs_w, smp),
                (m.TMPFS, self.t_read, self.t_write, self._punch_tmpfs_w, self.tmp),
            ]
            readers = [(system, read) for system, read, _, _, _ in sides]
            readers.insert(1, (famfs_4k, mount_4k.mountpoint / "seq" / "read"))
            if r % 2:
                sides.reverse()
                readers.reverse()
            size = self.cfg.file_size
            gib = size / GiB
            for case in ("seq_read_cold", "seq_write_cold", "seq_read_warm", "seq_write_warm"):
                if case.startswith("seq_read"):
                    for system, read in readers:
                        self.rec(case, system, gib / io.seq_read(read, size, buf=self.chunk))
                    continue
                for system, _, write, _, _ in sides:
                    self.rec(case, system, gib / io.seq_write(write, size, buf=self.chunk))
            for system, _, write, punch, _ in sides:
                punch()
                self.rec("seq_write_first", system, gib / io.seq_write(write, size, buf=self.chunk))
            for case, direct in (("randread_4k_odirect", True), ("randread_4k_buffered", False)):
                for system, read, _, _, _ in sides:
                    self.rec(case, system, io.rand_read(read, self.offsets, direct=direct) / 1000)
            if auto:
                devices = [(mount.mountpoint, False), (mount_4k.mountpoint, True)]
                for mp, small_pages in devices if r % 2 == 0 else devices[::-1]:
                    self._in_process(mp, small_pages)
                self._creation(r, fmp)
                self._meta([(system, root / "stat") for system, _, _, _, root in sides])
        if auto:
            self.rec("umount", m.FAMFS_AUTO, mount.umount_seconds)
            for case in ("mount_8m_full", "mount_256m"):
                self.rec(case, m.MIN_CACHED, server.seconds)

    def group_always(self, r: int) -> None:
        """-c always: reads (its writes go the way of -c auto's), on 2 MiB and 4 KiB pages
        and on tmpfs in turn."""
        size = self.cfg.file_size
        with (
            self.env.famfs_mount("dax0.0", "mnt-always", "always") as mount,
            self.env.famfs_mount("dax3.0", "mnt-always-4k", "always") as mount_4k,
        ):
            readers = [
                (m.FAMFS_ALWAYS, mount.mountpoint / "seq" / "read"),
                (m.FAMFS_ALWAYS_4K, mount_4k.mountpoint / "seq" / "read"),
                (m.TMPFS, self.t_read),
            ]
            if r % 2:
                readers.reverse()
            drop_caches()
            for case in ("seq_read_cold", "seq_read_warm"):
                for system, read in readers:
                    self.rec(case, system, size / GiB / io.seq_read(read, size, buf=self.chunk))
            self._rand(m.FAMFS_ALWAYS, mount.mountpoint / "seq" / "read")

    def group_readahead(self, r: int) -> None:
        """-c auto with the mount's readahead window raised from 128 KiB (the FUSE default)
        to 4 MiB through sysfs: what famfs-py could set at mount."""
        drop_caches()
        with self.env.famfs_mount("dax0.0", "mnt-readahead", "auto") as mount:
            mp = mount.mountpoint
            st = os.stat(mp)
            bdi = Path(f"/sys/class/bdi/{os.major(st.st_dev)}:{os.minor(st.st_dev)}")
            (bdi / "read_ahead_kb").write_text("4096\n")
            self._seq(m.FAMFS_RA, mp / "seq" / "read", mp / "seq" / "write", None)

    def group_mounts(self, r: int) -> None:
        self._warm_python()
        for case, device in (("mount_8m_full", "dax1.0"), ("mount_256m", "dax2.0")):
            with self.env.famfs_mount(device, f"mnt-{device}") as mount:
                self.rec(case, m.FAMFS_AUTO, mount.seconds)
        # the replay alone (the 256 MiB log's takes as long as its mount: measured once)
        seconds = self._replay_seconds("dax1.0")
        self.rec("mount_8m_full", m.FAMFS_REPLAY, seconds)
        per = 1e6 / self.log_entries["mount_8m_full"]
        self.rec("replay_entry", m.FAMFS_REPLAY_8M, seconds * per)
        if r == 0:
            seconds = self._replay_seconds("dax2.0")
            self.rec("mount_256m", m.FAMFS_REPLAY, seconds)
            self.rec(
                "replay_entry", m.FAMFS_REPLAY_256M, seconds * 1e6 / self.log_entries["mount_256m"]
            )

    def _replay_seconds(self, device_name: str) -> float:
        """The log replay alone, in this process: what mount does besides starting up."""
        from famfs_py.dax.device import resolve_device
        from famfs_py.dax.memory import DeviceMemory
        from famfs_py.fs.log import Log, read_log_header, read_superblock

        device = resolve_device(device_name, str(self.env.host.root))
        start = time.perf_counter()
        mem = DeviceMemory.of_device(device, writable=False)
        try:
            sb = read_superblock(mem)
            Log(mem, sb, read_log_header(mem, sb)).replay()
            return time.perf_counter() - start
        finally:
            mem.close()

    # -- creation, placeholders ----------------------------------------------------------
    def _creation(self, r: int, mp: Path) -> None:
        cfg, host = self.cfg, self.env.host
        self._warm_python()
        try:
            self.small.run(r, self._timed, [str(host_bin("famfs-py"))])
        except BenchError as exc:
            self.results.skip("create_batch", m.FAMFS_MULTI, f"failed: {exc}")
        if not self.features.creat_multi:
            self.results.skip("create_batch", m.FAMFS_MULTI, "famfs-py creat has no -M/--multi yet")
        if self.features.randomize:
            target = mp / f"rand-r{r}"
            cmd = [str(host_bin("famfs-py")), "creat", "-r", "-S", SEED]
            cmd += ["-s", str(cfg.file_size), str(target)]
            gib = cfg.file_size / GiB
            try:
                self.rec("randomize", m.FAMFS_RANDOMIZE, gib / self._timed(cmd, host.env))
                if self.features.verify:
                    cmd = [str(host_bin("famfs-py")), "verify", "-S", SEED, "-f", str(target)]
                    self.rec("verify", m.FAMFS_VERIFY, gib / self._timed(cmd, host.env))
            except BenchError as exc:
                self.results.skip("randomize", m.FAMFS_RANDOMIZE, f"failed: {exc}")
        else:
            self.results.skip("randomize", m.FAMFS_RANDOMIZE, "famfs-py creat has no -r yet")
        if not self.features.verify:
            self.results.skip("verify", m.FAMFS_VERIFY, "famfs-py has no verify command yet")

    def _in_process(self, mountpoint: Path, small_pages: bool) -> None:
        """In-process copies of one device's files, each through a mapping made just now
        (cold: its page faults are part of it), then again through the same mapping (warm):
        open_mapped and FileMemory copy seq/read out in 1 MiB pieces, and cp's copy
        (famfs_py.mapping.fill_from into the whole device mapped, as `famfs-py cp` does it)
        fills seq/write from the tmpfs file. Their baselines are measured here too, just
        before: memcpy out of process memory, and out of the device's memory (a fresh mapping,
        and the mapping the memcpy group keeps faulted in)."""
        from famfs_py import channel, protocol
        from famfs_py.dax.memory import DeviceMemory
        from famfs_py.fs.fmap import FileMap
        from famfs_py.mapping import device_segments, fill_from, open_file_memory, request_map

        size = self.cfg.file_size
        gib = size / GiB
        read, write = mountpoint / "seq" / "read", mountpoint / "seq" / "write"
        target = memoryview(bytearray(io.CHUNK))
        suffix = m.PAGES_4K if small_pages else ""

        def two_passes(system: str, copy: Callable[[], None]) -> None:
            for case in ("mapped_read_cold", "mapped_read"):
                start = time.perf_counter()
                copy()
                self.rec(case, system + suffix, gib / (time.perf_counter() - start))

        process = gib / io.copy_out(self.large, size)
        for case in ("mapped_read_cold", "mapped_read"):
            self.rec(case, m.MEMCPY_PROCESS, process)
        region, warm = (
            (self.region_4k_r, self.warm_4k) if small_pages else (self.region_r, self.warm_r)
        )
        memcpy = m.MEMCPY_4K if small_pages else m.MEMCPY_1M
        mapping = region.map()
        try:
            self.rec("mapped_read_cold", memcpy, gib / io.copy_out(mapping, size))
        finally:
            mapping.close()
        self.rec("mapped_read", memcpy, gib / io.copy_out(warm, size))

        with famfs_py.open_mapped(read) as mapped, memoryview(mapped) as view:

            def copy_view() -> None:
                for off in range(0, size, io.CHUNK):
                    target[:] = view[off : off + io.CHUNK]

            two_passes(m.FAMFS_OPEN_MAPPED, copy_view)

        with open_file_memory(str(read), write=False) as memory:

            def copy_memory() -> None:
                for off in range(0, size, io.CHUNK):
                    memory.readinto(off, target)

            two_passes(m.FAMFS_MAPPED, copy_memory)

        # cp's copy: the device from the daemon (protocol.Device), the file's map, fill_from
        chan, grant, fd = request_map(str(write), write=True)
        os.close(fd)
        chan.close()
        filemap = FileMap(grant.fmap, grant.size)
        chan = channel.Channel(str(mountpoint))
        try:
            reply, fds = chan.call_fds(protocol.Device())
        finally:
            chan.close()
        try:
            device = DeviceMemory(fds[0], reply.device_size, writable=True, align=reply.align)
        finally:
            for fd in fds:
                os.close(fd)
        source = os.open(self.t_read, os.O_RDONLY)
        segments = device_segments(device, filemap)
        try:

            def copy_in() -> None:
                fill_from(segments, source)

            two_passes(m.FAMFS_CP_FILL, copy_in)
        finally:
            os.close(source)
            for segment in segments:
                segment.view.release()
            device.close()


def host_bin(name: str) -> Path:
    return Path(sys.executable).parent / name
