"""`famfs-py cp`: copy files into famfs with upstream's rules. The master's daemon allocates
each destination; the bytes go straight from the source into device memory (kernel copies
into a mapping of the device), in threads with -t."""

from __future__ import annotations

import argparse
import errno
import os
import stat
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial

from famfs_py import channel, omf, protocol
from famfs_py.cli.common import (
    Parser,
    add_interleave_options,
    apply_config,
    interleave_fields,
    parse_id,
    parse_mode,
)
from famfs_py.dax import cache
from famfs_py.dax.memory import DeviceMemory
from famfs_py.errors import FamfsError, UsageError
from famfs_py.fs.fmap import FileMap
from famfs_py.mapping import (
    MountedFile,
    device_segments,
    fill_from,
    first_difference,
    read_segments,
)
from famfs_py.replies import FileMapReply

EXIT_CODES = """
  0  everything was copied (with -c: compared equal)
  1  something failed; each failure is reported. Empty sources and directories without -r
     are skipped and the rest is copied; a destination that cannot be created (wrong size,
     no space, log full, missing parent) or a miscompare stops the copy there (files of the
     same directory asked for with it, up to 128, are still copied)
  2  usage error
"""
PROGRESS_MIN = 64 << 20  # show a progress bar on a terminal for copies at least this big
INVALIDATE_BYTES = 32 << 10  # paths per InvalidateFiles: well within wire.MAX_REQUEST
FILES_PER_BATCH = 128  # files of one directory created together (each holds a descriptor;
# well within protocol.CreatMany.MAX_FILES and, at 80-byte paths, wire.MAX_REQUEST)


def invalidations(paths: list[str]) -> list[protocol.InvalidateFiles]:
    """The requests that invalidate (and announce) these copied files: a few, not one per
    file (each fits in a request)."""
    requests: list[protocol.InvalidateFiles] = []
    batch: list[str] = []
    size = 0
    for path in paths:
        if batch and size + len(path.encode()) + 4 > INVALIDATE_BYTES:
            requests.append(protocol.InvalidateFiles(tuple(batch)))
            batch, size = [], 0
        batch.append(path)
        size += len(path.encode()) + 4
    if batch:
        requests.append(protocol.InvalidateFiles(tuple(batch)))
    return requests


def _one_extent(fmap: omf.Fmap, size: int) -> int | None:
    """The device offset of a file held by one extent (small files), else None."""
    if isinstance(fmap, omf.SimpleFmap) and len(fmap.extents) == 1:
        extent = fmap.extents[0]
        if extent.length >= size:
            return extent.offset
    return None


class Abort(Exception):
    """A failure that stops the whole copy (as upstream does)."""


