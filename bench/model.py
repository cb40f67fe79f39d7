"""What the benchmark measures: the cases, the systems compared in each, the targets (and
which run's sizes each was set for), the 4 KiB/2 MiB page comparison, and the samples
collected round by round (median, min, max and ratios come from here)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

# -- systems -------------------------------------------------------------------------------
# famfs-py on the main device: emulated memory where famfs-py puts it (its own huge-page
# tmpfs, 2 MiB pages); the "4 KiB pages" systems: the same files on a device whose memory is
# a /dev/shm file (4 KiB pages, what emulated memory was before issue 13)
FAMFS_AUTO = "famfs-py -c auto"
FAMFS_NEVER = "famfs-py -c never"
FAMFS_ALWAYS = "famfs-py -c always"
PAGES_4K = ", 4 KiB pages (/dev/shm)"
FAMFS_AUTO_4K = FAMFS_AUTO + PAGES_4K
FAMFS_NEVER_4K = FAMFS_NEVER + PAGES_4K
FAMFS_ALWAYS_4K = FAMFS_ALWAYS + PAGES_4K
FAMFS_RA = "famfs-py -c auto, read_ahead_kb=4096"
FAMFS_MAPPED = "famfs-py FileMemory, kernel copy (verify, creat -r)"
FAMFS_MAPPED_4K = FAMFS_MAPPED + PAGES_4K
FAMFS_OPEN_MAPPED = "famfs_py.open_mapped → 1 MiB buffer"
FAMFS_OPEN_MAPPED_4K = FAMFS_OPEN_MAPPED + PAGES_4K
FAMFS_CP_FILL = "famfs-py cp's copy (fill_from: tmpfs file → memory)"
FAMFS_CP_FILL_4K = FAMFS_CP_FILL + PAGES_4K
FAMFS_REPLAY = "famfs-py log replay alone (in-process)"
FAMFS_REPLAY_8M = "famfs-py log replay, full 8 MiB log"
FAMFS_REPLAY_256M = "famfs-py log replay, 256 MiB log"
FAMFS_FOLLOW = "famfs-py client (--follow-interval 0.01)"
FAMFS_SCALE = "famfs-py, 4 KiB units"
FAMFS_CREAT = "famfs-py creat"
FAMFS_CP = "famfs-py cp -r"
FAMFS_MULTI = "famfs-py creat -M"
FAMFS_RANDOMIZE = "famfs-py creat -r"
FAMFS_VERIFY = "famfs-py verify"
UPSTREAM = "upstream famfs (published, not run)"
MIN_CACHED = "pyfuse3 minimal"
MIN_DIRECT = "pyfuse3 minimal, direct_io"
TMPFS = "tmpfs"
CP_TMPFS = "cp -r on tmpfs"
TRUNCATE = "truncate -s on tmpfs (C process)"
PYTHON = "python startup (-c pass)"
MEMCPY_1M = "memcpy, 1 MiB buffer"
MEMCPY_LARGE = "memcpy, large buffer"
MEMCPY_POPULATE = "memcpy, 1 MiB buffer, MADV_POPULATE_READ first"
MEMCPY_4K = "memcpy, 1 MiB buffer" + PAGES_4K
MEMCPY_LARGE_4K = "memcpy, large buffer" + PAGES_4K
MEMCPY_PROCESS = "memcpy, process memory (bytes) → 1 MiB buffer"
KCOPY_PROC_MEM = "kernel copy, /proc/self/mem preadv"
KCOPY_VM_READV = "kernel copy, process_vm_readv"

FAMFS_SYSTEMS = {
    FAMFS_AUTO,
    FAMFS_NEVER,
    FAMFS_ALWAYS,
    FAMFS_AUTO_4K,
    FAMFS_NEVER_4K,
    FAMFS_ALWAYS_4K,
    FAMFS_RA,
    FAMFS_MAPPED,
    FAMFS_MAPPED_4K,
    FAMFS_OPEN_MAPPED,
    FAMFS_OPEN_MAPPED_4K,
    FAMFS_CP_FILL,
    FAMFS_CP_FILL_4K,
    FAMFS_REPLAY,
    FAMFS_REPLAY_8M,
    FAMFS_REPLAY_256M,
    FAMFS_FOLLOW,
    FAMFS_SCALE,
    FAMFS_CREAT,
    FAMFS_CP,
    FAMFS_MULTI,
    FAMFS_RANDOMIZE,
    FAMFS_VERIFY,
}

# the flush group (bench/flushcost.py): each case with cache flushing on and off
PCQ_BUCKET_SIZES = (64, 1024, 65536)
PCQ_NBUCKETS = 256


def pcq_systems(bucket_size: int) -> tuple[str, str]:
    """(flush on, --dontflush) system names of a pcq of `bucket_size` buckets."""
    label = f"{bucket_size} B" if bucket_size < 1024 else f"{bucket_size >> 10} KiB"
    return f"pcq {label} buckets, flush on", f"pcq {label} buckets, --dontflush"


FLUSH_SYSTEMS = {"on": "famfs-py flush=on", "off": "famfs-py flush=off"}
_FLUSH = {FLUSH_SYSTEMS["on"]: (FLUSH_SYSTEMS["off"],), FLUSH_SYSTEMS["off"]: ()}

_PCQ: dict[str, tuple[str, ...]] = {
    on: (off,) for on, off in map(pcq_systems, PCQ_BUCKET_SIZES)
} | {off: () for _, off in map(pcq_systems, PCQ_BUCKET_SIZES)}

# the datasets group (bench/datasets.py): an Arrow table read on a client
DS_FAMFS = "famfs_py.arrow.read_table (device memory)"
DS_MMAP = "pyarrow.memory_map through the mount"
DS_FILE = "pyarrow.ipc.open_file(path) through the mount"
DS_MEMORY = "in-memory copy of the column (process memory)"
DS_READERS = (("famfs", DS_FAMFS), ("mmap", DS_MMAP), ("file", DS_FILE))
_DS = {DS_FAMFS: (DS_MMAP, DS_FILE), DS_MMAP: (), DS_FILE: ()}
FAMFS_SYSTEMS.add(DS_FAMFS)

UPSTREAM_CREAT_MS = (90.0, 120.0)  # upstream famfs issue #60: 90-120 ms per `famfs creat`


@dataclass(frozen=True)
class Case:
    name: str
    title: str
    unit: str
    higher_is_better: bool
    compare: dict[str, tuple[str, ...]]  # system -> the systems its ratios are taken to
    note: str = ""


def _sequential() -> dict[str, tuple[str, ...]]:
    limit = MEMCPY_1M
    return {
        FAMFS_AUTO: (MIN_CACHED, TMPFS, limit),
        FAMFS_NEVER: (MIN_DIRECT, TMPFS, limit),
        FAMFS_ALWAYS: (MIN_CACHED, TMPFS, limit),
        FAMFS_AUTO_4K: (FAMFS_AUTO, TMPFS),
        FAMFS_NEVER_4K: (FAMFS_NEVER, TMPFS),
        FAMFS_ALWAYS_4K: (FAMFS_ALWAYS, TMPFS),
        FAMFS_RA: (FAMFS_AUTO, MIN_CACHED, TMPFS),
        MIN_CACHED: (TMPFS, limit),
        MIN_DIRECT: (TMPFS, limit),
        TMPFS: (limit,),
        MEMCPY_LARGE: (limit,),
        MEMCPY_POPULATE: (limit,),
        MEMCPY_4K: (limit,),
        MEMCPY_LARGE_4K: (limit,),
        limit: (),
    }


def _in_process() -> dict[str, tuple[str, ...]]:
    """In-process copies of a file's memory, against memcpy out of ordinary process memory
    (the same bytes count, the same 1 MiB target) and out of the device's own mapping."""
    proc = MEMCPY_PROCESS
    return {
        FAMFS_OPEN_MAPPED: (proc, MEMCPY_1M),
        FAMFS_OPEN_MAPPED_4K: (proc, MEMCPY_4K),
        FAMFS_MAPPED: (proc, MEMCPY_1M),
        FAMFS_MAPPED_4K: (proc, MEMCPY_4K),
        FAMFS_CP_FILL: (proc,),
        FAMFS_CP_FILL_4K: (proc,),
        KCOPY_VM_READV: (proc, MEMCPY_1M),
        KCOPY_PROC_MEM: (proc, MEMCPY_1M),
        MEMCPY_1M: (proc,),
        MEMCPY_4K: (proc,),
        proc: (),
    }


