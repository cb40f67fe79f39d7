"""The mount lifecycle: claim and replay, mount, serve until unmounted or signalled, clean up.

Reads top to bottom: check the mount point -> open the filesystem (claim, superblock, log)
-> take the control channel -> pyfuse3.init (this mounts) -> nursery {FUSE loop, control
server, log follower, device watcher, signals, readiness} -> unmount, release. One ExitStack
owns every teardown, in the reverse order of setup. Any failure before the mount answers
leaves nothing mounted and the device unclaimed, and is reported through `Readiness`.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import threading
from collections.abc import Callable
from typing import TypeVar

import pyfuse3
import trio

from famfs_py import channel
from famfs_py.dax.device import resolve_device
from famfs_py.errors import FamfsError
from famfs_py.fs.filesystem import Famfs
from famfs_py.fs.identity import Role, system_uuid
from famfs_py.fs.namespace import META_DIR, META_INO, Inode

from .control import ControlServer, DaemonFacts
from .operations import PYFUSE3_LOGGER, FamfsOperations, ReplyFailureHook
from .options import CacheMode, MountOptions
from .propagation import Propagation
from .readiness import Readiness

log = logging.getLogger(__name__)

EXIT_MOUNT_FAILED = 1
READY_TIMEOUT = 30.0
T = TypeVar("T")


def check_mountpoint(path: str) -> str:
    """The absolute mount point, or FamfsError if it cannot be mounted on."""
    absolute = os.path.abspath(path)
    try:
        os.stat(absolute)
    except FileNotFoundError:
        raise FamfsError(f"mount point {path} does not exist (create it first)") from None
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:
            raise FamfsError(
                f"{path} holds a stale mount (its daemon died); "
                f"'famfs-py umount {path}' cleans it up"
            ) from None
        raise FamfsError(f"mount point {path}: {exc.strerror}") from None
    if not os.path.isdir(absolute):
        raise FamfsError(f"mount point {path} is not a directory")
    if os.path.ismount(absolute) or channel.is_mountpoint(absolute):
        raise FamfsError(f"{path} is already a mount point (busy); unmount it first")
    return os.path.realpath(absolute)


def open_filesystem(opts: MountOptions, mountpoint: str) -> Famfs:
    try:
        device = resolve_device(opts.device, opts.root)
        this_host = system_uuid(opts.system_uuid)
    except (OSError, ValueError) as exc:
        message = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise FamfsError(message) from None
    for path in (device.node, device.sysfs_dir):
        if os.path.realpath(path).startswith(mountpoint.rstrip("/") + "/"):
            raise FamfsError(
                f"{path} is inside the mount point {mountpoint}: the daemon would "
                "hide its own device; choose another mount point"
            )
    return Famfs.open(
        device,
        this_host=this_host,
        writable_client=opts.rw,
        flush=opts.flush,
        allow_devdax=opts.devdax,
        holder_name=f"famfs-py mount {mountpoint}",
    )


class Daemon:
    def __init__(self, opts: MountOptions, readiness: Readiness) -> None:
        self.opts = opts
        self.readiness = readiness
        self.mountpoint = opts.mountpoint
        self.fs: Famfs | None = None
        self.ops: FamfsOperations | None = None
        self.changes: Propagation | None = None
        self.control: ControlServer | None = None
        self.trio_token: trio.lowlevel.TrioToken | None = None
        self.nursery: trio.Nursery | None = None
        self._session_open = False
        self._ready = False

    def _fuse_options(self, fs: Famfs) -> set[str]:
        # the source is the device's name on its host, /dev/daxX.Y, emulated devices too:
        # upstream's scripts find a mount with `findmnt -S /dev/daxX.Y`
        options = {f"fsname=/dev/{fs.device.name}", "subtype=famfs-py"}
        if self.opts.default_permissions:
            options.add("default_permissions")
        if self.opts.others_allowed:
            options.add("allow_other")
        return options

    def run(self) -> int:
        """Serve until unmounted; returns the process exit code."""
        try:
            with contextlib.ExitStack() as teardown:
                self.mountpoint = check_mountpoint(self.opts.mountpoint)
                fs = self.fs = open_filesystem(self.opts, self.mountpoint)
                teardown.callback(fs.close)
                ops = self.ops = FamfsOperations(
                    fs,
                    cache=self.opts.cache,
                    timeout=self.opts.timeout,
                    commit_delay=self.opts.commit_delay,
                )
                changes = self.changes = Propagation(
                    fs,
                    known=ops.lookups.__contains__,
                    is_open=ops.is_open,
                    kernel_inodes=lambda: list(ops.lookups),
                    page_cache=self.opts.cache != CacheMode.NEVER,
                    interval=self.opts.changes_interval,
                )
                ops.changes = changes
                control = self.control = ControlServer(
                    fs,
                    self.mountpoint,
                    self._daemon_facts,
                    self._invalidate_async,
                    changes.announce,
                    changes.announce_many,
                )
                teardown.callback(control.close)
                control.bind()
                logging.getLogger(PYFUSE3_LOGGER).addHandler(ReplyFailureHook(ops))
                try:
                    pyfuse3.init(ops, self.mountpoint, self._fuse_options(fs))
                except RuntimeError as exc:
                    raise FamfsError(f"FUSE could not mount {self.mountpoint}: {exc}") from None
                self._session_open = True
                teardown.callback(self._close_session)
                changes.start()
                teardown.callback(changes.stop)  # before the session closes
                fs.failures.handler = DaemonFailures(self)
                teardown.callback(self._stopping)
                trio.run(self._serve)
        except FamfsError as exc:
            code = exc.exit_code or EXIT_MOUNT_FAILED
            if not self._ready:
                self.readiness.failed(exc.message, code)
            else:
                log.error("%s", exc.message)
            return code
        except BaseException:
            log.exception("the daemon failed")
            if not self._ready:
                self.readiness.failed("the daemon failed (see its log)", EXIT_MOUNT_FAILED)
            return EXIT_MOUNT_FAILED
        finally:
            log.info("daemon for %s exits", self.mountpoint)
        return 0

    def _stopping(self) -> None:
        if self._ready:
            self.readiness.stopping()  # also when unmounted from outside, not only on signals

    def _close_session(self) -> None:
        # mountinfo only: no path lookup. Once the FUSE loop has stopped, a stat of the mount
        # point whose attributes have expired is a GETATTR to this very process, which
        # would wait for itself for ever (a SIGTERM some seconds after the last access hung).
        still_mounted = any(m.mountpoint == self.mountpoint for m in channel.famfs_mounts())
        self._session_open = False
        pyfuse3.close(unmount=still_mounted)

    # -- serving -------------------------------------------------------------------------
    async def _serve(self) -> None:
        assert self.fs is not None and self.control is not None
        self.trio_token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            nursery.start_soon(self._fuse_loop, nursery.cancel_scope)
            nursery.start_soon(self.control.serve)
            nursery.start_soon(self._signals)
            nursery.start_soon(self._announce_ready)
            nursery.start_soon(self._watch_device)
            supervise = getattr(self.readiness, "supervise", None)
            if supervise is not None:
                nursery.start_soon(supervise, self.summary)
            nursery.start_soon(self._follow_log)  # the master: only watching for others
            if self.fs.role == Role.MASTER and self.ops is not None:
                nursery.start_soon(self.ops.creating.commit_loop)
        if self.ops is not None:  # unmounted: files closed and waiting are complete
            self.ops.creating.commit_due(everything=True)

    async def _fuse_loop(self, scope: trio.CancelScope) -> None:
        try:
            await pyfuse3.main(min_tasks=1, max_tasks=8)
        finally:
            scope.cancel()

    async def _signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as sigs:
            terminating = False
            async for signum in sigs:  # keep receiving: a second signal must not kill us
                name = signal.Signals(signum).name
                if terminating:
                    log.info("signal %s: already unmounting", name)
                    continue
                log.info("signal %s: unmounting", name)
                terminating = True
                self.readiness.stopping()
                pyfuse3.terminate()

    async def _announce_ready(self) -> None:
        probe = os.path.join(self.mountpoint, META_DIR)
        with trio.move_on_after(READY_TIMEOUT):
            st = await trio.to_thread.run_sync(os.stat, probe)
            if st.st_ino != META_INO:
                raise FamfsError(f"{self.mountpoint} does not show this filesystem")
            self._set_readahead(st.st_dev)
            self._ready = True
            self.readiness.ready(self.summary())
            return
        raise FamfsError(f"the mount at {self.mountpoint} did not answer in {READY_TIMEOUT}s")

    def _set_readahead(self, st_dev: int) -> None:
        """Let the kernel read ahead in large requests (FUSE's default is 128 KiB, and each
        request is a round trip to this daemon): the mount's backing-dev readahead."""
        if self.opts.readahead <= 0:
            return
        knob = f"/sys/class/bdi/{os.major(st_dev)}:{os.minor(st_dev)}/read_ahead_kb"
        try:
            with open(knob, "w") as f:
                f.write(f"{self.opts.readahead}\n")
        except OSError as exc:
            log.warning("could not set the readahead of %s (%s): %s", self.mountpoint, knob, exc)

    async def _follow_log(self) -> None:
        assert self.fs is not None
        while True:
            await trio.sleep(self.opts.follow_interval)
            stats = self.fs.follow()
            if stats.new_inodes:
                log.info("log: %d new files, %d new directories", stats.files, stats.dirs)

    async def _watch_device(self) -> None:
        """Notice failures nobody announces: a device that vanished (hot-unplug without
        notice) and new badblocks (real devices get no notify_failure from the kernel)."""
        fs = self.fs
        assert fs is not None
        while not fs.health.removed:
            await trio.sleep(self.opts.watch_interval)
            try:
                gone = fs.failures.vanished()
            except OSError as exc:
                gone = f"it cannot be inspected ({exc.strerror})"
            if gone:
                log.error("%s vanished without notice: %s", fs.device.path, gone)
                fs.failures.remove_device()
                return
            fs.failures.check_badblocks()

    def summary(self) -> str:
        assert self.fs is not None
        fs = self.fs
        return (
            f"{fs.role}, {fs.namespace.files} files, {fs.namespace.dirs} directories, "
            f"log {fs.log.next_index}/{fs.log.slots}, health {fs.health.summary()}"
        )

    def _daemon_facts(self) -> DaemonFacts:
        return DaemonFacts(
            mountpoint=self.mountpoint,
            daemon_pid=os.getpid(),
            cache=self.opts.cache,
            open_files=len(self.ops.handles) if self.ops else 0,
            kernel_lookups=sum(self.ops.lookups.values()) if self.ops else 0,
        )

    # -- cache invalidation --------------------------------------------------------------
    def invalidate(self, inos: list[int]) -> None:
        """Drop cached pages; must not run on the trio thread (a queued read may hold the
        page lock the kernel needs)."""
        if not self._session_open:
            return
        for ino in inos:
            try:
                pyfuse3.invalidate_inode(ino, attr_only=False)
            except OSError as exc:
                if exc.errno not in (errno.ENOENT, errno.ENOTCONN, errno.EBADF):
                    log.warning("could not drop cached pages of inode %d: %s", ino, exc)

    async def _invalidate_async(self, inos: list[int]) -> None:
        await trio.to_thread.run_sync(self.invalidate, inos)


