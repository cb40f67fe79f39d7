"""The holder layer: claim, release and memory-failure delivery, as the kernel's dax core does.

`claim` is fs_dax_get(): alive -> driver -> exclusive holder -> ops, each failure undoing
exactly what was done. `Claim.release` is fs_put_dax(). `notify_failure` is
dax_holder_notify_failure(): it reaches the holder's callback in whatever process holds the
claim. Exclusivity is an flock on an open file, so the OS releases it when the holder dies.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from famfs_py import rundir
from famfs_py.credentials import peer_credentials
from famfs_py.dax.device import DaxDevice
from famfs_py.dax.sysfs import DaxDriver, DaxMode

log = logging.getLogger(__name__)

# memory-failure flags, kernel values (include/linux/mm.h)
MF_ACTION_REQUIRED = 1 << 1
MF_MUST_KILL = 1 << 2
MF_SW_SIMULATED = 1 << 5
MF_MEM_PRE_REMOVE = 1 << 7
MF_FLAG_NAMES = {
    "action-required": MF_ACTION_REQUIRED,
    "must-kill": MF_MUST_KILL,
    "sw-simulated": MF_SW_SIMULATED,
    "pre-remove": MF_MEM_PRE_REMOVE,
}
WHOLE_DEVICE = (1 << 64) - 1  # the length a pre-remove notification carries

HOLDER_LOCK = "holder.lock"
HOLDER_INFO = "holder"
DELIVERY_TIMEOUT = 10.0  # seconds a holder's callback may take before the reporter gives up


class HolderOps(Protocol):
    """What a holder registers (struct dax_holder_operations)."""

    def notify_failure(self, offset: int, length: int, flags: int) -> int:
        """Handle a memory failure; return 0 or a positive errno."""
        ...


def _lock_file(path: Path, create: bool) -> int | None:
    flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    try:
        return os.open(path, flags, 0o644)
    except FileNotFoundError:
        return None


@contextlib.contextmanager
def device_lock(device: DaxDevice, exclusive: bool) -> Iterator[None]:
    """The device's read/write lock (dax_read_lock for the alive guard; reconfigure and
    remove take it exclusively)."""
    device.state_lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(device.state_lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def mode_hint(device: DaxDevice, mode: str) -> str:
    """How to put `device` in `mode` (devdax for a real device, famfs for an emulated one)."""
    if device.emulated:
        return (
            f"famfs-py dax reconfigure {device.name} --mode {mode} --root {device.emulation_root}"
        )
    return f"daxctl reconfigure-device --mode={mode} {device.name}"


def dead_reason(device: DaxDevice) -> str | None:
    """Why the device cannot be used by a filesystem at all (None: it is alive)."""
    if not device.exists():
        return f"{device.describe()} does not exist"
    usable = DaxMode.FAMFS if device.emulated else DaxMode.DEVDAX
    driver = device.driver
    if driver is None:
        enable = (
            mode_hint(device, usable) if device.emulated else f"daxctl enable-device {device.name}"
        )
        return f"{device.describe()} is disabled (no driver bound); enable it: {enable}"
    if driver == DaxDriver.KMEM:
        return (
            f"{device.describe()} is in system-ram mode (onlined as memory); give it back "
            f"(offline its memory, then {mode_hint(device, usable)})"
        )
    if device.emulated and not os.path.exists(device.node):
        if not device.node.is_symlink():
            return f"{device.describe()} has no memory node {device.node}"
        return (
            f"the memory of {device.describe()}, {os.readlink(device.node)}, is gone (deleted, "
            f"or cleared by a reboot): remove the device with 'famfs-py dax remove "
            f"{device.path}' and create it again"
        )
    return None


def check_mode(device: DaxDevice, *, allow_devdax: bool) -> None:
    """OSError(EOPNOTSUPP) with the way out, unless famfs-py can map and hold the device in
    the mode it is in: famfs for an emulated device; devdax (with `allow_devdax`) for a real
    one, whose famfs mode (fsdev_dax) the kernel does not let userspace map."""
    driver = device.driver
    if device.emulated:
        if driver == DaxDriver.FSDEV_DAX:
            return
        hint = mode_hint(device, DaxMode.FAMFS)
        raise OSError(
            errno.EOPNOTSUPP, f"{device.describe()} is in {device.mode} mode, not famfs ({hint})"
        )
    if driver == DaxDriver.DEVICE_DAX:
        if allow_devdax:
            return
        raise OSError(
            errno.EOPNOTSUPP,
            f"{device.describe()} is in devdax mode: give --devdax to use it (the kernel does "
            "not stop other processes from mapping a devdax device while famfs-py holds it)",
        )
    if driver == DaxDriver.FSDEV_DAX:
        raise OSError(
            errno.EOPNOTSUPP,
            f"{device.describe()} is in famfs mode (fsdev_dax), whose memory the kernel does "
            f"not let userspace map; switch it to devdax mode and give --devdax: as root, "
            f"`echo {device.name} > /sys/bus/dax/drivers/fsdev_dax/unbind; "
            f"echo {device.name} > /sys/bus/dax/drivers/device_dax/bind` (or "
            f"`{mode_hint(device, DaxMode.DEVDAX)}` with a daxctl that knows famfs mode: "
            f"Debian 12's daxctl 76 does not)",
        )
    raise OSError(
        errno.EOPNOTSUPP,
        f"{device.describe()} is bound to {driver} ({device.mode} mode), which famfs-py "
        f"cannot use; switch it to devdax mode ({mode_hint(device, DaxMode.DEVDAX)})",
    )


@contextlib.contextmanager
def alive_guard(device: DaxDevice) -> Iterator[None]:
    """Scoped guard: holds the device's read lock and fails with ENODEV unless it is alive
    (dax_read_lock() + dax_alive(); the lock is dropped when the block ends)."""
    with device_lock(device, exclusive=False):
        reason = dead_reason(device)
        if reason:
            raise OSError(errno.ENODEV, reason)
        yield


class Claim:
    """A device held by one holder, until `release`."""

    def __init__(self, device: DaxDevice, holder: str, lock_fd: int) -> None:
        self.device = device
        self.holder = holder
        self._lock_fd: int | None = lock_fd
        self._token = secrets.token_hex(8)
        self._listener: _FailureListener | None = None

    @property
    def held(self) -> bool:
        return self._lock_fd is not None

    def _write_info(self, socket_name: str | None) -> None:
        info = {
            "pid": os.getpid(),
            "holder": self.holder,
            "token": self._token,
            "uid": os.geteuid(),
            "socket": socket_name,
            "since": time.time(),
        }
        path = self.device.holder_dir / HOLDER_INFO
        tmp = path.with_name(f".{HOLDER_INFO}.{os.getpid()}")
        tmp.write_text(json.dumps(info) + "\n")
        tmp.replace(path)

    def release(self) -> None:
        """fs_put_dax(): stop receiving failures and drop the claim; safe to call twice and
        after the device is gone."""
        if self._listener is not None:
            self._listener.stop()
            self._listener = None
        fd, self._lock_fd = self._lock_fd, None
        if fd is None:
            return
        try:
            info = self.device.holder_dir / HOLDER_INFO
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                if json.loads(info.read_text()).get("token") == self._token:
                    info.unlink()
        except (OSError, ValueError):
            pass
        finally:
            os.close(fd)
        log.info("released %s (holder %s)", self.device.path, self.holder)

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def claim(
    device: DaxDevice,
    holder: str,
    ops: HolderOps | None = None,
    *,
    allow_devdax: bool = False,
) -> Claim:
    """fs_dax_get(): take `device` for `holder`, registering `ops` for memory failures.

    ENODEV: missing, disabled or system-ram. EOPNOTSUPP: a mode famfs-py cannot map and hold
    (see check_mode: an emulated device must be in famfs mode, a real one in devdax mode,
    accepted only with `allow_devdax`). EBUSY: held. The messages say how to fix it.
    """
    with alive_guard(device):
        check_mode(device, allow_devdax=allow_devdax)
        try:
            device.holder_dir.mkdir(parents=True, exist_ok=True)
            fd = _lock_file(device.holder_dir / HOLDER_LOCK, create=True)
        except PermissionError:
            raise PermissionError(
                errno.EACCES,
                f"{device.describe()} cannot be claimed: no permission to write its holder "
                f"lock in {device.holder_dir} (run as root)",
            ) from None
        assert fd is not None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OSError(
                errno.EBUSY, f"{device.describe()} is busy: {describe_holder(device)}"
            ) from None
        held = Claim(device, holder, fd)
        try:
            socket_name = None
            if ops is not None:
                held._listener = _FailureListener(device, ops)
                socket_name = held._listener.name
            held._write_info(socket_name)
        except BaseException:
            held.release()
            raise
    if not device.emulated:  # only once claimed: a refused claim says one thing, why
        log.warning(
            "%s is in devdax mode: the kernel does not stop other processes from "
            "mapping it while famfs-py holds it",
            device.path,
        )
    log.info("claimed %s for %s", device.path, holder)
    return held


def holder_info(device: DaxDevice) -> dict[str, object] | None:
    """The current holder's diagnostics (pid, holder, socket), or None if unclaimed."""
    fd = _lock_file(device.holder_dir / HOLDER_LOCK, create=False)
    if fd is None:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # held by someone
        else:
            return None
        for _ in range(50):  # a claim in progress writes its info right after locking
            try:
                return json.loads((device.holder_dir / HOLDER_INFO).read_text())
            except (FileNotFoundError, ValueError):
                time.sleep(0.01)
        return {"pid": None, "holder": "unknown", "socket": None}
    finally:
        os.close(fd)


