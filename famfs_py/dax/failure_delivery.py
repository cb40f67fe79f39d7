"""Memory-failure delivery to a device's holder, across processes.

The kernel calls the holder's notify_failure (dax_holder_notify_failure); here the holder
listens on a socket of its own (`FailureListener`, one thread per claim) and whoever reports
a failure (`famfs-py dax inject-error`, a removal) sends it one `FailureNotice` and reads one
`FailureResult` (`send_failure`). Both ends check who is at the other end (SO_PEERCRED).
The claim (famfs_py.dax.holder) says where the socket is.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import secrets
import socket
import stat
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from famfs_py import rundir
from famfs_py.credentials import peer_credentials
from famfs_py.dax.device import DaxDevice

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
DELIVERY_TIMEOUT = 10.0  # seconds a holder's callback may take before the reporter gives up


class HolderOps(Protocol):
    """What a holder registers (struct dax_holder_operations)."""

    def notify_failure(self, offset: int, length: int, flags: int) -> int:
        """Handle a memory failure; return 0 or a positive errno."""
        ...


@dataclass(frozen=True)
class FailureNotice:
    """The one message a failure sender puts on a holder's socket: a bad device range and
    the kernel's MF_* flags (one JSON object in one SOCK_SEQPACKET message)."""

    offset: int
    length: int
    flags: int

    def encode(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def decode(cls, data: bytes) -> FailureNotice:
        """ValueError (or KeyError, TypeError) for anything but a notice."""
        body = json.loads(data)
        return cls(*(int(body[k]) for k in ("offset", "length", "flags")))


@dataclass(frozen=True)
class FailureResult:
    """The holder's answer: its callback's result (0 or an errno)."""

    rc: int

    def encode(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def decode(cls, data: bytes) -> FailureResult:
        return cls(int(json.loads(data)["rc"]))


def send_failure(
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
    request = FailureNotice(offset, length, flags).encode()
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
        return FailureResult.decode(reply).rc
    except (ValueError, KeyError, TypeError):
        return errno.EIO


def sweep_dead_holders(directory: str | os.PathLike[str]) -> int:
    """Remove this user's failure sockets whose process is gone (SIGKILLed holders leave
    theirs: `<device>-<pid>-<hex>.sock`). Returns how many."""
    removed = 0
    for entry in os.scandir(directory):
        parts = entry.name.removesuffix(".sock").split("-")
        if len(parts) != 3 or not parts[1].isdigit() or os.path.exists(f"/proc/{parts[1]}"):
            continue
        with contextlib.suppress(OSError):
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISSOCK(st.st_mode) and st.st_uid == os.geteuid():
                os.unlink(entry.path)
                removed += 1
    return removed


class FailureListener:
    """Receives failure notifications for one claim and runs the holder's callback."""

    def __init__(self, device: DaxDevice, ops: HolderOps) -> None:
        self.device = device
        self.ops = ops
        key = f"{device.name}-{os.getpid()}-{secrets.token_hex(6)}"
        self.path = rundir.socket_path("holders", key, os.geteuid())
        self.name = self.path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            self._inode = rundir.bind_listener(self._sock, self.path)
            sweep_dead_holders(os.path.dirname(self.path))
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
                conn.send(FailureResult(errno.EPERM).encode())
                return
            notice = FailureNotice.decode(conn.recv(4096))
        except (OSError, ValueError, KeyError, TypeError):
            return
        self._in_callback = True
        try:
            rc = int(self.ops.notify_failure(notice.offset, notice.length, notice.flags) or 0)
        except Exception:
            log.exception("notify_failure callback failed for %s", self.device.path)
            rc = errno.EIO
        finally:
            self._in_callback = False
        with contextlib.suppress(OSError):
            conn.send(FailureResult(rc).encode())

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
