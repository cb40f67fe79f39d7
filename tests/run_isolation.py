"""One test run's own resources, and the cleanup that leaves none of them behind.

Each run has a directory of its own for emulated memory and the reference-image cache,
`<memory dir>/famfs-py-tests.<tag>/` (on famfs-py's huge-page tmpfs where it can be had, else
in /dev/shm), which every CLI the tests run uses through $FAMFS_PY_MEMORY_DIR. The run holds
an flock on `<dir>/lock` for its whole life. At its end, also after a failure, Ctrl-C or
SIGTERM, it unmounts every famfs-py mount of its own (a mount whose device node or mount
point is under the run's pytest base directory, or whose memory is in the run's directory),
ends their daemons and removes the directory. A run that was killed outright leaves its
directory unlocked: the next run sweeps it (its mounts too), and never touches a directory
that a live run holds, so two runs on one machine can start, run and end in any order.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

RUN_PREFIX = "famfs-py-tests."
FSTYPE = "fuse.famfs-py"


class TestRun:
    """This run's directory, its lock, and its cleanup."""

    def __init__(self, famfs_py_bin: Path) -> None:
        from famfs_py.dax import backing

        self.bin = famfs_py_bin
        self.tag = f"{os.getpid()}-{secrets.token_hex(4)}"
        saved = os.environ.pop(backing.DIR_ENV, None)
        try:  # where memory would go without the override (mounting famfs-py's tmpfs)
            self.base = backing.memory_dir().path if saved is None else Path(saved)
        finally:
            if saved is not None:
                os.environ[backing.DIR_ENV] = saved
        self.swept = sweep(self.base, self.bin)
        staging = self.base / f".{RUN_PREFIX}new.{self.tag}"
        staging.mkdir(mode=0o1777)
        os.chmod(staging, 0o1777)  # unprivileged test users make memory here too
        self._lock_fd = os.open(staging / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        self.dir = self.base / f"{RUN_PREFIX}{self.tag}"
        os.rename(staging, self.dir)  # sweeps look only at named, locked directories
        self.basetemp: Path | None = None
        self._write_state()
        self._env = {
            backing.DIR_ENV: str(self.dir),
            # nothing the tests run falls back to this machine's /opt/famfs/system_uuid
            "FAMFS_PY_SYSTEM_UUID": str(uuid.uuid4()),
        }
        self._saved_env = {k: os.environ.get(k) for k in self._env}
        os.environ.update(self._env)
        self._saved_signals = {}
        for signum in (signal.SIGTERM, signal.SIGHUP):
            self._saved_signals[signum] = signal.signal(signum, _interrupt)

    def set_basetemp(self, basetemp: Path) -> None:
        self.basetemp = basetemp
        self._write_state()
        # daemon logs of mounts made outside the `mounts` fixture stay in this run's tree
        os.environ.setdefault("FAMFS_PY_LOG_DIR", str(basetemp / "daemon-logs"))

    def _write_state(self) -> None:
        state = {"pid": os.getpid(), "basetemp": str(self.basetemp) if self.basetemp else None}
        tmp = self.dir / "run.json.tmp"
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.dir / "run.json")

    def close(self) -> list[str]:
        """Unmount this run's mounts, remove its memory; returns what was left behind."""
        for signum, handler in self._saved_signals.items():
            signal.signal(signum, handler)
        try:
            left = cleanup(self.dir, self.basetemp, self.bin)
        finally:
            for key, value in self._saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            os.close(self._lock_fd)
        return left


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM/SIGHUP end the run as Ctrl-C does: pytest then runs every teardown."""
    signal.signal(signum, signal.SIG_IGN)  # a second signal must not cut the cleanup short
    raise KeyboardInterrupt(f"signal {signum}")


def sweep(base: Path, famfs_py_bin: Path) -> list[Path]:
    """Clean up after runs that were killed: every run directory in `base` whose lock no
    live run holds. Returns the directories swept."""
    swept = []
    for run_dir in sorted(base.glob(f"{RUN_PREFIX}*")):
        try:
            fd = os.open(run_dir / "lock", os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live run
            try:
                basetemp = json.loads((run_dir / "run.json").read_text()).get("basetemp")
            except (OSError, ValueError):
                basetemp = None
            cleanup(run_dir, Path(basetemp) if basetemp else None, famfs_py_bin)
            swept.append(run_dir)
        finally:
            os.close(fd)
    return swept


def cleanup(run_dir: Path, basetemp: Path | None, famfs_py_bin: Path) -> list[str]:
    """Unmount the run's famfs-py mounts (ending their daemons), remove its directory."""
    left = []
    for mountpoint, source in _run_mounts(run_dir, basetemp):
        _unmount(mountpoint, source, famfs_py_bin)
        left.append(f"mount {mountpoint} ({source})")
    shutil.rmtree(run_dir, ignore_errors=True)
    return left


def _under(path: str, parent: Path | None) -> bool:
    return parent is not None and (path + "/").startswith(str(parent).rstrip("/") + "/")


def _run_mounts(run_dir: Path, basetemp: Path | None) -> list[tuple[str, str]]:
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            if fields[sep + 1] != FSTYPE:
                continue
            mountpoint = fields[4].replace("\\040", " ")
            source = fields[sep + 2].replace("\\040", " ")
            ours = _under(mountpoint, basetemp) or _under(source, basetemp)
            if ours or _under(os.path.realpath(source), run_dir):
                found.append((mountpoint, source))
    return list(reversed(found))  # the last mounted first


def _unmount(mountpoint: str, source: str, famfs_py_bin: Path) -> None:
    pid = _holder_pid(source)
    with contextlib.suppress(subprocess.TimeoutExpired, OSError):
        subprocess.run(
            [str(famfs_py_bin / "famfs-py"), "umount", mountpoint],
            capture_output=True,
            timeout=30,
        )
    if _mounted(mountpoint):
        subprocess.run(["fusermount3", "-u", "-z", mountpoint], capture_output=True)
    if pid is not None:
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _holder_pid(source: str) -> int | None:
    """The daemon holding the emulated device `source` (a node path), if any."""
    from famfs_py.dax import holder
    from famfs_py.dax.device import NAME_RE, device_in_root

    node = Path(source)
    if not NAME_RE.match(node.name) or node.parent.name != "dev":
        return None
    try:
        info = holder.holder_info(device_in_root(node.name, node.parent.parent))
    except OSError:
        return None
    pid = (info or {}).get("pid")
    return pid if isinstance(pid, int) and pid != os.getpid() else None


def _mounted(mountpoint: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == mountpoint for line in f)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child of ours is gone for this purpose
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
