"""The command side of the control channel: find the famfs-py mount holding a path, connect to
its daemon, send requests (famfs_py.protocol) and receive replies and descriptors.

A daemon listens on a socket file named after its mount point, in its user's runtime
directory (famfs_py.rundir); a command finds the mount from /proc/self/mountinfo and talks
only through a socket file, and to a process, of the mount's owner (or root).
"""

from __future__ import annotations

import _socket
import errno
import os
import sys

from famfs_py import rundir, wire
from famfs_py.credentials import peer_credentials
from famfs_py.errors import FamfsError

# Every command imports this module: it imports neither typing, pathlib nor the socket
# module (whose enums import `enum`), and the typed protocol only when a request is sent.
TYPE_CHECKING = False  # not typing's (mypy reads this as true)
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import NoReturn, TypeVar

    from famfs_py import protocol
    from famfs_py.replies import Reply

    R = TypeVar("R", bound=Reply)

FSTYPE = "fuse.famfs-py"
PIPELINE_DEPTH = 64  # requests call_many sends before reading replies (small: they are ~200 B)
_FD_SIZE = 4  # one descriptor in an SCM_RIGHTS message (a C int)


def control_socket(mountpoint: str, owner: int) -> str:
    """The control socket of the daemon run by `owner` for `mountpoint`."""
    try:  # the builtin SHA-256: hashlib's import loads OpenSSL (milliseconds per command)
        from _sha256 import sha256  # type: ignore[import-not-found]
    except ImportError:
        from hashlib import sha256

    digest = sha256(os.path.realpath(mountpoint).encode()).hexdigest()[:32]
    return rundir.socket_path("ctl", digest, owner)


def mount_owner(mountpoint: str) -> int:
    """The user whose daemon serves the famfs-py mount at `mountpoint` (FUSE's user_id)."""
    real = os.path.realpath(mountpoint)
    owners = [m.owner for m in famfs_mounts() if m.mountpoint == real and m.owner is not None]
    return owners[-1] if owners else os.geteuid()


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal."""
    out = []
    i = 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


class MountEntry:
    """One famfs-py mount in /proc/self/mountinfo."""

    __slots__ = ("fstype", "mountpoint", "owner", "source")

    def __init__(self, mountpoint: str, source: str, fstype: str, owner: int | None) -> None:
        self.mountpoint = mountpoint
        self.source = source
        self.fstype = fstype
        self.owner = owner  # FUSE's user_id=: the user whose daemon serves the mount


def _owner(super_options: str) -> int | None:
    for option in super_options.split(","):
        if option.startswith("user_id="):
            try:
                return int(option[len("user_id=") :])
            except ValueError:
                return None
    return None


def famfs_mounts() -> list[MountEntry]:
    """Every famfs-py mount this process can see."""
    found = []
    try:
        with open("/proc/self/mountinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    for line in lines:
        left, _, right = line.partition(" - ")
        fields = left.split()
        tail = right.split()
        if len(fields) >= 5 and len(tail) >= 2 and tail[0] == FSTYPE:
            owner = _owner(tail[2]) if len(tail) >= 3 else None
            found.append(MountEntry(_unescape(fields[4]), _unescape(tail[1]), tail[0], owner))
    return found


def is_mountpoint(path: str) -> bool:
    real = os.path.realpath(path)
    return any(m.mountpoint == real for m in famfs_mounts())


class Located:
    """A path's famfs-py mount and the path inside it."""

    __slots__ = ("mountpoint", "relpath")

    def __init__(self, mountpoint: str, relpath: str) -> None:
        self.mountpoint = mountpoint
        self.relpath = relpath  # "" for the mount's root


def locate(path: str, mounts: list[MountEntry] | None = None) -> Located:
    """The famfs-py mount holding `path` (which need not exist yet) and the path inside it;
    `mounts`: famfs_mounts() read once by a caller locating many paths."""
    absolute = os.path.abspath(path)
    real = os.path.realpath(absolute)
    best: str | None = None
    for entry in famfs_mounts() if mounts is None else mounts:
        mp = entry.mountpoint
        if (real == mp or real.startswith(mp.rstrip("/") + "/")) and (
            best is None or len(mp) > len(best)
        ):
            best = mp
    if best is None:
        raise FamfsError(
            f"{path} is not in a famfs-py mount (mount one with 'famfs-py mount')", errno.ENOENT
        )
    rel = real[len(best) :].strip("/")
    return Located(best, rel)


