"""Where emulated devices' memory lives, and which of it no device uses any more.

New memory goes into $FAMFS_PY_MEMORY_DIR when that is set, else into a tmpfs of famfs-py's
own at /run/famfs-py/memory, mounted on first use with `huge=within_size` so that the memory
sits on 2 MiB pages as a real devdax device's does; where that tmpfs cannot be mounted (not
root, a kernel without transparent huge pages) it falls back to /dev/shm (4 KiB pages).

Each device owns a link name of its own for its memory (`famfs-py.<hex>`; a second host
sharing the memory adds a hard link beside the first, on the same filesystem) and records,
beside it, which device node owns it (`famfs-py.<hex>.owner`, a symlink to the node). Memory
whose owner is gone (its emulation root deleted by hand, a killed test run) is *orphaned*:
`famfs-py dax list` shows it and `famfs-py dax remove --orphans` reclaims it. A creation in
progress holds an flock on its memory file, so a sweep never takes memory being set up.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

DIR_ENV = "FAMFS_PY_MEMORY_DIR"
HUGE_DIR = Path("/run/famfs-py/memory")
SHM_DIR = Path("/dev/shm")
MOUNT_OPTIONS = "huge=within_size,mode=1777"
PREFIX = "famfs-py."
OWNER_SUFFIX = ".owner"
SHMEM_THP = Path("/sys/kernel/mm/transparent_hugepage/shmem_enabled")
_MS_NOSUID, _MS_NODEV = 2, 4


@dataclass(frozen=True)
class MemoryDir:
    """Where new emulated memory goes."""

    path: Path
    huge: bool  # on 2 MiB pages
    warning: str | None = None  # why not, when it had to fall back


def memory_dir() -> MemoryDir:
    """The directory for new emulated memory (mounting famfs-py's tmpfs if need be)."""
    chosen = os.environ.get(DIR_ENV)
    if chosen:
        path = Path(chosen).absolute()
        path.mkdir(parents=True, exist_ok=True)
        return MemoryDir(path, huge_pages(path))
    reason = _mount_huge_dir()
    if reason is None:
        return MemoryDir(HUGE_DIR, True)
    return MemoryDir(
        SHM_DIR,
        False,
        f"emulated memory is in {SHM_DIR} on 4 KiB pages, not 2 MiB pages as on a real "
        f"device: {reason} (run famfs-py once as root, or set {DIR_ENV} to a directory "
        "on a tmpfs mounted with huge=within_size)",
    )


def _mounts() -> list[tuple[str, int, str, str]]:
    """(mount point, device number, filesystem type, super options) of every mount."""
    found = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                sep = fields.index("-")
                major, minor = (int(x) for x in fields[2].split(":"))
                found.append(
                    (
                        _unescape(fields[4]),
                        os.makedev(major, minor),
                        fields[sep + 1],
                        fields[sep + 3],
                    )
                )
    except (OSError, ValueError):
        return []
    return found


def _filesystem(path: Path) -> tuple[str, str] | None:
    """(type, super options) of the filesystem that holds `path`."""
    try:
        dev = os.stat(path).st_dev
    except OSError:
        return None
    for _mountpoint, mount_dev, fstype, options in _mounts():
        if mount_dev == dev:
            return fstype, options
    return None


def _is_mountpoint(path: Path) -> bool:
    """True when a filesystem is mounted at `path` and visible there (not covered by a
    mount above it)."""
    target = os.path.realpath(path)
    try:
        dev = os.stat(target).st_dev
    except OSError:
        return False
    return any(mp == target and d == dev for mp, d, _t, _o in _mounts())


def _unescape(text: str) -> str:
    return text.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")


def huge_pages(path: Path) -> bool:
    """True when files under `path` get 2 MiB pages (a tmpfs with huge=always/within_size,
    and shmem huge pages not denied system-wide)."""
    setting = _shmem_thp_setting()
    found = _filesystem(path)
    if setting == "deny" or found is None or found[0] != "tmpfs":
        return False
    return setting == "force" or any(
        o in ("huge=always", "huge=within_size") for o in found[1].split(",")
    )


def _shmem_thp_setting() -> str | None:
    try:
        text = SHMEM_THP.read_text()
    except OSError:
        return None
    for word in text.split():
        if word.startswith("["):
            return word.strip("[]")
    return None


def _mount_huge_dir() -> str | None:
    """Mount famfs-py's tmpfs at HUGE_DIR unless it is there. None when it is, else why not."""
    if _is_mountpoint(HUGE_DIR):
        return None if huge_pages(HUGE_DIR) else f"{HUGE_DIR} is mounted without huge pages"
    if not SHMEM_THP.exists():
        return "this kernel has no transparent huge pages"
    if _shmem_thp_setting() == "deny":
        return f"huge pages for shared memory are denied ({SHMEM_THP} says deny)"
    try:
        HUGE_DIR.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        lock_fd = os.open(HUGE_DIR.parent / "memory.lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        return f"cannot create {HUGE_DIR.parent}: {exc.strerror}"
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)  # two first uses at once must not stack mounts
        if _is_mountpoint(HUGE_DIR):
            return None
        HUGE_DIR.mkdir(mode=0o1777, exist_ok=True)
        _mount("famfs-py-memory", HUGE_DIR, "tmpfs", _MS_NOSUID | _MS_NODEV, _options())
    except OSError as exc:
        return f"cannot mount a tmpfs with huge pages at {HUGE_DIR}: {exc.strerror}"
    finally:
        os.close(lock_fd)
    return None


def _options() -> str:
    """The tmpfs's options: huge pages, open to all (sticky), and as large as /dev/shm (the
    memory it would otherwise hold), where that can be told."""
    try:
        st = os.statvfs(SHM_DIR)
    except OSError:
        return MOUNT_OPTIONS
    return f"{MOUNT_OPTIONS},size={st.f_blocks * st.f_frsize}"


def _mount(source: str, target: Path, fstype: str, flags: int, data: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_ulong,
        ctypes.c_char_p,
    ]
    args = (source.encode(), os.fsencode(target), fstype.encode(), flags, data.encode())
    if libc.mount(*args) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(target))


