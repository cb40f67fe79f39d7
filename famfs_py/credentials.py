"""Who is at the other end of a unix socket: uid, gid and groups as the kernel recorded them
when the socket was connected (SO_PEERCRED, SO_PEERGROUPS).

Every socket famfs-py listens on or talks to (the control channel, the holder's failure
socket) learns its peer from the kernel here, never from what the peer says, and all of it
at once: nothing is looked up by pid later (a pid outlives its process and is reused: a
stranger's connection must not gain the groups of whoever takes its pid next).
"""

from __future__ import annotations

import errno
import os
import struct
from _socket import SO_PEERCRED, SOL_SOCKET

TYPE_CHECKING = False  # not typing's: every command imports this module (mypy reads it as true)
if TYPE_CHECKING:
    from typing import Protocol

    class _Socket(Protocol):
        def getsockopt(self, level: int, optname: int, buflen: int, /) -> bytes: ...

        def fileno(self) -> int: ...


_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
SO_PEERGROUPS = 59  # Linux >= 4.13 (asm-generic/socket.h); Python 3.11's socket lacks it
_GID = struct.Struct("I")  # gid_t
_PYTHON_BUFLEN_MAX = 1024  # socket.getsockopt refuses a longer buffer: 256 groups
_NGROUPS_MAX = 65536


class Credentials:
    """A peer's identity when it connected. `pid` is only a fact to report (and to compare
    with a pid a holder wrote down): never a key to look anything else up by. Immutable.
    (A plain class, not a dataclass: the dataclasses module's import costs every command
    milliseconds.)"""

    __slots__ = ("gid", "pid", "supplementary", "uid")
    pid: int
    uid: int
    gid: int
    supplementary: frozenset[int]

    def __init__(
        self, pid: int, uid: int, gid: int, supplementary: frozenset[int] = frozenset()
    ) -> None:
        object.__setattr__(self, "pid", pid)
        object.__setattr__(self, "uid", uid)
        object.__setattr__(self, "gid", gid)
        object.__setattr__(self, "supplementary", supplementary)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Credentials are immutable: cannot set {name}")

    def _key(self) -> tuple[int, int, int, frozenset[int]]:
        return self.pid, self.uid, self.gid, self.supplementary

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Credentials) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (
            f"Credentials(pid={self.pid}, uid={self.uid}, gid={self.gid}, "
            f"supplementary={set(self.supplementary) or '{}'})"
        )

    @property
    def groups(self) -> frozenset[int]:
        """Primary and supplementary groups, as they were at connect time."""
        return self.supplementary | {self.gid}


def peer_credentials(sock: _Socket) -> Credentials:
    """The credentials of the process that connected `sock` (or that it connected to), with
    its supplementary groups, all as the kernel recorded them at connect time."""
    raw = sock.getsockopt(SOL_SOCKET, SO_PEERCRED, _PEERCRED.size)
    pid, uid, gid = _PEERCRED.unpack(raw)
    return Credentials(pid, uid, gid, peer_groups(sock))


def peer_groups(sock: _Socket) -> frozenset[int]:
    """The peer's supplementary groups at connect time (SO_PEERGROUPS)."""
    try:
        raw = sock.getsockopt(SOL_SOCKET, SO_PEERGROUPS, _PYTHON_BUFLEN_MAX)
    except OSError as exc:
        if exc.errno != errno.ERANGE:
            raise
        raw = _peer_groups_large(sock.fileno())  # more than 256 groups
    return frozenset(g for (g,) in _GID.iter_unpack(raw[: len(raw) // _GID.size * _GID.size]))


def _peer_groups_large(fd: int) -> bytes:
    """SO_PEERGROUPS with a buffer as long as the kernel asks for (libc's getsockopt:
    Python's is capped at 1024 bytes). ctypes is imported here: commands start faster."""
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    size = ctypes.c_uint32(_NGROUPS_MAX * _GID.size)
    buffer = ctypes.create_string_buffer(size.value)
    if libc.getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, buffer, ctypes.byref(size)) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return buffer.raw[: size.value]