class DaemonFailures:
    """The daemon's FailureHandler: failures are handled on the event loop (between FUSE
    requests, so no copy is under way and the namespace holds still), cached pages are
    dropped from a thread of their own, and removal tells the holders of mapped files."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def run_in_loop(self, fn: Callable[[], T]) -> T:
        token = self.daemon.trio_token
        if token is None:
            return fn()  # not serving yet (or any more): nothing else runs
        try:
            return trio.from_thread.run_sync(fn, trio_token=token)
        except trio.RunFinishedError:
            return fn()
        except RuntimeError:  # called on the event loop's own thread
            return fn()

    def files_poisoned(self, inodes: list[Inode]) -> None:
        self._invalidate_in_thread([i.ino for i in inodes])

    def device_removing(self) -> None:
        daemon = self.daemon
        if daemon.nursery is not None and daemon.control is not None:
            daemon.nursery.start_soon(daemon.control.revoke_mappings)
        if daemon.fs is not None:
            self._invalidate_in_thread([i.ino for i in daemon.fs.namespace.logged_files()])

    def _invalidate_in_thread(self, inos: list[int]) -> None:
        threading.Thread(target=self.daemon.invalidate, args=(inos,), daemon=True).start()


def serve(opts: MountOptions, readiness: Readiness) -> int:
    return Daemon(opts, readiness).run()
