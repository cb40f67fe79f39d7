"""The benchmark's machine resources: work directory, tmpfs mounts, emulated devices, famfs-py
mounts and minimal pyfuse3 servers, each undone at exit whatever happened (an ExitStack).

Everything lives under one private directory (/run/famfs-py-bench.XXXX); emulated devices use
their own emulation root there and are removed with `famfs-py dax remove`.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SYSTEM_UUID = "6b1c9a3e-2f4d-4e8a-9b7c-1d2e3f405162"  # this simulated host is the master
KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30


class BenchError(RuntimeError):
    """A step of the benchmark failed (the message says which and why)."""


def run(
    cmd: list[str],
    *,
    env: dict[str, str] | None = None,
    check: bool = True,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        cmd, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise BenchError(f"{' '.join(cmd)}: exit {proc.returncode}: {proc.stdout}{proc.stderr}")
    return proc


def drop_caches() -> None:
    """Drop the page cache, dentries and inodes (FUSE forgets; tmpfs keeps its files)."""
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def is_mounted(path: Path) -> bool:
    real = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == real for line in f)


@dataclass
class Host:
    """A simulated famfs-py host: an emulation root and a system UUID."""

    root: Path
    log_dir: Path
    system_uuid: str = SYSTEM_UUID

    @property
    def env(self) -> dict[str, str]:
        return {
            "FAMFS_PY_DAX_ROOT": str(self.root),
            "FAMFS_PY_SYSTEM_UUID": self.system_uuid,
            "FAMFS_PY_LOG_DIR": str(self.log_dir),
        }

    def cli(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return run([str(BIN / "famfs-py"), *args], env=self.env, check=check, timeout=timeout)


@dataclass
class FamfsMount:
    mountpoint: Path
    pid: int | None
    seconds: float  # wall time of `famfs-py mount`
    umount_seconds: float = 0.0  # wall time of `famfs-py umount`
    host: Host | None = None  # the host it was mounted on (None: the benchmark's)


@dataclass
class Server:
    mountpoint: Path
    proc: subprocess.Popen
    seconds: float  # from process start until the mount answered


PR_SET_CHILD_SUBREAPER = 36


class DaemonReaper:
    """Adopt the daemons `famfs-py mount` leaves behind and reap them as soon as they exit.

    The daemon outlives its parent; without a subreaper it is reaped by this machine's init,
    which here takes up to ~1.5 s, and `famfs-py umount` waits for that. A real init
    (systemd) reaps at once, so the benchmark does too. Only registered pids are waited for,
    so subprocess's own children are never stolen.
    """

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.active = libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
        self._pids: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="reaper", daemon=True)
        if self.active:
            self._thread.start()

    def watch(self, pid: int) -> None:
        with self._lock:
            self._pids.add(pid)

    def running(self, pid: int) -> bool:
        """Whether a watched daemon has not been reaped yet."""
        if not self.active:
            return _alive(pid)
        with self._lock:
            return pid in self._pids

    def _loop(self) -> None:
        while not self._stop.wait(0.002):
            with self._lock:
                pids = list(self._pids)
            for pid in pids:
                try:
                    done, _ = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:  # not (yet) our child, or already reaped
                    done = pid if not _alive(pid) else 0
                if done:
                    with self._lock:
                        self._pids.discard(pid)

    def stop(self) -> None:
        self._stop.set()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class Environment:
    """Owns every resource the run creates; `close()` undoes them in reverse order."""

    def __init__(self) -> None:
        self.stack = contextlib.ExitStack()
        self.reaper = DaemonReaper()
        self.stack.callback(self.reaper.stop)
        self.base = Path(tempfile.mkdtemp(prefix="famfs-py-bench.", dir="/run"))
        self.stack.callback(shutil.rmtree, self.base, ignore_errors=True)
        self.host = Host(self.base / "host", self.base / "logs")
        self.host.root.mkdir()
        self.host.log_dir.mkdir()
        self._devices: list[str] = []
        self.stack.callback(self._remove_devices)

    def __enter__(self) -> Environment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.stack.close()

    def path(self, name: str) -> Path:
        path = self.base / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    # -- tmpfs ---------------------------------------------------------------------------
    def tmpfs(self, name: str, size: int, huge: str = "never") -> Path:
        """Mount a tmpfs of `size` bytes (huge=never like /dev/shm here, or within_size)."""
        path = self.path(name)
        run(["mount", "-t", "tmpfs", "-o", f"size={size},huge={huge},mode=755", name, str(path)])
        self.stack.callback(self._unmount_tmpfs, path)
        return path

    @staticmethod
    def _unmount_tmpfs(path: Path) -> None:
        if is_mounted(path) and run(["umount", str(path)], check=False).returncode != 0:
            run(["umount", "-l", str(path)], check=False)

    # -- emulated devices ----------------------------------------------------------------
    def dax_create(self, name: str, size: int, backing: Path | None = None) -> Path:
        """Create emulated device `name` (memory in /dev/shm, or the given backing file);
        returns the file holding its memory."""
        args = ["dax", "create", name, "--size", str(size)]
        if backing is not None:
            args += ["--backing", str(backing)]
        self.host.cli(*args)
        self._devices.append(name)
        if backing is not None:
            backing.unlink()  # the device keeps its own hard link to the memory
        return Path(os.path.realpath(self.host.root / "dev" / name))

    def _remove_devices(self) -> None:
        for name in reversed(self._devices):
            self.host.cli("dax", "remove", name, check=False)
        self._devices.clear()

    # -- famfs-py mounts -----------------------------------------------------------------
    @contextlib.contextmanager
    def famfs_mount(
        self,
        device: str,
        name: str,
        cache: str = "auto",
        *,
        args: list[str] | None = None,
        host: Host | None = None,
    ) -> Iterator[FamfsMount]:
        """Mount `device` with `famfs-py mount -c cache [args]` on `host` (default: the
        benchmark's); unmounted (and its daemon gone) when the block ends, however it ends."""
        host = host or self.host
        mountpoint = self.path(name)
        start = time.perf_counter()
        argv = ["mount", "-c", cache, *(args or []), device, str(mountpoint)]
        proc = host.cli(*argv, check=False)
        seconds = time.perf_counter() - start
        pid = None
        if "daemon pid " in proc.stdout:
            pid = int(proc.stdout.split("daemon pid ")[1].split(",")[0])
        if pid is not None:
            self.reaper.watch(pid)
        mount = FamfsMount(mountpoint, pid, seconds, host=host)
        try:
            if proc.returncode != 0:
                raise BenchError(f"famfs-py mount {device}: {proc.stdout}{proc.stderr}")
            yield mount
        finally:
            self.famfs_umount(mount)

    def famfs_umount(self, mount: FamfsMount) -> None:
        """`famfs-py umount`, falling back to a lazy unmount and killing the daemon."""
        start = time.perf_counter()
        if is_mounted(mount.mountpoint):
            (mount.host or self.host).cli("umount", str(mount.mountpoint), check=False, timeout=60)
        mount.umount_seconds = time.perf_counter() - start
        if is_mounted(mount.mountpoint):
            run(["fusermount3", "-u", "-z", str(mount.mountpoint)], check=False)
        if mount.pid is not None:
            deadline = time.monotonic() + 10
            while self.reaper.running(mount.pid) and time.monotonic() < deadline:
                time.sleep(0.005)
            if self.reaper.running(mount.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(mount.pid, signal.SIGKILL)
            mount.pid = None

    # -- the minimal pyfuse3 server ------------------------------------------------------
    @contextlib.contextmanager
    def minimal_server(
        self, name: str, files: list[Path], direct_io: bool, tree: int = 0
    ) -> Iterator[Server]:
        """Start bench.minimal_fuse over `files`; stopped and unmounted when the block ends."""
        mountpoint = self.path(name)
        argv = [sys.executable, "-m", "bench.minimal_fuse", "--tree", str(tree)]
        if direct_io:
            argv.append("--direct-io")
        argv += [str(mountpoint), *map(str, files)]
        start = time.perf_counter()
        with open(self.host.log_dir / f"{name}.log", "ab") as log_file:
            proc = subprocess.Popen(
                argv, cwd=REPO, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file
            )
        server = Server(mountpoint, proc, 0.0)
        try:
            probe = mountpoint / files[0].name
            deadline = start + 30
            while True:
                if proc.poll() is not None:
                    raise BenchError(f"the minimal pyfuse3 server exited ({proc.returncode})")
                if is_mounted(mountpoint):
                    with contextlib.suppress(OSError):
                        os.stat(probe)
                        break
                if time.perf_counter() > deadline:
                    raise BenchError("the minimal pyfuse3 server did not mount in 30 s")
                time.sleep(0.002)
            server.seconds = time.perf_counter() - start
            yield server
        finally:
            if is_mounted(mountpoint):
                run(["fusermount3", "-u", str(mountpoint)], check=False)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if is_mounted(mountpoint):
                run(["fusermount3", "-u", "-z", str(mountpoint)], check=False)