_SEQ = _sequential()
_COPY = _in_process()
_RAND = {
    FAMFS_AUTO: (MIN_CACHED, TMPFS),
    FAMFS_NEVER: (MIN_DIRECT, TMPFS),
    FAMFS_ALWAYS: (MIN_CACHED, TMPFS),
    MIN_CACHED: (TMPFS,),
    MIN_DIRECT: (TMPFS,),
    TMPFS: (MEMCPY_1M,),
    MEMCPY_1M: (),
}
_META = {FAMFS_AUTO: (MIN_CACHED, TMPFS), MIN_CACHED: (TMPFS,), TMPFS: ()}
_MOUNT = {FAMFS_AUTO: (MIN_CACHED,), FAMFS_REPLAY: (FAMFS_AUTO,), MIN_CACHED: ()}

COLD_NOTE = (
    "cold: fresh daemon/server (its mapping of the memory not faulted in yet) after "
    "drop_caches; memcpy from a fresh mapping; tmpfs has no cold state"
)
WARM_NOTE = (
    "warm: the same file again, reopened (-c auto and never read through the daemon again; "
    "-c always keeps the page cache)"
)
FIRST_NOTE = (
    "the memory was never written (hole punched before each round): every page is allocated "
    "and zeroed by the write, as for a new file on an emulated device"
)