def describe_holder(device: DaxDevice) -> str:
    info = holder_info(device)
    if info is None:
        return "not claimed"
    return f"claimed by {info.get('holder')} (pid {info.get('pid')})"


def notify_failure(
    device: DaxDevice,
    offset: int,
    length: int,
    flags: int,
    *,
    timeout: float = DELIVERY_TIMEOUT,
    locked: bool = False,
) -> int:
    """dax_holder_notify_failure(): deliver a memory failure to the device's holder.

    Returns 0 or an errno: ENXIO if the device is dead, EOPNOTSUPP if nobody holds it (or the
    holder registered no ops), else the holder callback's result. `locked`: the caller
    already holds the device lock (reconfigure/remove deliver pre-remove under it).
    """
    guard = contextlib.nullcontext() if locked else device_lock(device, exclusive=False)
    with guard:
        if not device.exists() or (not locked and dead_reason(device)):
            return errno.ENXIO
        info = holder_info(device)
        if info is None or not info.get("socket"):
            return errno.EOPNOTSUPP
        return _send_failure(info, offset, length, flags, timeout)


def _send_failure(
    info: dict[str, object], offset: int, length: int, flags: int, timeout: float
) -> int:
    """Deliver to the holder `info` names, through its socket file, and only to it: the
    file and its directories must be the holder's user's (rundir), and the process at the
    other end the holder's own process."""
    path = Path(str(info["socket"]))
    try:
        uid = int(info.get("uid", 0))  # type: ignore[call-overload]
        rundir.check_trusted(path, uid)
    except FileNotFoundError:
        return errno.EOPNOTSUPP  # the holder is going away
    except (OSError, ValueError, TypeError):
        return errno.EPERM
    request = json.dumps({"offset": offset, "length": length, "flags": flags}).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
            if peer_credentials(sock).pid != info.get("pid"):
                return errno.EPERM  # somebody else's socket: not the holder
            sock.send(request)
            reply = sock.recv(4096)
        except (ConnectionRefusedError, FileNotFoundError):
            return errno.EOPNOTSUPP  # the holder is going away
        except TimeoutError:
            return errno.ETIMEDOUT
        except OSError as exc:
            return exc.errno or errno.EIO
    try:
        return int(json.loads(reply)["rc"])
    except (ValueError, KeyError, TypeError):
        return errno.EIO


