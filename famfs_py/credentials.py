"""Who is at the other end of a unix socket: SO_PEERCRED, and the peer's groups.

Every socket famfs-py listens on or talks to (the control channel, the holder's failure
socket) learns its peer from the kernel here, never from what the peer says.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field
from typing import Protocol

_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


@dataclass(frozen=True)
class Credentials:
    pid: int
    uid: int
    gid: int
    _groups: list[set[int]] = field(default_factory=list, compare=False, repr=False)

    @property
    def groups(self) -> set[int]:
        """Primary and supplementary groups (from /proc: SO_PEERCRED has only the first).
        Read once, when first asked."""
        if not self._groups:
            found = {self.gid}
            try:
                with open(f"/proc/{self.pid}/status") as f:
                    for line in f:
                        if line.startswith("Groups:"):
                            found.update(int(g) for g in line.split()[1:])
                            break
            except OSError:
                pass
            self._groups.append(found)
        return self._groups[0]


class _Socket(Protocol):
    def getsockopt(self, level: int, optname: int, buflen: int, /) -> bytes: ...


def peer_credentials(sock: _Socket) -> Credentials:
    """The credentials of the process that connected `sock` (or that it connected to)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    return Credentials(*_PEERCRED.unpack(raw))