CASES: list[Case] = [
    Case("seq_read_cold", "sequential read, cold", "GiB/s", True, _SEQ, COLD_NOTE),
    Case("seq_read_warm", "sequential read, warm", "GiB/s", True, _SEQ, WARM_NOTE),
    Case("seq_write_cold", "sequential write, cold", "GiB/s", True, _SEQ, COLD_NOTE),
    Case("seq_write_warm", "sequential write, warm", "GiB/s", True, _SEQ, WARM_NOTE),
    Case(
        "seq_write_first",
        "sequential write, first touch",
        "GiB/s",
        True,
        _SEQ,
        FIRST_NOTE,
    ),
    Case(
        "randread_4k_odirect",
        "4 KiB random read, O_DIRECT",
        "kIOPS",
        True,
        _RAND,
        "one thread, preadv into an aligned buffer; memcpy row: 4 KiB copies in a Python loop",
    ),
    Case(
        "randread_4k_buffered",
        "4 KiB random read, buffered",
        "kIOPS",
        True,
        _RAND,
        "file opened afresh each round (-c auto drops its page cache at open)",
    ),
    Case("stat_cold", "stat, cold", "µs/file", False, _META, "after drop_caches"),
    Case("stat_warm", "stat, warm", "µs/file", False, _META, "dentries and attributes cached"),
    Case("open_close_cold", "open+close, cold", "µs/file", False, _META, "after drop_caches"),
    Case("open_close_warm", "open+close, warm", "µs/file", False, _META),
    Case(
        "creat_single",
        "single creat (process wall time)",
        "ms",
        False,
        {FAMFS_CREAT: (UPSTREAM, PYTHON), UPSTREAM: (), PYTHON: (), TRUNCATE: ()},
        "a 4 KiB file; upstream's figure is published (issue #60), it cannot run here",
    ),
    Case(
        "create_batch",
        "batched creation of small files",
        "ms/file",
        False,
        {FAMFS_CP: (CP_TMPFS,), FAMFS_MULTI: (CP_TMPFS,), CP_TMPFS: ()},
        "one process copies/creates every 4 KiB file of a directory, into a filesystem of "
        "4 KiB allocation units (mkfs --4k: 2 MiB units would cost 2 MiB of memory a file)",
    ),
    Case(
        "follow_batch",
        "a client following a master's cp -r",
        "ms",
        False,
        {FAMFS_FOLLOW: ()},
        "from the end of the master's cp -r of the small files until a client mounted on the "
        "same memory shows the last of them",
    ),
    Case(
        "replay_entry",
        "log replay per entry",
        "µs/entry",
        False,
        {FAMFS_REPLAY_8M: (), FAMFS_REPLAY_256M: ()},
        "the in-process replay of the mount cases' logs, divided by their entries",
    ),
    Case(
        "mount_8m_full",
        "mount, full 8 MiB log (15,420 entries)",
        "s",
        False,
        _MOUNT,
        "famfs-py mount wall time; floor: a minimal pyfuse3 server's start to first answer",
    ),
    Case(
        "mount_256m",
        "mount, 256 MiB log",
        "s",
        False,
        _MOUNT,
        "mkfs -l 256m, log filled offline",
    ),
    Case("umount", "umount (main mount)", "s", False, {FAMFS_AUTO: ()}, "famfs-py umount"),
    Case(
        "mapped_read_cold",
        "in-process copy, fresh mapping (mapped API, cp)",
        "GiB/s",
        True,
        _COPY,
        "the file's whole size in 1 MiB copies through a mapping made just now (its page "
        "faults are part of it): open_mapped and FileMemory copy out of memory, cp copies a "
        "tmpfs file in; memcpy rows, measured just before on the same device: process memory, "
        "and a fresh mapping of the device's memory",
    ),
    Case(
        "mapped_read",
        "in-process copy, mapping faulted in (mapped API, cp)",
        "GiB/s",
        True,
        _COPY,
        "the same copies again through the same mapping; FileMemory copies through "
        "/proc/self/mem; the kernel-copy rows are the ceilings of a copy that cannot SIGBUS",
    ),
    Case(
        "randomize",
        "creat -r (fill with the seeded pattern)",
        "GiB/s",
        True,
        {FAMFS_RANDOMIZE: (MEMCPY_1M,), MEMCPY_1M: ()},
    ),
    Case(
        "verify",
        "verify (check the seeded pattern)",
        "GiB/s",
        True,
        {FAMFS_VERIFY: (MEMCPY_1M,), MEMCPY_1M: ()},
    ),
]
CASES += [
    Case(
        "flush_log_append",
        "log append (in-process Log.append)",
        "µs/entry",
        False,
        _FLUSH,
        "flush=on: the entry, then the header's counters, flushed after they are written",
    ),
    Case(
        "flush_cp",
        "cp of one large file over an existing one",
        "GiB/s",
        True,
        _FLUSH,
        "famfs-py cp from tmpfs; flush=on: each copy into memory flushed as it lands",
    ),
    Case(
        "flush_follow",
        "a client's follow latency",
        "ms",
        False,
        _FLUSH,
        "the master's creat reply until the client sees the file (client looks every 10 ms)",
    ),
    Case(
        "pcq_rate",
        "pcq messages between two hosts",
        "k msgs/s",
        True,
        _PCQ,
        f"producer on the master, consumer on a client (--rw), {PCQ_NBUCKETS} buckets; from "
        "the producer's first put to the consumer's last get",
    ),
    Case(
        "pcq_latency",
        "pcq one-way latency, median",
        "µs",
        False,
        _PCQ,
        "one message at a time: the consumer's clock after its get minus the producer's "
        "before its put (one machine, one clock)",
    ),
    Case("pcq_latency_p99", "pcq one-way latency, 99th percentile", "µs", False, _PCQ),
]
_DS_NOTE = "a client reading the master's Arrow IPC table (1 GiB; --quick: 256 MiB)"
CASES += [
    Case("ds_read_table", "time to a usable table", "s", False, _DS, _DS_NOTE),
    Case("ds_first_scan", "first sum over every column", "s", False, _DS, _DS_NOTE),
    Case("ds_anon", "anonymous memory the reader added", "MiB", False, _DS, _DS_NOTE),
    Case(
        "ds_page_cache",
        "page cache the reader filled",
        "MiB",
        False,
        _DS,
        "cachestat(2) of the file on the client after the reader",
    ),
    Case(
        "ds_column_sum",
        "sum of one int64 column, warm",
        "GiB/s",
        True,
        {DS_FAMFS: (DS_MEMORY,), DS_MEMORY: ()},
        "pyarrow.compute.sum over the famfs table's column and over a copy in process memory",
    ),
]
_SCALE: dict[str, tuple[str, ...]] = {FAMFS_SCALE: ()}
CASES += [  # full runs only: one filesystem of many small files (bench/smallfiles.py)
    Case("scale_mkfs", "scale: mkfs --4k with a large log", "s", False, _SCALE),
    Case("scale_create", "scale: cp -r of every file", "s", False, _SCALE),
    Case("scale_mount", "scale: mount (the whole log replayed)", "s", False, _SCALE),
    Case("scale_ls", "scale: ls -lR after drop_caches", "s", False, _SCALE),
    Case("scale_fsck", "scale: fsck through the mount", "s", False, _SCALE),
]
CASE_BY_NAME = {c.name: c for c in CASES}