class _FailureListener:
    """Receives failure notifications for one claim and runs the holder's callback."""

    def __init__(self, device: DaxDevice, ops: HolderOps) -> None:
        self.device = device
        self.ops = ops
        key = f"{device.name}-{os.getpid()}-{secrets.token_hex(6)}"
        self.path = rundir.socket_path("holders", key, os.geteuid())
        self.name = str(self.path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            self._inode = rundir.bind_listener(self._sock, self.path)
        except BaseException:
            self._sock.close()
            raise
        self._sock.listen(16)
        self._stopping = False
        self._in_callback = False  # a callback may release the claim (pre-remove) itself
        self._thread = threading.Thread(
            target=self._serve, name=f"holder-{device.name}", daemon=True
        )
        self._thread.start()

    def _allowed(self, conn: socket.socket) -> bool:
        return peer_credentials(conn).uid in (0, os.geteuid())

    def _serve(self) -> None:
        while not self._stopping:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with conn:
                self._handle(conn)

    def _handle(self, conn: socket.socket) -> None:
        try:
            if not self._allowed(conn):
                conn.send(json.dumps({"rc": errno.EPERM}).encode())
                return
            request = json.loads(conn.recv(4096))
            offset, length, flags = (int(request[k]) for k in ("offset", "length", "flags"))
        except (OSError, ValueError, KeyError, TypeError):
            return
        self._in_callback = True
        try:
            rc = int(self.ops.notify_failure(offset, length, flags) or 0)
        except Exception:
            log.exception("notify_failure callback failed for %s", self.device.path)
            rc = errno.EIO
        finally:
            self._in_callback = False
        with contextlib.suppress(OSError):
            conn.send(json.dumps({"rc": rc}).encode())

    def stop(self) -> None:
        self._stopping = True
        rundir.unlink_own(self.path, self._inode)
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        # a callback that releases the claim (directly, or by another thread it waits for)
        # must not wait for the thread that runs it: that thread ends once it returns
        if threading.current_thread() is not self._thread and not self._in_callback:
            self._thread.join(timeout=5)
