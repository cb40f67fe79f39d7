"""The claim: one holder per device, as the kernel's dax core keeps it.

`claim` is fs_dax_get(): alive -> mode -> exclusive holder -> ops, each failure undoing
exactly what was done. `Claim.release` is fs_put_dax(). Exclusivity is an flock on an open
file, so the OS releases it when the holder dies; the holder-info file beside it says who
holds the device and where its failure socket is. `notify_failure` is
dax_holder_notify_failure(): it finds the holder and delivers (famfs_py.dax.failure_delivery).
Which modes a device may be claimed in is famfs_py.dax.mode_policy.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

from famfs_py.dax import trust
from famfs_py.dax.device import REAL_HOLDER_STATE, DaxDevice
from famfs_py.dax.failure_delivery import (
    DELIVERY_TIMEOUT,
    FailureListener,
    HolderOps,
    send_failure,
)
from famfs_py.dax.mode_policy import check_mode, dead_reason

log = logging.getLogger(__name__)

HOLDER_LOCK = "holder.lock"
HOLDER_INFO = "holder"


def _lock_file(path: Path, create: bool) -> int | None:
    flags = os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW | (os.O_CREAT if create else 0)
    try:
        return os.open(path, flags, 0o644)
    except FileNotFoundError:
        return None


@contextlib.contextmanager
def device_lock(device: DaxDevice, exclusive: bool) -> Iterator[None]:
    """The device's read/write lock (dax_read_lock for the alive guard; reconfigure and
    remove take it exclusively). Refuses a device whose state another user could change
    (famfs_py.dax.trust)."""
    check_trusted(device)
    device.state_lock_path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
    fd = os.open(device.state_lock_path, flags, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def check_trusted(device: DaxDevice) -> None:
    """OSError(EPERM) unless nobody but this user and root can change the device's state:
    its emulation root and the directories in it, its memory file (famfs_py.dax.trust)."""
    if device.emulation_root is None:
        trust.check_directory(REAL_HOLDER_STATE, "a state directory")
        return
    trust.check_emulation_root(device.emulation_root)
    trust.check_directory(device.sysfs_dir, "an emulation root")
    if os.path.lexists(device.node):
        trust.check_memory_file(device.node)


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
        self._listener: FailureListener | None = None

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
        tmp = path.with_name(f".{HOLDER_INFO}.{os.getpid()}.{secrets.token_hex(4)}")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        with os.fdopen(os.open(tmp, flags, 0o644), "w") as f:
            f.write(json.dumps(info) + "\n")
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
                held._listener = FailureListener(device, ops)
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
        return send_failure(info, offset, length, flags, timeout)