@dataclass(frozen=True)
class Target:
    """A goal for one measurement: a ratio to `ref` measured in the same run, or (ref None)
    an absolute value. `sized_by` names the run sizes (bench.rounds.Config fields) an
    absolute target was set for at the full run's values; a quick run, whose sizes are
    smaller, does not judge it (per-file costs over fewer files are mostly process start)."""

    text: str
    case: str
    system: str
    ref: str | None  # None: `limit` is an absolute value in the case's unit
    limit: float
    at_least: bool  # True: ratio/value must be >= limit
    sized_by: tuple[str, ...] = ()
    sized_what: str = ""  # what sized_by counts, for the printed note ("files per cp -r")


TARGETS: list[Target] = [
    Target(
        "seq read ≥ 0.9× minimal pyfuse3 (-c auto, cold)",
        "seq_read_cold",
        FAMFS_AUTO,
        MIN_CACHED,
        0.9,
        True,
    ),
    Target(
        "seq read ≥ 0.9× minimal pyfuse3 (-c auto, warm)",
        "seq_read_warm",
        FAMFS_AUTO,
        MIN_CACHED,
        0.9,
        True,
    ),
    Target(
        "seq read ≥ 0.9× minimal pyfuse3 (-c never, cold)",
        "seq_read_cold",
        FAMFS_NEVER,
        MIN_DIRECT,
        0.9,
        True,
    ),
    Target(
        "seq read ≥ 0.9× minimal pyfuse3 (-c never, warm)",
        "seq_read_warm",
        FAMFS_NEVER,
        MIN_DIRECT,
        0.9,
        True,
    ),
    Target("seq read ≥ 0.5× tmpfs (-c auto, cold)", "seq_read_cold", FAMFS_AUTO, TMPFS, 0.5, True),
    Target("seq read ≥ 0.5× tmpfs (-c auto, warm)", "seq_read_warm", FAMFS_AUTO, TMPFS, 0.5, True),
    Target(
        "seq read ≥ 0.5× tmpfs (-c never, cold)", "seq_read_cold", FAMFS_NEVER, TMPFS, 0.5, True
    ),
    Target(
        "seq read ≥ 0.5× tmpfs (-c never, warm)", "seq_read_warm", FAMFS_NEVER, TMPFS, 0.5, True
    ),
    Target("warm stat ≤ 1.5× tmpfs", "stat_warm", FAMFS_AUTO, TMPFS, 1.5, False),
    Target(
        "batched creation ≤ 2 ms/file (cp -r)",
        "create_batch",
        FAMFS_CP,
        None,
        2.0,
        False,
        ("cp_files",),
        "files per batch",
    ),
    Target(
        "batched creation ≤ 2 ms/file (creat -M)",
        "create_batch",
        FAMFS_MULTI,
        None,
        2.0,
        False,
        ("cp_files",),
        "files per batch",
    ),
    Target("single creat ≤ 60 ms", "creat_single", FAMFS_CREAT, None, 60.0, False),
    # issue 25: per-file costs near the kernel's
    Target("single creat ≤ 2× python startup", "creat_single", FAMFS_CREAT, PYTHON, 2.0, False),
    Target("cp -r ≤ 10× cp -r on tmpfs, per file", "create_batch", FAMFS_CP, CP_TMPFS, 10.0, False),
    Target("cold stat ≤ 1.2× minimal pyfuse3", "stat_cold", FAMFS_AUTO, MIN_CACHED, 1.2, False),
    Target(
        "cold open+close ≤ 1.2× minimal pyfuse3",
        "open_close_cold",
        FAMFS_AUTO,
        MIN_CACHED,
        1.2,
        False,
    ),
    Target(
        "a client keeps up with cp -r (last file seen ≤ 1 s after)",
        "follow_batch",
        FAMFS_FOLLOW,
        None,
        1000.0,
        False,
        ("cp_files",),
        "files per cp -r",
    ),
    Target(
        "log replay ≤ 2 µs/entry (256 MiB log)", "replay_entry", FAMFS_REPLAY_256M, None, 2.0, False
    ),
    Target("mount ≤ 0.5 s, 15,420 entries", "mount_8m_full", FAMFS_AUTO, None, 0.5, False),
    Target(
        "mount ≤ 10 s, 256 MiB log",
        "mount_256m",
        FAMFS_AUTO,
        None,
        10.0,
        False,
        ("log256_entries",),
        "log entries",
    ),
    Target(
        "column sum over a famfs table ≥ 0.9× an in-memory table",
        "ds_column_sum",
        DS_FAMFS,
        DS_MEMORY,
        0.9,
        True,
    ),
    Target(
        "mapped reads ≥ 0.9× memcpy (open_mapped)",
        "mapped_read",
        FAMFS_OPEN_MAPPED,
        MEMCPY_1M,
        0.9,
        True,
    ),
]