def build_parser(prog: str) -> Parser:
    parser = Parser(
        prog=prog,
        description="Copy files into famfs (master only). With several sources or -r, DEST "
        "is a directory. A file copied into an existing directory lands at DIR/NAME; -r "
        "copies the *contents* of each source directory into DEST (created if missing), as "
        "upstream famfs does. An existing destination of the same size is overwritten "
        "(restartable copies).",
        exit_codes=EXIT_CODES,
    )
    parser.add_argument("-r", "--recursive", action="store_true", help="copy directories")
    parser.add_argument(
        "-c",
        "--compare",
        action="store_true",
        help="compare sources with existing destinations; copy nothing",
    )
    parser.add_argument(
        "-t",
        "--threadct",
        type=int,
        default=None,
        help="threads that copy data (default: core.threadct of famfs-py config, else 0: "
        "in this thread)",
    )
    parser.add_argument(
        "-m", "--mode", type=parse_mode, help="mode of new files (default: each source's)"
    )
    parser.add_argument("-u", "--uid", type=parse_id, help="owner (default: you)")
    parser.add_argument("-g", "--gid", type=parse_id, help="group (default: yours)")
    add_interleave_options(parser)
    parser.add_argument("-v", "--verbose", action="count", default=0)
    parser.add_argument("-d", "--debug", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("sources", nargs="+", metavar="SRC")
    parser.add_argument("dest", metavar="DEST")
    return parser


class Progress:
    """A one-line progress bar on stderr, only on a terminal and for large copies."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.enabled = total >= PROGRESS_MIN and sys.stderr.isatty()
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._shown = 0.0

    def add(self, n: int) -> None:
        with self._lock:
            self.done += n
            now = time.monotonic()
            if self.enabled and (now - self._shown > 0.1 or self.done >= self.total):
                self._shown = now
                rate = self.done / max(now - self.started, 1e-6) / (1 << 20)
                pct = 100 * self.done // max(self.total, 1)
                bar = "#" * (pct // 4)
                sys.stderr.write(f"\r[{bar:<25}] {pct:3d}% {rate:8.1f} MiB/s")
                sys.stderr.flush()

    def finish(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


class Copier:
    def __init__(self, args: argparse.Namespace, mountpoint: str) -> None:
        self.args = args
        self.failures = 0
        self.chan = channel.Channel(mountpoint)
        self.mountpoint = mountpoint
        self.interleave = interleave_fields(args)
        self.mem: DeviceMemory | None = None  # None: copy through the mount
        self.coherency = cache.OFF  # through the mount, the daemon flushes what it writes
        try:
            reply, fds = self.chan.call_fds(protocol.Device())
        except FamfsError as exc:
            if exc.errno != errno.EPERM:  # only the owner gets the device: others write files
                raise
        else:
            try:
                writable = reply.writable and not args.compare
                self.mem = DeviceMemory(
                    fds[0], reply.device_size, writable=writable, align=reply.align
                )
                self.coherency = cache.policy_of_grant(reply.flush, fds[0])  # data: flushed
            finally:
                for fd in fds:
                    os.close(fd)
        self.pool = ThreadPoolExecutor(args.threadct) if args.threadct > 0 else None
        self.pending: list[Future[None]] = []
        self.progress = Progress(0)  # run() replaces it with one for the whole copy
        self._local = threading.local()  # one channel per copying thread
        self._copied: list[str] = []  # copied without threads: invalidated per batch
        self._filled: list[tuple[int, int]] = []  # device ranges _fill copied: to flush
        # the whole device, for copies of files of one extent (None: through the mount)
        mem = self.mem
        self._device = mem.view(0, mem.size) if mem is not None and mem.writable else None

    def fail(self, message: str) -> None:
        print(f"famfs-py cp: {message}", file=sys.stderr)
        self.failures += 1

    def relpath(self, dest: str) -> str:
        where = channel.locate(dest)
        if where.mountpoint != self.mountpoint:
            raise Abort(f"{dest} is not in the famfs mount {self.mountpoint}")
        return where.relpath

    # -- files -----------------------------------------------------------------------------
    def copy_file(self, src: str, dest: str, mode: int | None) -> None:
        self.copy_files([(src, dest, self.relpath(dest), mode)])

    def copy_files(self, files: list[tuple[str, str, str, int | None]]) -> None:
        """Copy (src, dest, dest's path in the mount, mode) files: their creations (or, with
        -c, their maps) are asked for together (Channel.call_many: one wait for the lot), then
        each file's bytes are moved. A destination that cannot be created stops the copy
        once the files asked for with it are done."""
        opened: list[tuple[int, int, str, str, str]] = []
        getmaps: list[protocol.Request[FileMapReply]] = []  # -c
        creations: list[tuple[str, int, int]] = []
        for src, dest, rel, mode in files:
            try:
                fd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:
                self.fail(f"{src}: {exc.strerror}")
                continue
            size = os.fstat(fd).st_size
            if size == 0:
                os.close(fd)
                self.fail(f"{src}: empty file skipped (famfs files cannot be empty)")
                continue
            opened.append((fd, size, src, dest, rel))
            if self.args.compare:
                getmaps.append(protocol.Getmap(rel))
            else:
                chosen: int = self.args.mode if self.args.mode is not None else mode or 0o644
                creations.append((rel, size, chosen))
        try:
            replies = self._ask(getmaps, creations)
        except BaseException:
            for fd, *_ in opened:
                os.close(fd)
            raise
        stop: str | None = None
        self._copied = []
        try:
            for (fd, size, src, dest, rel), reply in zip(opened, replies, strict=True):
                try:
                    if isinstance(reply, FamfsError):
                        raise Abort(f"{src} -> {dest}: {reply.message}")
                    grant = reply
                    if self.args.compare and grant.size != size:
                        raise Abort(f"{dest} holds {grant.size} bytes, {src} {size}")
                except Abort as exc:
                    os.close(fd)
                    stop = stop or str(exc)
                    continue
                start = None if self.args.compare else _one_extent(grant.fmap, size)
                if start is not None and self._device is not None and self.pool is None:
                    self._fill(fd, src, dest, rel, start, size)
                else:
                    self._start(fd, src, dest, rel, FileMap(grant.fmap, size), grant.created)
        finally:  # what landed is flushed and invalidated, even if a copy failed on the way
            self._flush_filled()
            copied, self._copied = self._copied, []
            answers = self.chan.call_many(invalidations(copied)) if copied else []
        failed = next((a for a in answers if isinstance(a, FamfsError)), None)
        if failed is not None:
            stop = stop or f"cannot invalidate what was copied: {failed.message}"
        if stop:
            raise Abort(stop)

    def _ask(
        self,
        getmaps: list[protocol.Request[FileMapReply]],
        creations: list[tuple[str, int, int]],
    ) -> list[FileMapReply | FamfsError]:
        """The maps of files to compare, or the creations of files to copy (one request)."""
        if getmaps:
            return self.chan.call_many(getmaps)
        if not creations:
            return []
        request = protocol.CreatMany(
            tuple(creations), self.args.uid, self.args.gid, **self.interleave
        )
        return self.chan.call(request).files

    def _fill(self, fd: int, src: str, dest: str, rel: str, start: int, size: int) -> None:
        """Copy a file of one extent (a small file's case) straight into the device's
        memory, the kernel copying; its CPU cache lines are flushed with the batch's
        (_flush_filled), once per run of adjacent files."""
        assert self._device is not None
        view = self._device[start : start + size]
        filled = 0
        try:
            while filled < size:
                n = os.preadv(fd, [view[filled:]], filled)
                if n <= 0:
                    raise Abort(f"{src} -> {dest}: the source ended at byte {filled}")
                filled += n
        except OSError as exc:
            raise Abort(f"{src} -> {dest}: {exc.strerror or exc}") from None
        finally:
            os.close(fd)
            if filled:
                self._filled.append((start, filled))
        self.progress.add(size)
        self._copied.append(rel)
        if self.args.verbose:
            print(f"famfs-py cp: copied {src} -> {dest}")

    def _flush_filled(self) -> None:
        """Flush the CPU cache lines of what _fill copied, by runs of adjacent ranges."""
        filled, self._filled = sorted(self._filled), []
        if not filled or self._device is None or not self.coherency.enabled:
            return
        run_start, run_end = filled[0][0], filled[0][0]
        for start, length in filled:
            if start > run_end:
                self.coherency.flush(self._device, run_start, run_end - run_start)
                run_start = start
            run_end = max(run_end, start + length)
        self.coherency.flush(self._device, run_start, run_end - run_start)

    def _start(
        self, fd: int, src: str, dest: str, rel: str, filemap: FileMap, created: bool
    ) -> None:
        job = (fd, src, dest, rel, filemap, created)
        if self.pool is None:
            self._move(job, invalidate=False)
            if not self.args.compare:
                self._copied.append(rel)
        else:
            self.pending.append(self.pool.submit(self._move, job))

    def _move(self, job: tuple, invalidate: bool = True) -> None:

        fd, src, dest, rel, filemap, _created = job
        try:
            if self.args.compare:
                where = self._compare(fd, filemap, dest)
                if where is not None:
                    raise Abort(f"{src} and {dest} differ at byte {where}")
            else:
                self._copy(fd, filemap, dest)
                # this host's page cache may hold the old bytes (a new file: a client may
                # have read it before the copy landed); the daemon tells the other hosts.
                # Without threads, copy_files asks for a batch's invalidations together.
                if invalidate:
                    self.chan_for_thread().call(protocol.Invalidate(rel))
            if self.args.verbose:
                verb = "compared" if self.args.compare else "copied"
                print(f"famfs-py cp: {verb} {src} -> {dest}")
        except OSError as exc:
            raise Abort(f"{src} -> {dest}: {exc.strerror or exc}") from None
        finally:
            os.close(fd)

    def chan_for_thread(self) -> channel.Channel:
        if threading.current_thread() is threading.main_thread():
            return self.chan
        if not hasattr(self._local, "chan"):
            self._local.chan = channel.Channel(self.mountpoint)
        return self._local.chan

    def _copy(self, fd: int, filemap: FileMap, dest: str) -> None:
        if self.mem is None:
            self._copy_through_mount(fd, filemap.size, dest)
            return
        try:
            segments = device_segments(self.mem, filemap)
            fill_from(segments, fd, self.progress.add, self.coherency)
        except EOFError as exc:
            raise OSError(0, str(exc)) from None

    def _copy_through_mount(self, fd: int, size: int, dest: str) -> None:
        out = os.open(dest, os.O_WRONLY | os.O_CLOEXEC)
        try:
            done = 0
            while done < size:
                n = os.sendfile(out, fd, done, min(size - done, 16 << 20))
                if n <= 0:
                    raise OSError(0, f"the source ended at byte {done}")
                done += n
                self.progress.add(n)
        finally:
            os.close(out)

    def _compare(self, fd: int, filemap: FileMap, dest: str) -> int | None:

        if self.mem is None:
            with MountedFile(dest, writable=False) as theirs:
                return first_difference(theirs.readinto, filemap.size, fd, self.progress.add)
        read_into = partial(read_segments, device_segments(self.mem, filemap))
        return first_difference(read_into, filemap.size, fd, self.progress.add)

    # -- trees ---------------------------------------------------------------------------
    def mkdir(self, dest: str, rel: str, mode: int) -> None:
        if self.args.compare:
            return

        try:
            self.chan.call(protocol.Mkdir(rel, mode, self.args.uid, self.args.gid, parents=True))
        except FamfsError as exc:
            raise Abort(f"{dest}: {exc.message}") from None

    def copy_tree(self, src: str, dest: str, rel: str | None = None) -> None:
        """Copy the contents of directory `src` into `dest` (created if missing); `rel` is
        dest's path in the mount, once known (the tree below it is not looked up again)."""
        rel = self.relpath(dest) if rel is None else rel
        self.mkdir(dest, rel, stat.S_IMODE(os.stat(src).st_mode))
        files: list[tuple[str, str, str, int | None]] = []
        subdirs: list[tuple[str, str, str]] = []
        for entry in sorted(os.scandir(src), key=lambda e: e.name):
            target = os.path.join(dest, entry.name)
            target_rel = f"{rel}/{entry.name}" if rel else entry.name
            if entry.is_dir(follow_symlinks=False):
                subdirs.append((entry.path, target, target_rel))
            elif entry.is_file():
                files.append((entry.path, target, target_rel, stat.S_IMODE(entry.stat().st_mode)))
            else:
                self.fail(f"{entry.path}: not a regular file or directory; skipped")
        for start in range(0, len(files), FILES_PER_BATCH):
            self.copy_files(files[start : start + FILES_PER_BATCH])
        for sub_src, sub_dest, sub_rel in subdirs:
            self.copy_tree(sub_src, sub_dest, sub_rel)

    def wait(self) -> None:
        for future in self.pending:
            future.result()
        self.pending.clear()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        self.chan.close()
        if self._device is not None:
            self._device.release()
        if self.mem is not None:
            self.mem.close()


def _total_bytes(sources: list[str], recursive: bool) -> int:
    total = 0
    for src in sources:
        if os.path.isdir(src):
            if recursive:
                for dirpath, _, files in os.walk(src):
                    total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files)
        elif os.path.isfile(src):
            total += os.path.getsize(src)
    return total


def run(args: argparse.Namespace) -> int:
    apply_config(args)
    if args.threadct is None:
        args.threadct = 0
    if args.threadct < 0 or args.threadct > 256:
        raise UsageError(f"-t {args.threadct}: threads must be 0..256")
    dest = args.dest
    dest_is_dir = os.path.isdir(dest)
    if (len(args.sources) > 1 or args.recursive) and os.path.exists(dest) and not dest_is_dir:
        raise FamfsError(f"{dest} exists and is not a directory (needed for several sources or -r)")
    if not dest_is_dir:
        parent = os.path.dirname(os.path.abspath(dest))
        if not os.path.isdir(parent):
            raise FamfsError(f"the parent of {dest} is not an existing directory")
        if len(args.sources) > 1 and not args.recursive:
            raise FamfsError(f"{dest} is not a directory (needed for several sources)")
    mountpoint = channel.locate(
        dest if dest_is_dir else os.path.dirname(os.path.abspath(dest))
    ).mountpoint
    copier = Copier(args, mountpoint)
    copier.progress = Progress(_total_bytes(args.sources, args.recursive))
    try:
        for src in args.sources:
            if not os.path.lexists(src):
                raise Abort(f"cannot stat {src!r}: No such file or directory")
            if os.path.isdir(src):
                if not args.recursive:
                    copier.fail(f"-r not given; omitting directory {src!r}")
                    continue
                copier.copy_tree(src, dest)
            elif os.path.isfile(src):
                target = (
                    os.path.join(os.path.realpath(dest), os.path.basename(src))
                    if dest_is_dir
                    else dest
                )
                copier.copy_file(src, target, stat.S_IMODE(os.stat(src).st_mode))
            else:
                raise Abort(f"{src}: not a regular file or directory")
        copier.wait()
    except Abort as exc:
        copier.fail(f"{exc}; stopping")
    finally:
        copier.progress.finish()
        copier.close()
    return 1 if copier.failures else 0