# -- owned memory ------------------------------------------------------------------------------
def owner_link(memory: Path) -> Path:
    return memory.with_name(memory.name + OWNER_SUFFIX)


def record_owner(memory: Path, node: Path) -> None:
    """Record that device node `node` owns the memory link `memory`."""
    link = owner_link(memory)
    link.unlink(missing_ok=True)
    os.symlink(node.absolute(), link)


def recorded_owner(memory: Path) -> Path | None:
    try:
        return Path(os.readlink(owner_link(memory)))
    except OSError:
        return None


def forget(memory: Path) -> None:
    """Remove a memory link and its owner record."""
    memory.unlink(missing_ok=True)
    owner_link(memory).unlink(missing_ok=True)


def in_use(memory: Path) -> bool:
    """True while the recorded owner's node still links to `memory`."""
    owner = recorded_owner(memory)
    if owner is None or not owner.is_symlink():
        return False
    return os.path.realpath(owner) == os.path.realpath(memory)


@dataclass(frozen=True)
class Orphan:
    """A memory file in a memory directory that no device uses."""

    path: Path
    size: int  # apparent size
    allocated: int  # bytes of memory it holds
    owner: Path | None  # the device node that owned it; None: not recorded (an older famfs-py)

    @property
    def reclaimable(self) -> bool:
        """Safe to reclaim without being named: its recorded owner is gone."""
        return self.owner is not None

    def describe(self) -> str:
        held = f"{self.allocated / (1 << 20):.1f} MiB held of {self.size / (1 << 30):.1f} GiB"
        if self.owner is None:
            return (
                f"memory of unknown owner: {self.path} ({held}; made by an earlier "
                "famfs-py): once no device uses it, reclaim it with "
                f"'famfs-py dax remove --memory {self.path}'"
            )
        return (
            f"orphaned memory: {self.path} ({held}; its device {self.owner} is gone): "
            "reclaim it with 'famfs-py dax remove --orphans'"
        )


def scanned_dirs() -> list[Path]:
    """The memory directories `dax list` looks into for orphans."""
    dirs = [HUGE_DIR, SHM_DIR]
    chosen = os.environ.get(DIR_ENV)
    if chosen:
        dirs.insert(0, Path(chosen).absolute())
    unique: list[Path] = []
    for d in dirs:
        if d.is_dir() and not any(os.path.samefile(d, u) for u in unique):
            unique.append(d)
    return unique


def is_memory_file(path: Path) -> bool:
    """True for a memory file famfs-py made (by its name; not its owner record)."""
    return _is_memory_name(path.name) and path.is_file() and not path.is_symlink()


def _is_memory_name(name: str) -> bool:
    suffix = name[len(PREFIX) :]
    return (
        name.startswith(PREFIX)
        and len(suffix) == 16
        and all(c in "0123456789abcdef" for c in suffix)
    )


def orphans(dirs: list[Path] | None = None) -> list[Orphan]:
    """Memory files no device uses, in `dirs` (default: `scanned_dirs()`)."""
    found = []
    for directory in dirs if dirs is not None else scanned_dirs():
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            continue
        for name in names:
            path = directory / name
            if not _is_memory_name(name) or in_use(path):
                continue
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            found.append(Orphan(path, st.st_size, st.st_blocks * 512, recorded_owner(path)))
    return found


def stale_owner_records(dirs: list[Path] | None = None) -> list[Path]:
    """Owner records whose memory file is gone (its removal was cut short)."""
    found = []
    for directory in dirs if dirs is not None else scanned_dirs():
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            continue
        for name in names:
            memory = name.removesuffix(OWNER_SUFFIX)
            stale = not os.path.lexists(directory / memory)
            if memory != name and _is_memory_name(memory) and stale:
                found.append(directory / name)
    return found


def reclaim(memory: Path, *, unowned_ok: bool) -> bool:
    """Remove orphaned memory file `memory` unless a device uses it or a creation holds it.
    A file with no recorded owner is removed only when `unowned_ok`. Returns True if removed.
    Raises OSError(EBUSY) naming the device that uses it."""
    if in_use(memory):
        raise OSError(errno.EBUSY, f"{memory} is the memory of {recorded_owner(memory)}")
    if recorded_owner(memory) is None and not unowned_ok:
        return False
    try:
        fd = os.open(memory, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a device is being created on it right now
        if in_use(memory):
            return False
        forget(memory)
    finally:
        os.close(fd)
    return True