# -- samples -------------------------------------------------------------------------------
@dataclass
class Summary:
    median: float
    low: float
    high: float
    count: int


@dataclass
class Results:
    samples: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    skipped: dict[tuple[str, str], str] = field(default_factory=dict)
    notes: dict[tuple[str, str], str] = field(default_factory=dict)

    def add(self, case: str, system: str, value: float) -> None:
        assert case in CASE_BY_NAME, case
        self.samples.setdefault((case, system), []).append(value)

    def skip(self, case: str, system: str, why: str) -> None:
        self.skipped[(case, system)] = why

    def note(self, case: str, system: str, text: str) -> None:
        self.notes[(case, system)] = text

    def summary(self, case: str, system: str) -> Summary | None:
        values = self.samples.get((case, system))
        if not values:
            return None
        return Summary(statistics.median(values), min(values), max(values), len(values))

    def systems(self, case: str) -> list[str]:
        """Systems of `case` with samples or a skip note, in the case's order."""
        known = list(CASE_BY_NAME[case].compare)
        seen = [s for (c, s) in list(self.samples) + list(self.skipped) if c == case]
        ordered = [s for s in known if s in seen]
        return ordered + [s for s in dict.fromkeys(seen) if s not in ordered]

    def ratio(self, case: str, system: str, ref: str) -> float | None:
        mine, theirs = self.summary(case, system), self.summary(case, ref)
        if mine is None or theirs is None or theirs.median == 0:
            return None
        return mine.median / theirs.median


