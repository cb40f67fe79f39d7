"""fsck: check a famfs superblock, log header and every log entry, and sum up the space.

Scans like upstream's famfs_build_bitmap: corrupt entries are counted and skipped (the scan
goes on), extents of valid entries are marked and double claims counted as collisions.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from famfs_py import omf
from famfs_py.dax.memory import DeviceMemory, MemoryFault
from famfs_py.fs.alloc import Bitmap
from famfs_py.fs.identity import Role
from famfs_py.fs.log import Log, read_log_header, read_superblock

# fsck's exit code counts problems up to this; above it (and never >= 128, which shells and
# upstream's scripts read as death by a signal) the code means "could not check"
MAX_PROBLEMS_EXIT = 99


@dataclass
class FsckReport:
    device: str
    superblock_problems: list[str] = field(default_factory=list)
    log_problems: list[str] = field(default_factory=list)
    bad_entries: list[dict[str, Any]] = field(default_factory=list)  # index, reasons
    role: Role | None = None
    fs_uuid: str | None = None
    system_uuid: str | None = None
    dev_uuid: str | None = None
    dev_name: str = ""  # the device name the superblock records (upstream's "primary")
    dev_size: int = 0
    alloc_unit: int = 0
    omf_version: tuple[int, int] = (0, 0)
    log_offset: int = 0
    log_len: int = 0
    log_slots: int = 0
    entries: int = 0
    files: int = 0
    dirs: int = 0
    nbits: int = 0
    bits_set: int = 0
    alloc_bytes: int = 0
    free_bytes: int = 0
    sum_file_sizes: int = 0
    collisions: int = 0
    files_detail: list[dict[str, Any]] = field(default_factory=list)  # path, size, extents
    buckets: list[dict[str, int]] = field(default_factory=list)

    @property
    def problems(self) -> int:
        return (
            len(self.superblock_problems)
            + len(self.log_problems)
            + len(self.bad_entries)
            + self.collisions
        )

    @property
    def exit_code(self) -> int:
        return min(self.problems, MAX_PROBLEMS_EXIT)

    @property
    def space_amplification(self) -> float:
        return self.alloc_bytes / self.sum_file_sizes if self.sum_file_sizes else 0.0

    @classmethod
    def from_json(cls, data: dict[str, object]) -> FsckReport:
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        version = values.get("omf_version")
        if isinstance(version, list):  # JSON has no tuples
            values["omf_version"] = tuple(version)
        role = values.get("role")
        values["role"] = Role.from_upstream_name(role) if isinstance(role, str) else None
        return cls(**values)  # type: ignore[arg-type]

    def as_json(self) -> dict[str, object]:
        out = asdict(self)
        out["role"] = self.role.upstream_name if self.role else None  # upstream's words
        out["problems"] = self.problems
        out["space_amplification"] = round(self.space_amplification, 3)
        return out


def bucket_stats(bitmap: Bitmap, nbuckets: int) -> list[dict[str, int]]:
    """Per-bucket use, as upstream's `fsck -B` shows it for interleaved allocation."""
    au = bitmap.alloc_unit
    per = bitmap.nbits // nbuckets
    out = []
    for index in range(nbuckets):
        runs = bitmap.free_runs(index * per, (index + 1) * per)
        free = sum(runs)
        out.append(
            {
                "bucket": index,
                "offset": index * per * au,
                "size": per * au,
                "used": (per - free) * au,
                "free": free * au,
                "free_fragments": len(runs),
                "largest_fragment": max(runs, default=0) * au,
                "smallest_fragment": min(runs, default=0) * au,
            }
        )
    return out


def fsck_memory(
    mem: DeviceMemory,
    device: str,
    this_host: uuid.UUID,
    *,
    detail: bool = False,
    nbuckets: int = 0,
) -> FsckReport:
    """Check the famfs in `mem` (the device must not be written meanwhile)."""
    report = FsckReport(device)
    try:
        sb = read_superblock(mem)
    except MemoryFault as exc:
        report.superblock_problems.append(f"the superblock cannot be read: {exc}")
        return report
    report.superblock_problems = sb.problems()
    if report.superblock_problems:
        return report
    if sb.dev_size > mem.size or sb.dev_size < sb.log_offset + sb.log_len:
        report.superblock_problems.append(
            f"superblock says the device holds {sb.dev_size} bytes; it holds {mem.size}"
        )
        return report
    report.fs_uuid = str(sb.fs_uuid)
    report.system_uuid = str(sb.system_uuid)
    report.role = Role.of(this_host, sb.system_uuid)
    report.dev_uuid = str(sb.dev_uuid)
    report.dev_name = sb.dev_name
    report.dev_size = sb.dev_size
    report.alloc_unit = sb.alloc_unit
    report.omf_version = (sb.omf_major, sb.omf_minor)
    report.log_offset = sb.log_offset
    report.log_len = sb.log_len
    try:
        header = read_log_header(mem, sb)
    except MemoryFault as exc:
        report.log_problems.append(f"the log header cannot be read: {exc}")
        return report
    report.log_problems = header.problems(sb.log_len)
    if report.log_problems:
        return report
    report.log_slots = header.slots
    famfs_log = Log(mem, sb, header)
    stats = famfs_log.replay(stop_at_corrupt=False)
    report.entries = famfs_log.next_index
    report.files = stats.files
    report.dirs = stats.dirs
    report.sum_file_sizes = stats.sum_file_sizes
    report.bad_entries = [
        {"index": b.index, "reasons": list(b.reasons), "corrupt": b.corrupt} for b in stats.bad
    ]
    bitmap = famfs_log.bitmap
    report.nbits = bitmap.nbits
    report.bits_set = bitmap.used
    report.collisions = bitmap.collisions
    report.alloc_bytes = bitmap.used * bitmap.alloc_unit
    report.free_bytes = bitmap.free * bitmap.alloc_unit
    if nbuckets:
        report.buckets = bucket_stats(bitmap, nbuckets)
    if detail:
        ns = famfs_log.namespace
        for inode in ns.logged_files():
            assert inode.meta is not None
            report.files_detail.append(
                {
                    "path": ns.path_of(inode.ino),
                    "size": inode.size,
                    "extents": [
                        {"offset": e.offset, "length": e.length}
                        for e in omf.fmap_extents(inode.meta.fmap)
                    ],
                }
            )
    return report
