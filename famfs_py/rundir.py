"""Where famfs-py's sockets live, so that no other user can take their names first.

Every socket a daemon listens on (a mount's control socket, a claim's failure socket) is a
file in a directory of the daemon user's runtime directory: /run/famfs-py for root,
/run/user/UID/famfs-py for anyone else. Only that user (and root) can create files there, and
both ends check it: the daemon will not use a directory someone else owns or can write, and a
command will not talk through a socket whose file, or any directory above it, belongs to
another user.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
from pathlib import Path

ROOT_RUNTIME = Path("/run/famfs-py")
USER_RUNTIME = "/run/user/{uid}"  # systemd-logind's XDG_RUNTIME_DIR of each user


def runtime_dir(uid: int) -> Path:
    """The runtime directory of famfs-py daemons run by `uid`."""
    if uid == 0:
        return ROOT_RUNTIME
    return Path(USER_RUNTIME.format(uid=uid)) / "famfs-py"


def socket_path(kind: str, key: str, uid: int) -> Path:
    """The socket `key` of `kind` ("ctl", "holders") of daemons run by `uid`."""
    return runtime_dir(uid) / kind / f"{key}.sock"


def _check_component(path: Path, trusted: set[int]) -> None:
    st = os.lstat(path)
    if st.st_uid not in trusted:
        raise OSError(
            errno.EPERM,
            f"{path} belongs to uid {st.st_uid}, not to the daemon's user or root: famfs-py "
            "does not use sockets there (remove it)",
        )
    if stat.S_ISDIR(st.st_mode) and st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise OSError(
            errno.EPERM,
            f"{path} can be written by other users: famfs-py does not use sockets there",
        )


def check_trusted(path: Path, owner: int) -> None:
    """OSError(EPERM) unless `path` and every directory from the owner's runtime directory
    down to it belong to `owner` or root and cannot be written by anyone else."""
    trusted = {0, owner}
    base = runtime_dir(owner)
    current = path
    while True:
        _check_component(current, trusted)
        if current == base or current == current.parent:
            return
        current = current.parent


def ensure_private_dir(path: Path) -> Path:
    """Create `path` (and its parents up to the runtime directory) as this user's, mode 0755,
    and check that nobody else owns or can write any of them."""
    uid = os.geteuid()
    base = runtime_dir(uid)
    if uid != 0 and not base.parent.is_dir():
        raise OSError(
            errno.ENOENT,
            f"{base.parent} does not exist: famfs-py run as uid {uid} keeps its sockets in the "
            "user's runtime directory (log in through systemd-logind, or run as root)",
        )
    old_umask = os.umask(0o022)
    try:
        path.mkdir(mode=0o755, parents=True, exist_ok=True)
    finally:
        os.umask(old_umask)
    check_trusted(path, uid)
    return path


def bind_listener(sock: socket.socket, path: Path) -> int:
    """Bind `sock` at `path` (in a private directory); returns the socket file's inode. A
    socket file left by a dead daemon is replaced; one a live process listens on is
    EADDRINUSE, naming who."""
    ensure_private_dir(path.parent)
    try:
        sock.bind(str(path))
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        holder = _listening_peer(path)
        if holder is not None:
            raise OSError(
                errno.EADDRINUSE, f"{path} is in use by pid {holder[0]} (uid {holder[1]})"
            ) from None
        path.unlink(missing_ok=True)  # stale: nobody listens
        sock.bind(str(path))
    os.chmod(path, 0o666)  # anyone may connect; each request is authorized on its own
    return os.lstat(path).st_ino


def _listening_peer(path: Path) -> tuple[int, int] | None:
    """(pid, uid) of the process listening at `path`, or None if nobody does."""
    from famfs_py.credentials import peer_credentials

    probe = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    probe.settimeout(2)
    try:
        probe.connect(str(path))
        peer = peer_credentials(probe)
        return peer.pid, peer.uid
    except OSError:
        return None
    finally:
        probe.close()


def unlink_own(path: Path, inode: int) -> None:
    """Remove the socket file this process bound (not one a later daemon put there)."""
    with contextlib.suppress(OSError):
        if os.lstat(path).st_ino == inode:
            path.unlink()