class Channel:
    """A connection to one mount's daemon."""

    def __init__(self, mountpoint: str, timeout: float = 60.0) -> None:
        self.mountpoint = mountpoint
        self.owner = mount_owner(mountpoint)
        path = control_socket(mountpoint, self.owner)
        try:
            rundir.check_trusted(path, self.owner)
        except FileNotFoundError:
            pass  # no socket: said below, as a refused connection
        except OSError as exc:
            raise FamfsError(
                f"refusing the control socket of {mountpoint}: {exc.strerror}", errno.EPERM
            ) from None
        self.sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET | _socket.SOCK_CLOEXEC)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except OSError:
            self.sock.close()
            raise FamfsError(
                f"no famfs-py daemon answers for {mountpoint} (a stale mount? "
                f"'famfs-py umount {mountpoint}' cleans it up)",
                errno.ENOTCONN,
            ) from None
        try:
            self._check_daemon()
        except BaseException:
            self.sock.close()
            raise

    def _check_daemon(self) -> None:
        """Talk only to a process of the user who mounted (FUSE's user_id) or root, whoever
        managed to put a socket at the path."""
        peer = peer_credentials(self.sock)
        pid, uid = peer.pid, peer.uid
        if uid not in (0, self.owner):
            raise FamfsError(
                f"the control socket of {self.mountpoint} is held by pid {pid} (uid {uid}), "
                "not the mount's daemon: refusing to talk to it (a stale mount? "
                f"'famfs-py umount {self.mountpoint}' cleans it up)",
                errno.EPERM,
            )

    def call(self, request: protocol.Request[R]) -> R:
        """Send one request and return its typed reply (descriptors are closed)."""
        reply, fds = self.call_fds(request)
        for fd in fds:
            os.close(fd)
        return reply

    def call_many(self, requests: Sequence[protocol.Request[R]]) -> list[R | FamfsError]:
        """Send requests without waiting, then read their replies (the daemon answers a
        connection's requests in order): one round trip's wait for the lot instead of one
        per request. Each typed reply, or the FamfsError its answer carried, in request
        order; every request is answered, whatever the others' fate. Replies with
        descriptors are not for this (they are closed)."""
        out: list[R | FamfsError] = []
        for start in range(0, len(requests), PIPELINE_DEPTH):
            window = requests[start : start + PIPELINE_DEPTH]
            for request in window:
                try:
                    self.sock.send(request.encode())
                except OSError:
                    self._said_before_closing()
            for request in window:
                data, fds = self._receive()
                for fd in fds:
                    os.close(fd)
                try:
                    out.append(request.decode_reply(wire.decode_answer(data)))
                except FamfsError as exc:  # this request's error answer
                    out.append(exc)
        return out

    def call_fds(self, request: protocol.Request[R]) -> tuple[R, list[int]]:
        """Send one request; returns its typed reply (decoded here, once) and any
        descriptors it carried. An error reply raises FamfsError with the daemon's errno and
        message; a malformed one ProtocolError (EIO)."""
        data, fds = self.exchange(request.encode())
        try:
            return request.decode_reply(wire.decode_answer(data)), fds
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise

    def exchange(self, message: bytes) -> tuple[bytes, list[int]]:
        """Send one encoded request and return its whole answer, undecoded, and the
        descriptors it carried: `call_fds` without the typed reply, for a command that only
        needs to know that the request succeeded (wire.decode_answer says)."""
        try:
            self.sock.send(message)
        except OSError:  # it closed: an answer it sent first says why (a connection cap)
            self._said_before_closing()
        return self._receive()

    def _receive(self) -> tuple[bytes, list[int]]:
        """One answer (joined from its parts if it came in parts) and its descriptors
        (FamfsError if the daemon is gone)."""
        try:
            data, ancillary, _flags, _addr = self.sock.recvmsg(
                wire.MAX_MESSAGE, _socket.CMSG_LEN(wire.MAX_FDS * _FD_SIZE)
            )
        except TimeoutError:
            raise FamfsError(f"the daemon of {self.mountpoint} did not answer") from None
        except OSError:
            self._said_before_closing()
        fds = _descriptors(ancillary)
        if not data:
            for fd in fds:
                os.close(fd)
            raise FamfsError(f"the daemon of {self.mountpoint} closed the connection")
        try:
            return self._rest_of_answer(data), fds
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise

    def _said_before_closing(self) -> NoReturn:
        """The daemon closed the connection: raise what it said first, if it said anything."""
        try:
            data = self.sock.recv(wire.MAX_MESSAGE, _socket.MSG_DONTWAIT)
        except OSError:
            data = b""
        if data:
            wire.decode_answer(data)  # an error answer raises what it says
        raise FamfsError(f"the daemon of {self.mountpoint} closed the connection")

    def _rest_of_answer(self, first: bytes) -> bytes:
        """The whole answer: `first`, or the parts it announces (a long answer)."""
        count = wire.parts_announced(first)
        if not count:
            return first
        parts = []
        for _ in range(count):
            part = self.sock.recv(wire.REPLY_PART)
            if not part:
                raise FamfsError(f"the daemon of {self.mountpoint} closed the connection")
            parts.append(part)
        return b"".join(parts)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Channel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _descriptors(ancillary: list[tuple[int, int, bytes]]) -> list[int]:
    """The descriptors of SCM_RIGHTS messages (what socket.recv_fds returns)."""
    fds: list[int] = []
    for level, kind, payload in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            whole = len(payload) - len(payload) % _FD_SIZE
            fds += [
                int.from_bytes(payload[i : i + _FD_SIZE], sys.byteorder, signed=True)
                for i in range(0, whole, _FD_SIZE)
            ]
    return fds
