"""The in-process media bench: load a corrupt image into an emulated device and drive what the
commands drive (fsck's device check, the mount's replay as master and as client, reads, mkfs,
a master's append) through the library, checking the campaign's invariants on every case.

Invariants: only the documented errors (FamfsError/FsError) ever escape; no access outside
the device; nothing but the write phase changes a byte; nothing in the namespace that the log
does not say (checked against the raw bytes, by rules written here from shared/spec/omf.md);
nothing lost that the damage did not touch (checked against the undamaged base); replay stops
exactly at the first corrupt entry (mount) or scans past it (fsck); a client that follows the
log in steps ends where a fresh replay ends; a master's next file collides with nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import random
import signal
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers import fingerprint

from famfs_py import omf
from famfs_py.cli.fsck_cmd import check_device
from famfs_py.dax import emulated
from famfs_py.dax.memory import DeviceMemory
from famfs_py.errors import FamfsError, FsError
from famfs_py.fs import log as fslog
from famfs_py.fs.filesystem import Famfs
from famfs_py.fs.identity import Role
from famfs_py.fs.log import Log
from famfs_py.fs.mkfs import mkfs
from famfs_py.fs.namespace import FIRST_ENTRY_INO, META_DIR, ROOT_INO, Namespace

from .corrupt import DEV_SIZE, MASTER, OTHER, Case, Image

# A case taking longer is a hang. The walk of image D (2,000 files) faults in a 2 MiB page of
# emulated memory per file, each zeroed by the kernel: 3-7 s of a case on this shared machine,
# where a hang is a loop that never ends.
CASE_SECONDS = 30.0
PAGE = 4096


class CaseTimeout(Exception):
    pass


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise CaseTimeout in this (main) thread if the block runs longer than `seconds`."""

    def expired(signum: int, frame: Any) -> None:
        raise CaseTimeout(f"took longer than {seconds}s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# -- the spec's rules, written independently of famfs_py ---------------------------------------
@dataclass(frozen=True)
class Node:
    path: str
    is_dir: bool
    size: int
    mode: int
    uid: int
    gid: int
    extents: tuple[tuple[int, int], ...] = ()


def _u64(buf: bytes, offset: int) -> int:
    return int.from_bytes(buf[offset : offset + 8], "little")


def _u32(buf: bytes, offset: int) -> int:
    return int.from_bytes(buf[offset : offset + 4], "little")


def sb_verdict(image: Image) -> str | None:
    """Why a mount must refuse this superblock or device (None: it must accept it)."""
    sb = image.sb
    if image.memory < omf.SUPERBLOCK_STRUCT_SIZE:
        return "superblock unreadable"
    if _u64(sb, 0) != omf.SUPER_MAGIC:
        return "magic"
    if _u64(sb, 96) != zlib.crc32(sb[:96]):
        return "crc"
    if _u64(sb, 32) not in (omf.ALLOC_UNIT, 4096):
        return "alloc unit"
    if _u64(sb, 8) != omf.CURRENT_VERSION:
        return "version"
    log_offset, log_len, dev_size = _u64(sb, 16), _u64(sb, 24), _u64(sb, 112)
    if log_offset != omf.LOG_OFFSET:
        return "log offset"
    if log_len < 8 << 20 or log_len & (log_len - 1):
        return "log length"
    if dev_size < log_offset + log_len:
        return "device size in the superblock is smaller than the log's end"
    if dev_size > image.dev_size:
        return "device smaller than the superblock says"
    return None


def hdr_verdict(image: Image) -> str | None:
    """Why a mount must refuse this log header (None: it must accept it); the superblock is
    valid."""
    log_len = _u64(image.sb, 24)
    if image.memory < omf.LOG_OFFSET + omf.LOG_HEADER_SIZE:
        return "log header unreadable"
    hdr = image.log[: omf.LOG_HEADER_SIZE]
    if _u64(hdr, 0) != omf.LOG_MAGIC:
        return "magic"
    if _u64(hdr, 24) != zlib.crc32(hdr[:24]):
        return "crc"
    if _u64(hdr, 8) != log_len:
        return "log length"
    slots = (log_len - omf.LOG_HEADER_SIZE) // omf.LOG_ENTRY_SIZE
    if _u64(hdr, 16) != slots - 1:
        return "last index"
    if _u64(hdr, 40) > slots:
        return "next index"
    return None


def committed(image: Image) -> int:
    return image.next_index


def raw_ok(raw: bytes, index: int) -> bool:
    """CRC over the raw bytes and seqnum == slot: the entry is not corrupt."""
    return _u64(raw, 536) == zlib.crc32(raw[:536]) and _u64(raw, 0) == index


def entry_ok(image: Image, index: int) -> bool:
    """The entry is readable (its memory is there) and not corrupt."""
    end = omf.LOG_OFFSET + omf.entry_offset(index + 1)
    return end <= image.memory and raw_ok(image.entry(index), index)


def first_corrupt(image: Image) -> int | None:
    for index in range(committed(image)):
        if not entry_ok(image, index):
            return index
    return None


def path_ok(raw_path: bytes) -> str | None:
    path = raw_path.split(b"\0", 1)[0]
    if not path or len(path) > 79 or path.startswith(b"/"):
        return None
    parts = path.split(b"/")
    if any(p in (b"", b".", b"..") for p in parts) or parts[0] == META_DIR.encode():
        return None
    return path.decode("utf-8", "surrogateescape")


def decode_extents(raw: bytes) -> tuple[tuple[int, int], ...] | None:
    """The extents (or strips) of a FILE entry, or None if its fmap is not one the spec
    describes."""
    ext_type, count = _u32(raw, 120), _u32(raw, 128)
    if ext_type == omf.EXT_SIMPLE and 1 <= count <= 16:
        return tuple((_u64(raw, 144 + 24 * k), _u64(raw, 152 + 24 * k)) for k in range(count))
    if ext_type == omf.EXT_INTERLEAVE and count == 1:
        nstrips = _u64(raw, 136)
        if 1 <= nstrips <= 16:
            return tuple((_u64(raw, 160 + 24 * k), _u64(raw, 168 + 24 * k)) for k in range(nstrips))
    return None


def file_ok(raw: bytes, au: int, limit: int) -> bool:
    """Whether a FILE entry's size and fmap are usable on a device of `limit` bytes."""
    extents = decode_extents(raw)
    size = _u64(raw, 16)
    if extents is None or size == 0:
        return False
    for offset, length in extents:
        if offset == 0 or length == 0 or offset % au or length % au or offset + length > limit:
            return False
    if _u32(raw, 120) == omf.EXT_INTERLEAVE:
        chunk = _u64(raw, 144)
        if chunk == 0 or chunk % au or len({n for _, n in extents}) > 1:
            return False
    return sum(n for _, n in extents) >= size


def node_of(raw: bytes) -> Node:
    kind = _u32(raw, 8)
    if kind == omf.LOG_MKDIR:
        uid, gid, mode = struct.unpack_from("<III", raw, 16)
        return Node(path_ok(raw[28:108]) or "", True, 0, mode & 0o7777, uid, gid)
    size, _flags, uid, gid, mode = struct.unpack_from("<QIIII", raw, 16)
    return Node(
        path_ok(raw[40:120]) or "", False, size, mode & 0o7777, uid, gid, decode_extents(raw) or ()
    )


# -- what the product built ---------------------------------------------------------------------
def snapshot(ns: Namespace) -> dict[int, Node]:
    out = {}
    for inode in ns.inodes.values():
        if inode.entry_index is None:
            continue
        extents: tuple[tuple[int, int], ...] = ()
        if inode.meta is not None:
            extents = tuple((e.offset, e.length) for e in omf.fmap_extents(inode.meta.fmap))
        out[inode.entry_index] = Node(
            ns.path_of(inode.ino),
            inode.is_dir,
            inode.size,
            inode.mode,
            inode.uid,
            inode.gid,
            extents,
        )
    return out


def tree_problems(ns: Namespace) -> list[str]:
    """The namespace is a tree: every inode reachable once from the root, names sane, numbers
    tied to log indices, .meta untouched."""
    out = []
    seen = {ROOT_INO}
    stack = [ROOT_INO]
    while stack:
        inode = ns.inodes[stack.pop()]
        for name, ino in (inode.children or {}).items():
            child = ns.inodes.get(ino)
            if child is None or ino in seen:
                out.append(f"{name}: dangling or reached twice")
                continue
            if child.parent != inode.ino or child.name != name:
                out.append(f"{name}: parent link broken")
            if not name or "/" in name or "\0" in name or name in (".", ".."):
                out.append(f"bad name {name!r}")
            seen.add(ino)
            stack.append(ino)
    if seen != set(ns.inodes):
        out.append(f"{len(set(ns.inodes) - seen)} inodes unreachable")
    meta = ns.resolve(META_DIR)
    if meta is None or sorted(meta.children or {}) != [".log", ".superblock"]:
        out.append(".meta changed")
    for inode in ns.inodes.values():
        if inode.entry_index is not None and inode.ino != FIRST_ENTRY_INO + inode.entry_index:
            out.append(f"{inode.name}: inode {inode.ino} for entry {inode.entry_index}")
    return out


def invented(snap: dict[int, Node], image: Image) -> list[str]:
    """Every node must be what its raw entry says, by the spec's rules."""
    out = []
    au = _u64(image.sb, 32)
    limit = min(_u64(image.sb, 112), image.dev_size)
    for index, node in sorted(snap.items()):
        raw = image.entry(index)
        if index >= committed(image):
            out.append(f"entry {index}: applied but not committed")
            continue
        if not entry_ok(image, index):
            out.append(f"entry {index}: applied although corrupt or unreadable")
            continue
        expect = node_of(raw)
        if not expect.path:
            out.append(f"entry {index}: applied with an unusable path {node.path!r}")
        elif expect != node:
            out.append(f"entry {index}: {node} but the log says {expect}")
        if not node.is_dir and not file_ok(raw, au, limit):
            out.append(f"entry {index}: file {node.path!r} applied with an unusable fmap")
        parent = node.path.rpartition("/")[0]
        if parent and not any(n.path == parent and n.is_dir and i < index for i, n in snap.items()):
            out.append(f"entry {index}: {node.path!r} without an earlier parent directory")
    paths = [n.path for n in snap.values()]
    if len(paths) != len(set(paths)):
        out.append("two entries share a path")
    return out


def lost(
    snap: dict[int, Node],
    pristine: dict[int, Node],
    case: Case,
    image: Image,
    stop: int | None,
) -> list[str]:
    """Entries of the undamaged base that must still be there, unchanged."""
    out = []
    au = _u64(image.sb, 32)
    limit = min(_u64(image.sb, 112), image.dev_size)
    roots = set()
    for m in case.mutated:
        for source in (pristine, snap):
            if m in source:
                roots.add(source[m].path)
    for j, node in pristine.items():
        if j < committed(image) and not entry_ok(image, j):
            roots.add(node.path)
        if not node.is_dir and any(
            o % au or n % au or o + n > limit or o == 0 for o, n in node.extents
        ):
            roots.add(node.path)
    n = committed(image)
    for j, node in pristine.items():
        if j in case.mutated:
            continue
        if j in snap:
            if snap[j] != node:
                out.append(f"entry {j}: {snap[j]} instead of {node}")
            continue
        if j >= n or (stop is not None and j >= stop):
            continue
        if any(node.path == r or node.path.startswith(r + "/") for r in roots):
            continue
        out.append(f"entry {j} ({node.path}) lost")
    return out


# -- the bench ------------------------------------------------------------------------------------
@dataclass
class Outcome:
    name: str
    problems: list[str] = field(default_factory=list)
    fsck: str = ""
    mount: str = ""
    mkfs: str = ""
    append: str = ""
    seconds: float = 0.0


class MediaBench:
    """One emulated device seen by a master host and a client host (one memory), reloaded
    with each case's image."""

    def __init__(self, master_root: Path, client_root: Path) -> None:
        self.master = emulated.create("dax0.0", DEV_SIZE, master_root)
        self.client = emulated.create("dax0.0", None, client_root, share=str(self.master.node))
        self.backing = Path(os.path.realpath(self.master.node))
        self.scratch = os.memfd_create("famfs-py-bench-reads")
        self.outside: list[str] = []
        self.cases_run = 0
        self._original_check = DeviceMemory._check

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        """Record every attempt to touch memory outside a mapping (they also raise), make
        the corrupt-entry retry instant and keep the expected warnings quiet."""
        bench = self
        original = self._original_check

        def check(mem: DeviceMemory, offset: int, length: int) -> None:
            if offset < 0 or length < 0 or offset + length > mem.size:
                bench.outside.append(f"{offset:#x}+{length:#x} of {mem.size:#x}")
            original(mem, offset, length)

        saved_delay = fslog.RETRY_DELAY
        DeviceMemory._check = check  # type: ignore[method-assign]
        fslog.RETRY_DELAY = 0.0
        logging.disable(logging.CRITICAL)  # thousands of expected warnings about bad entries
        try:
            yield
        finally:
            logging.disable(logging.NOTSET)
            DeviceMemory._check = original  # type: ignore[method-assign]
            fslog.RETRY_DELAY = saved_delay

    def close(self) -> None:
        os.close(self.scratch)

    def load(self, image: Image) -> None:
        fd = os.open(self.backing, os.O_RDWR)
        try:
            os.ftruncate(fd, 0)
            os.ftruncate(fd, max(image.memory, omf.LOG_OFFSET + len(image.log)))
            os.pwrite(fd, image.sb, 0)
            os.pwrite(fd, image.log, omf.LOG_OFFSET)
            for offset, data in image.data:
                if offset + len(data) <= image.memory:
                    os.pwrite(fd, data, offset)
            os.ftruncate(fd, image.memory)
        finally:
            os.close(fd)
        for device in (self.master, self.client):
            (device.sysfs_dir / "size").write_text(f"{image.dev_size}\n")

    # -- steps ---------------------------------------------------------------------------
    def _fsck(self, device_root: Path, host: str) -> Any:
        args = argparse.Namespace(
            target="dax0.0",
            root=str(device_root),
            devdax=False,
            verbose=1,
            nbuckets=0,
            system_uuid=host,
        )
        return check_device(args)

    def _replay_fsck_mode(self) -> Log:
        mem = DeviceMemory.of_device(self.master, writable=False)
        sb = fslog.read_superblock(mem)
        famfs_log = Log(mem, sb, fslog.read_log_header(mem, sb))
        famfs_log.replay(stop_at_corrupt=False)
        return famfs_log

    def _walk(self, fs: Famfs, image: Image, out: Outcome) -> None:
        """stat and read every file (first and last page), as `ls -lR` and `cat` would."""
        for inode in list(fs.namespace.inodes.values()):
            if inode.is_dir:
                continue
            for offset in (0, max(0, inode.size - PAGE)):
                try:
                    data = fs.read(inode, offset, PAGE)
                    os.pwrite(self.scratch, data, 0)  # the kernel copies, as a FUSE reply
                except FsError as exc:
                    if exc.errno != errno.EIO:
                        out.problems.append(f"read of {inode.name}: {exc}")
                except OSError as exc:
                    if exc.errno != errno.EFAULT or image.mem_size is None:
                        out.problems.append(f"read of {inode.name}: {exc!r}")
        fs.status()

    def examine(self, case: Case, pristine: dict[str, dict[int, Node]]) -> Outcome:
        out = Outcome(case.name)
        started = time.monotonic()
        self.outside.clear()
        try:
            with deadline(CASE_SECONDS):
                self._examine(case, pristine, out)
        except CaseTimeout as exc:
            out.problems.append(f"hang: {exc}")
        except Exception as exc:  # a traceback a user would have seen
            import traceback

            out.problems.append(f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
        if self.outside:
            out.problems.append(f"accesses outside the device: {self.outside[:3]}")
        out.seconds = time.monotonic() - started
        self.cases_run += 1
        return out

    def _examine(self, case: Case, pristine: dict[str, dict[int, Node]], out: Outcome) -> None:
        image = case.image
        self.load(image)
        before = fingerprint(self.backing)
        sb_why = sb_verdict(image)
        hdr_why = None if sb_why else hdr_verdict(image)
        stop = first_corrupt(image) if not (sb_why or hdr_why) else None

        # offline fsck, exactly as `famfs-py fsck DEV` checks
        try:
            report = self._fsck(self.master.sysfs.root.parent, str(MASTER))
        except FamfsError as exc:
            out.fsck = f"refused: {exc.message}"
            if not (sb_why or image.dev_size == 0):
                out.problems.append(f"fsck refused a readable device: {exc.message}")
        else:
            out.fsck = f"{report.problems} problems"
            if bool(report.superblock_problems) != bool(sb_why):
                out.problems.append(
                    f"fsck superblock verdict {report.superblock_problems} vs spec {sb_why}"
                )
            elif not sb_why and bool(report.log_problems) != bool(hdr_why):
                out.problems.append(f"fsck log verdict {report.log_problems} vs spec {hdr_why}")
            elif not (sb_why or hdr_why):
                fsck_log = self._replay_fsck_mode()
                snap = snapshot(fsck_log.namespace)
                out.problems += [f"fsck: {p}" for p in tree_problems(fsck_log.namespace)]
                out.problems += [f"fsck: {p}" for p in invented(snap, image)]
                out.problems += [
                    f"fsck: {p}" for p in lost(snap, pristine["fsck"], case, image, None)
                ]
                fsck_log.mem.close()
                if stop is not None and not report.bad_entries:
                    out.problems.append(f"fsck missed the corrupt entry {stop}")

        # the mount's replay, as master, then as a client host
        views = {}
        for role, device, host in (("master", self.master, MASTER), ("client", self.client, OTHER)):
            try:
                fs = Famfs.open(device, this_host=host)
            except FsError as exc:
                out.mount += f"{role} refused; "
                if not (sb_why or hdr_why):
                    out.problems.append(f"{role} mount refused an acceptable image: {exc}")
                continue
            try:
                out.mount += f"{role} {fs.role}{' failsafe' if fs.health.failsafe else ''}; "
                if sb_why or hdr_why:
                    out.problems.append(
                        f"{role} mount accepted an image it must refuse ({sb_why or hdr_why})"
                    )
                snap = snapshot(fs.namespace)
                views[role] = snap
                out.problems += [f"{role}: {p}" for p in tree_problems(fs.namespace)]
                out.problems += [f"{role}: {p}" for p in invented(snap, image)]
                out.problems += [
                    f"{role}: {p}" for p in lost(snap, pristine["mount"], case, image, stop)
                ]
                if fs.log.stopped_at != stop:
                    out.problems.append(
                        f"{role}: replay stopped at {fs.log.stopped_at}, spec says {stop}"
                    )
                if bool(fs.health.failsafe) != (stop is not None):
                    out.problems.append(f"{role}: failsafe {fs.health.failsafe!r} with stop {stop}")
                self._walk(fs, image, out)
            finally:
                fs.close()
        if len(views) == 2 and views["master"] != views["client"]:
            out.problems.append("master and client replays differ")
        if fingerprint(self.backing) != before:
            out.problems.append("a read-only step changed the device")
            return

        # mkfs without -f: refuses a device holding a superblock, even a damaged one
        if case.holds_superblock:
            try:
                mkfs(self.master, system_uuid=MASTER)
            except FamfsError as exc:
                out.mkfs = f"refused: {exc.message}"
            else:
                out.mkfs = "made a filesystem"
                out.problems.append("mkfs without -f overwrote a device holding a superblock")
                return
            if fingerprint(self.backing) != before:
                out.problems.append("a refused mkfs changed the device")
                return

        # write phase: a client following in steps; the master's next create
        if "client" in views and committed(image) > 1:
            self._follow_in_steps(image, views["client"], out, case)
        if "master" in views and stop is None and image.sb[80:96] == MASTER.bytes:
            self._append(image, out)

    def _follow_in_steps(
        self, image: Image, full: dict[int, Node], out: Outcome, case: Case
    ) -> None:
        n = committed(image)
        k = random.Random(case.name).randrange(n)
        counters = omf.LOG_OFFSET + omf.COUNTERS_OFFSET
        fd = os.open(self.backing, os.O_RDWR)
        try:
            original = os.pread(fd, 16, counters)
            os.pwrite(fd, omf.pack_counters(k, k), counters)
            fs = Famfs.open(self.client, this_host=OTHER)
            os.pwrite(fd, original, counters)
        finally:
            os.close(fd)
        try:
            fs.follow()
            fs.follow()
            if fs.role is Role.MASTER:  # its own count moved under it: another writer
                if not fs.health.failsafe or "another writer" not in fs.health.failsafe:
                    out.problems.append("a master whose log count moved did not go failsafe")
            elif snapshot(fs.namespace) != full:
                out.problems.append(f"a client that saw {k} entries and then followed differs")
        finally:
            fs.close()

    def _append(self, image: Image, out: Outcome) -> None:
        before = self._fsck(self.master.sysfs.root.parent, str(MASTER))
        fs = Famfs.open(self.master, this_host=MASTER)
        try:
            try:
                inode, _ = fs.create_file("reliability-new", 3 << 20, 0o644, 0, 0)
                fs.mkdir("reliability-dir", 0o755, 0, 0)
            except FsError as exc:
                out.append = f"refused: {exc}"
                return
            assert inode.meta is not None
            extents = omf.fmap_extents(inode.meta.fmap)
        finally:
            fs.close()
        out.append = f"created at {extents[0].offset:#x}"
        after = self._fsck(self.master.sysfs.root.parent, str(MASTER))
        if after.collisions != before.collisions:
            out.problems.append(
                f"the master's new file collides: {before.collisions} -> {after.collisions}"
            )
        if (after.files, after.dirs) != (before.files + 1, before.dirs + 1):
            out.problems.append("the master's new file or directory is not in the log")
        if len(after.bad_entries) != len(before.bad_entries):
            out.problems.append("the master's new entries are bad")
        for ext in extents:
            if (
                ext.offset < omf.LOG_OFFSET + before.log_len
                or ext.offset + ext.length > before.dev_size
            ):
                out.problems.append(f"new extent {ext} outside the data area")


def pristine_views(bench: MediaBench, name: str, image: Image) -> dict[str, dict[int, Node]]:
    """What the product builds from an undamaged base, in fsck mode and in mount mode."""
    bench.load(image)
    fsck_log = bench._replay_fsck_mode()
    views = {"fsck": snapshot(fsck_log.namespace)}
    fsck_log.mem.close()
    fs = Famfs.open(bench.master, this_host=MASTER)
    try:
        views["mount"] = snapshot(fs.namespace)
    finally:
        fs.close()
    return views
