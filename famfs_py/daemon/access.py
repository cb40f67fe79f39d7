"""Who may do what through the control channel: the rules of the authorization table, and the
POSIX checks they stand for, applied to the logged modes and owners.

The kernel checks file modes for the mount (default_permissions); this module makes the
control channel no more generous: a caller reaches a path only through directories it may
search, reads or maps what it may read, creates where it may write, gives new files away
only as root, and gets device memory only if it could open the device node itself.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import stat
from enum import Enum

from famfs_py.credentials import Credentials
from famfs_py.errors import FsError
from famfs_py.fs.namespace import Inode, Namespace

R, W, X = 4, 2, 1


class Rule(Enum):
    """Who may use an op (each op's row of the table says which)."""

    ANYONE = "any caller"
    READER = "a caller who may read the file (search on every directory above it)"
    CREATOR = "a caller who may write and search the directory it creates in"
    OWNER = "root or the mount's owner"


def is_privileged(caller: Credentials) -> bool:
    """Root, or the user the daemon runs as (the mount's owner, who holds the device)."""
    return caller.uid in (0, os.geteuid())


def _granted(mode: int, uid: int, gid: int, caller: Credentials, want: int) -> bool:
    if caller.uid == 0:
        return True
    if caller.uid == uid:
        bits = mode >> 6
    elif gid in caller.groups:
        bits = mode >> 3
    else:
        bits = mode
    return bits & want == want


def may(inode: Inode, caller: Credentials, want: int) -> bool:
    """The POSIX permission bits of `inode` grant `want` (R, W, X) to `caller`."""
    return is_privileged(caller) or _granted(inode.mode, inode.uid, inode.gid, caller, want)


def _denied(path: str, what: str) -> FsError:
    return FsError(f"{path or '/'}: permission denied ({what})", errno.EACCES)


def check_reach(ns: Namespace, inode: Inode, caller: Credentials) -> None:
    """EACCES unless `caller` may search every directory above `inode`."""
    parent = inode.parent
    while True:
        directory = ns.inodes[parent]
        if not may(directory, caller, X):
            raise _denied(ns.path_of(inode.ino), f"no search permission on /{ns.path_of(parent)}")
        if parent == directory.parent:  # the root
            return
        parent = directory.parent


def check_file(ns: Namespace, inode: Inode, caller: Credentials, *, write: bool) -> None:
    """EACCES unless `caller` may reach `inode` and read it (or write it)."""
    check_reach(ns, inode, caller)
    if not may(inode, caller, W if write else R):
        raise _denied(ns.path_of(inode.ino), "the file's mode does not allow it")


def check_create(ns: Namespace, relpath: str, caller: Credentials) -> None:
    """EACCES unless `caller` may create `relpath`: write and search permission on the
    deepest directory of it that exists now (mkdir -p makes the rest, as the caller)."""
    parts = relpath.split("/") if relpath else []
    existing = ns.resolve("")
    for part in parts[:-1]:
        below = ns.lookup(existing.ino, part) if existing is not None else None
        if below is None or not below.is_dir:
            break
        existing = below
    if existing is None:
        return  # the model refuses it (no such parent)
    check_reach(ns, existing, caller)
    if not may(existing, caller, W | X):
        where = ns.path_of(existing.ino)
        raise _denied(relpath, f"no write permission on /{where}")


def check_owner(uid: int | None, gid: int | None, caller: Credentials) -> tuple[int, int]:
    """The owner of a new file or directory: the caller's unless root says otherwise. Others
    may name themselves and a group they are in, as chown(2) allows."""
    owner = caller.uid if uid is None else uid
    group = caller.gid if gid is None else gid
    if is_privileged(caller):
        return owner, group
    if owner != caller.uid:
        raise FsError(f"only root may create files owned by another user ({owner})", errno.EPERM)
    if group not in caller.groups:
        raise FsError(f"you (uid {caller.uid}) are not in group {group}", errno.EPERM)
    return owner, group


def check_device(node: str, caller: Credentials, *, write: bool) -> None:
    """PermissionError unless `caller` could open the device node itself: its memory is
    handed out only to those (root, the node's owner or group with the mode's bits)."""
    if is_privileged(caller):
        return
    st = os.stat(node)  # an emulated node is a link to its memory: the memory's own mode
    want = R | W if write else R
    if _granted(stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, caller, want):
        return
    group = _group_name(st.st_gid)
    access = "read/write" if write else "read"
    facts = f"owner {_user_name(st.st_uid)}, group {group}, mode {stat.S_IMODE(st.st_mode):04o}"
    if (st.st_mode >> 3) & want == want:
        how = f"join group {group} (usermod -aG {group} USER, then log in again)"
    else:
        how = (
            "it grants no group access: an administrator can give it to a group (famfs-py "
            "install-service sets up group famfs and a udev rule, mode 0660) for you to join"
        )
    raise FsError(
        f"mapping a file's memory needs {access} access to the device {node} ({facts}); "
        f"{how}, or use the file through the mount (read/write, or an ordinary mmap there)",
        errno.EACCES,
    )


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