MET, MISSED, NOT_MEASURED, NOT_JUDGED = "met", "missed", "not measured", "not judged"


def judged_in(target: Target, mode: str) -> bool:
    """Whether a run of `mode` ("full", "quick") judges `target`: a full run judges every
    target; a quick run only those that do not depend on the run's sizes (ratios to a
    baseline of the same run, and absolute targets with no `sized_by`)."""
    return mode != "quick" or not target.sized_by


def target_status(results: Results, target: Target, mode: str = "full") -> tuple[str, float | None]:
    """(MET | MISSED | NOT_MEASURED | NOT_JUDGED, the ratio or value compared). NOT_JUDGED:
    measured (the value is returned) but the target belongs to the full run's sizes."""
    if target.ref is None:
        summary = results.summary(target.case, target.system)
        value = summary.median if summary else None
    else:
        value = results.ratio(target.case, target.system, target.ref)
    if value is None:
        return NOT_MEASURED, None
    if not judged_in(target, mode):
        return NOT_JUDGED, value
    ok = value >= target.limit if target.at_least else value <= target.limit
    return (MET if ok else MISSED), value


# -- 4 KiB against 2 MiB pages of emulated memory (issue 13) ---------------------------------
@dataclass(frozen=True)
class PagePair:
    """One measurement on 4 KiB-page and on 2 MiB-page emulated memory, each as a ratio to
    the same baseline of the same run."""

    label: str
    case: str
    system_4k: str
    system_2m: str
    ref: str


PAGE_PAIRS: list[PagePair] = [
    PagePair(f"read {state}, -c {cache}", f"seq_read_{state}", sys4k, sys2m, TMPFS)
    for state in ("cold", "warm")
    for cache, sys4k, sys2m in (
        ("auto", FAMFS_AUTO_4K, FAMFS_AUTO),
        ("never", FAMFS_NEVER_4K, FAMFS_NEVER),
        ("always", FAMFS_ALWAYS_4K, FAMFS_ALWAYS),
    )
] + [
    PagePair(f"{what}, {state}", case, sys4k, sys2m, MEMCPY_PROCESS)
    for state, case in (("fresh mapping", "mapped_read_cold"), ("faulted in", "mapped_read"))
    for what, sys4k, sys2m in (
        ("open_mapped copy", FAMFS_OPEN_MAPPED_4K, FAMFS_OPEN_MAPPED),
        ("FileMemory kernel copy", FAMFS_MAPPED_4K, FAMFS_MAPPED),
        ("cp's copy into memory", FAMFS_CP_FILL_4K, FAMFS_CP_FILL),
        ("memcpy of the device's memory", MEMCPY_4K, MEMCPY_1M),
    )
]
