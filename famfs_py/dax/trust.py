"""Which directories and memory files famfs-py trusts with a device's state.

Acting in a directory another user can change, famfs-py (often root) would follow that user's
symlinks and use that user's files: create its lock where a planted link points, write a
filesystem into a file the user swapped in for the device, overwrite a file of the user's
choice through a planted temporary name. So an emulation root, the directories in it that
famfs-py writes, and every directory above them must belong to this user or root and be
writable by nobody else; a directory above may be open to all only with the sticky bit
(/tmp), where nobody may rename or remove another's entries. A memory directory (the tmpfs,
/dev/shm, $FAMFS_PY_MEMORY_DIR) may itself be sticky and open to all; the memory file in it
must belong to this user or root.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

_OTHERS_WRITE = stat.S_IWGRP | stat.S_IWOTH


def trusted_uids() -> frozenset[int]:
    return frozenset({0, os.geteuid()})


def _refuse(path: Path | str, why: str, fix: str) -> OSError:
    return OSError(errno.EPERM, f"refusing {path}: {why}; {fix}")


def _components(path: Path) -> list[Path]:
    """`path` and every directory above it, lexically and as resolved (both are walked)."""
    seen: list[Path] = []
    for start in (Path(os.path.abspath(path)), Path(os.path.realpath(path))):
        current = start
        while True:
            if current not in seen:
                seen.append(current)
            if current == current.parent:
                break
            current = current.parent
    return seen


def check_directory(path: Path, what: str, *, open_to_all_ok: bool = False) -> None:
    """OSError(EPERM) naming the directory and the fix unless `path` and every directory
    above it belong to this user or root and nobody else may write them (a directory above,
    or `path` itself when `open_to_all_ok`, may be open to all with the sticky bit). A
    missing `path` is fine (it will be made as this user's): its existing parents are
    checked."""
    trusted = trusted_uids()
    target = Path(os.path.abspath(path))
    fix = (
        f"use {what} that only root (or you) can write, e.g. "
        f"'chown -R root: {target} && chmod -R go-w {target}' if it is yours to give"
    )
    for component in _components(target):
        try:
            st = os.lstat(component)
        except FileNotFoundError:
            continue
        if st.st_uid not in trusted:
            raise _refuse(
                target, f"{component} belongs to uid {st.st_uid}, who could change it", fix
            )
        if stat.S_ISLNK(st.st_mode) or not st.st_mode & _OTHERS_WRITE:
            continue
        is_target = component in (target, Path(os.path.realpath(target)))
        if st.st_mode & stat.S_ISVTX and (open_to_all_ok or not is_target):
            continue
        raise _refuse(target, f"{component} can be written by other users", fix)


def check_emulation_root(root: Path) -> None:
    """The emulation root and the directories famfs-py writes in it."""
    check_directory(root, "an emulation root")
    for sub in ("dev", "run", "sys", "sys/bus", "sys/bus/dax", "sys/bus/dax/devices"):
        check_directory(root / sub, "an emulation root")


def check_memory_file(memory: Path) -> None:
    """A device's memory: in a trusted directory (open to all with the sticky bit is fine)
    and this user's or root's (another user's file would get this user's data)."""
    real = Path(os.path.realpath(memory))
    check_directory(real.parent, "a memory directory", open_to_all_ok=True)
    try:
        owner = os.stat(real).st_uid
    except FileNotFoundError:
        return
    if owner not in trusted_uids():
        raise _refuse(
            memory,
            f"the memory file belongs to uid {owner}, who could read and change it",
            "use memory that belongs to root (or you)",
        )
