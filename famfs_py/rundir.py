"""Where famfs-py's sockets live, so that no other user can take their names first.

Every socket a daemon listens on (a mount's control socket, a claim's failure socket) is a
file in a directory of the daemon user's runtime directory: /run/famfs-py for root,
/run/user/UID/famfs-py for anyone else. Only that user (and root) can create files there, and
both ends check it: the daemon will not use a directory someone else owns or can write, and a
command will not talk through a socket whose file, or any directory above it, belongs to
another user.
"""

from __future__ import annotations

import errno
import os
import stat

# Paths are strings here (os.path), not pathlib's: every command that talks to a daemon
# imports this module, and pathlib's import costs a command milliseconds.
ROOT_RUNTIME = "/run/famfs-py"
USER_RUNTIME = "/run/user/{uid}"  # systemd-logind's XDG_RUNTIME_DIR of each user

TYPE_CHECKING = False  # not typing's (mypy reads this as true)
if TYPE_CHECKING:
    import socket


def runtime_dir(uid: int) -> str:
    """The runtime directory of famfs-py daemons run by `uid`."""
    if uid == 0:
        return ROOT_RUNTIME
    return os.path.join(USER_RUNTIME.format(uid=uid), "famfs-py")


def socket_path(kind: str, key: str, uid: int) -> str:
    """The socket `key` of `kind` ("ctl", "holders") of daemons run by `uid`."""
    return os.path.join(runtime_dir(uid), kind, f"{key}.sock")


def _check_component(path: str, trusted: set[int]) -> None:
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


def check_trusted(path: str | os.PathLike[str], owner: int) -> None:
    """OSError(EPERM) unless `path` and every directory from the owner's runtime directory
    down to it belong to `owner` or root and cannot be written by anyone else."""
    trusted = {0, owner}
    base = runtime_dir(owner)
    current = os.path.normpath(os.fspath(path))
    while True:
        _check_component(current, trusted)
        parent = os.path.dirname(current)
        if current in (base, parent):
            return
        current = parent


def ensure_private_dir(path: str) -> str:
    """Create `path` (and its parents up to the runtime directory) as this user's, mode 0755,
    and check that nobody else owns or can write any of them."""
    uid = os.geteuid()
    base = runtime_dir(uid)
    above = os.path.dirname(base)
    if uid != 0 and not os.path.isdir(above):
        raise OSError(
            errno.ENOENT,
            f"{above} does not exist: famfs-py run as uid {uid} keeps its sockets in the "
            "user's runtime directory (log in through systemd-logind, or run as root)",
        )
    old_umask = os.umask(0o022)
    try:
        os.makedirs(path, mode=0o755, exist_ok=True)
    finally:
        os.umask(old_umask)
    check_trusted(path, uid)
    return path


def bind_listener(sock: socket.socket, path: str) -> int:
    """Bind `sock` at `path` (in a private directory); returns the socket file's inode. A
    socket file left by a dead daemon is replaced; one a live process listens on is
    EADDRINUSE, naming who."""
    ensure_private_dir(os.path.dirname(path))
    try:
        sock.bind(path)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        holder = _listening_peer(path)
        if holder is not None:
            raise OSError(
                errno.EADDRINUSE, f"{path} is in use by pid {holder[0]} (uid {holder[1]})"
            ) from None
        try:
            os.unlink(path)  # stale: nobody listens
        except FileNotFoundError:
            pass
        sock.bind(path)
    os.chmod(path, 0o666)  # anyone may connect; each request is authorized on its own
    return os.lstat(path).st_ino


def _listening_peer(path: str) -> tuple[int, int] | None:
    """(pid, uid) of the process listening at `path`, or None if nobody does."""
    import socket

    from famfs_py.credentials import peer_credentials

    probe = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    probe.settimeout(2)
    try:
        probe.connect(path)
        peer = peer_credentials(probe)
        return peer.pid, peer.uid
    except OSError:
        return None
    finally:
        probe.close()


def unlink_own(path: str, inode: int) -> None:
    """Remove the socket file this process bound (not one a later daemon put there)."""
    try:
        if os.lstat(path).st_ino == inode:
            os.unlink(path)
    except OSError:
        pass
