"""The mount lifecycle: claim and replay, mount, serve until unmounted or signalled, clean up.

Reads top to bottom: check the mount point -> open the filesystem (claim, superblock, log)
-> take the control channel -> pyfuse3.init (this mounts) -> nursery {FUSE loop, control
server, log follower, signals, readiness} -> unmount, release. Any failure before the mount
answers leaves nothing mounted and the device unclaimed, and is reported through
`Readiness`.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

import pyfuse3
import trio

from famfs_py import channel
from famfs_py.dax.device import resolve_device
from famfs_py.errors import FamfsError
from famfs_py.fs.filesystem import Famfs
from famfs_py.fs.identity import system_uuid
from famfs_py.fs.namespace import META_DIR, META_INO, Inode

from .control import ControlServer
from .operations import FamfsOperations, ReplyFailureHook

log = logging.getLogger(__name__)

EXIT_MOUNT_FAILED = 1
READY_TIMEOUT = 30.0


@dataclass
class MountOptions:
    device: str
    mountpoint: str
    root: str | None = None
    system_uuid: str | None = None
    cache: str = "auto"
    timeout: float = 30.0
    allow_other: bool = False
    default_permissions: bool = True
    rw: bool = False
    devdax: bool = False
    debug: bool = False
    follow_interval: float = 0.2
    watch_interval: float = 0.5
    readahead_kb: int = 4096
    fuse_options: list[str] = field(default_factory=list)


class Readiness(Protocol):
    """Whoever waits for the mount: the `famfs-py mount` parent, or systemd.

    One that keeps talking while the mount serves (systemd: STATUS= and watchdog pings) also
    has `async def supervise(self, summary: Callable[[], str]) -> None`, run as a task of the
    daemon's nursery, so it stops with the mount and stalls when the event loop does.
    """

    def ready(self, summary: str) -> None: ...
    def failed(self, message: str, exit_code: int) -> None: ...
    def stopping(self) -> None: ...


class NoReadiness:
    def ready(self, summary: str) -> None:
        log.info("ready: %s", summary)

    def failed(self, message: str, exit_code: int) -> None:
        log.error("%s", message)

    def stopping(self) -> None:
        pass


def check_mountpoint(path: str) -> str:
    """The absolute mount point, or FamfsError if it cannot be mounted on."""
    absolute = os.path.abspath(path)
    try:
        st = os.stat(absolute)
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
    del st
    return os.path.realpath(absolute)


class Daemon:
    def __init__(self, opts: MountOptions, readiness: Readiness) -> None:
        self.opts = opts
        self.readiness = readiness
        self.fs: Famfs | None = None
        self.ops: FamfsOperations | None = None
        self.trio_token: trio.lowlevel.TrioToken | None = None
        self._session_open = False
        self._ready = False

    # -- setup ---------------------------------------------------------------------------
    def _open(self) -> tuple[Famfs, str]:
        mountpoint = check_mountpoint(self.opts.mountpoint)
        try:
            device = resolve_device(self.opts.device, self.opts.root)
            this_host = system_uuid(self.opts.system_uuid)
        except (OSError, ValueError) as exc:
            message = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise FamfsError(message) from None
        for path in (device.node, device.sysfs_dir):
            if os.path.realpath(path).startswith(mountpoint.rstrip("/") + "/"):
                raise FamfsError(
                    f"{path} is inside the mount point {mountpoint}: the daemon would "
                    "hide its own device; choose another mount point"
                )
        fs = Famfs(
            device,
            this_host=this_host,
            writable_client=self.opts.rw,
            allow_devdax=self.opts.devdax,
            holder_name=f"famfs-py mount {mountpoint}",
        )
        return fs, mountpoint

    def _fuse_options(self) -> set[str]:
        assert self.fs is not None
        # the mount's source is the device's name on its host, /dev/daxX.Y, also for an
        # emulated device (upstream's scripts find a mount with `findmnt -S /dev/daxX.Y`)
        options = {f"fsname=/dev/{self.fs.device.name}", "subtype=famfs-py"}
        if self.opts.default_permissions:
            options.add("default_permissions")
        if self.opts.allow_other:
            options.add("allow_other")
        options.update(self.opts.fuse_options)
        return options

    def run(self) -> int:
        """Serve until unmounted; returns the process exit code."""
        try:
            self.fs, mountpoint = self._open()
        except FamfsError as exc:
            self.readiness.failed(exc.message, exc.exit_code or EXIT_MOUNT_FAILED)
            return exc.exit_code or EXIT_MOUNT_FAILED
        self.mountpoint = mountpoint
        fs = self.fs
        control = ControlServer(fs, mountpoint, self._status_extra, self._invalidate_async)
        self.control = control
        try:
            control.bind()
            self.ops = FamfsOperations(fs, cache=self.opts.cache, timeout=self.opts.timeout)
            logging.getLogger("pyfuse3").addHandler(ReplyFailureHook(self.ops))
            try:
                pyfuse3.init(self.ops, mountpoint, self._fuse_options())
            except RuntimeError as exc:
                raise FamfsError(f"FUSE could not mount {mountpoint}: {exc}") from None
            self._session_open = True
            fs.drain = self._drain
            fs.drop_cache = self._drop_cache
            trio.run(self._serve, control)
        except FamfsError as exc:
            if not self._ready:
                self.readiness.failed(exc.message, exc.exit_code or EXIT_MOUNT_FAILED)
            else:
                log.error("%s", exc.message)
            return exc.exit_code or EXIT_MOUNT_FAILED
        except BaseException:
            log.exception("the daemon failed")
            if not self._ready:
                self.readiness.failed("the daemon failed (see its log)", EXIT_MOUNT_FAILED)
            return EXIT_MOUNT_FAILED
        finally:
            self._shutdown(control)
        return 0

    def _shutdown(self, control: ControlServer) -> None:
        if self._ready:
            self.readiness.stopping()  # also when unmounted from outside, not only on signals
        control.close()
        if self._session_open:
            still_mounted = channel.is_mountpoint(self.mountpoint)
            self._session_open = False
            pyfuse3.close(unmount=still_mounted)
        if self.fs is not None:
            self.fs.close()
        log.info("daemon for %s exits", self.mountpoint)

    # -- serving -------------------------------------------------------------------------
    async def _serve(self, control: ControlServer) -> None:
        self.trio_token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._fuse_loop, nursery.cancel_scope)
            nursery.start_soon(control.serve)
            nursery.start_soon(self._signals)
            nursery.start_soon(self._announce_ready)
            nursery.start_soon(self._watch_device)
            supervise = getattr(self.readiness, "supervise", None)
            if supervise is not None:
                nursery.start_soon(supervise, self.summary)
            if self.fs is not None and self.fs.role != "master":
                nursery.start_soon(self._follow_log)

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
        if self.opts.readahead_kb <= 0:
            return
        knob = f"/sys/class/bdi/{os.major(st_dev)}:{os.minor(st_dev)}/read_ahead_kb"
        try:
            with open(knob, "w") as f:
                f.write(f"{self.opts.readahead_kb}\n")
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
                gone = fs.vanished()
            except OSError as exc:
                gone = f"it cannot be inspected ({exc.strerror})"
            if gone:
                log.error("%s vanished without notice: %s", fs.device.path, gone)
                await trio.to_thread.run_sync(fs.remove_device)
                return
            fs.check_badblocks()

    def summary(self) -> str:
        assert self.fs is not None
        fs = self.fs
        health = "ok"
        if fs.health.removed:
            health = "removed"
        elif fs.health.failsafe:
            health = "failsafe"
        elif fs.health.poisoned:
            health = f"degraded ({len(fs.health.poisoned)} poisoned ranges)"
        return (
            f"{fs.role}, {fs.namespace.files} files, {fs.namespace.dirs} directories, "
            f"log {fs.log.next_index}/{fs.log.slots}, health {health}"
        )

    def _status_extra(self) -> dict[str, Any]:
        return {
            "mountpoint": self.mountpoint,
            "daemon_pid": os.getpid(),
            "cache": self.opts.cache,
            "open_files": len(self.ops.handles) if self.ops else 0,
            "kernel_lookups": sum(self.ops.lookups.values()) if self.ops else 0,
        }

    # -- cache invalidation and removal (may be called from the holder's thread) ---------
    def _invalidate(self, inos: list[int]) -> None:
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
        await trio.to_thread.run_sync(self._invalidate, inos)

    def _drop_cache(self, inodes: list[Inode] | None) -> None:
        if self.fs is None:
            return
        if inodes is None:
            inos = [i.ino for i in self.fs.namespace.logged_files()]
        else:
            inos = [i.ino for i in inodes]
        if threading.current_thread() is threading.main_thread():
            threading.Thread(target=self._invalidate, args=(inos,), daemon=True).start()
        else:
            self._invalidate(inos)

    def _drain(self) -> None:
        """Before the device is unmapped: wait until the trio thread is between requests
        (in-flight copies are done) and tell the holders of mapped files to let go."""
        token = self.trio_token
        if token is None or threading.current_thread() is threading.main_thread():
            return
        try:
            trio.from_thread.run(self.control.revoke_mappings, trio_token=token)
        except trio.RunFinishedError:
            pass


def serve(opts: MountOptions, readiness: Readiness) -> int:
    return Daemon(opts, readiness).run()
