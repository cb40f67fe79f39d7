"""Emulated dax devices: a sysfs-shaped tree under an emulation root, memory in a file.

Each device's node `<root>/dev/daxX.Y` is a symlink to a link name of its own for the memory
file (in famfs-py's huge-page tmpfs, /dev/shm, or beside a `--backing` file: see
famfs_py.dax.backing); sharing one memory between two roots (two simulated hosts) is a second
hard link to the same file, so the memory lives until the last device using it is removed.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path

from famfs_py.dax import backing as memory_files
from famfs_py.dax import failure_delivery, holder, trust
from famfs_py.dax.device import NAME_RE, DaxDevice, device_in_root, resolve_device
from famfs_py.dax.sysfs import (
    MODE_DRIVERS,
    MODES,
    DaxMode,
    format_badblocks,
    read_badblocks_file,
)

log = logging.getLogger(__name__)

DEFAULT_ALIGN = 2 << 20
INJECTED = "badblocks.injected"  # emulation-only: the subset of badblocks that was injected
# emulation-only: "1" if this host's view of the memory is coherent with the other hosts'
# (famfs-py then need not flush CPU caches, see famfs_py.dax.cache); "0" emulates a fabric
# pool whose hosts' caches are not kept coherent, which is what famfs is for
COHERENT = "coherent"
FAKE_MAJOR = 252
FAKE_PHYS_BASE = 0x1_0000_0000


def _write(path: Path, text: str) -> None:
    path.write_text(text)


def _setup_root(root: Path) -> None:
    for driver in MODE_DRIVERS.values():
        (root / "sys" / "bus" / "dax" / "drivers" / driver).mkdir(parents=True, exist_ok=True)
    (root / "sys" / "bus" / "dax" / "devices").mkdir(parents=True, exist_ok=True)
    (root / "dev").mkdir(exist_ok=True)
    (root / "run").mkdir(exist_ok=True)


def _bind(device: DaxDevice, mode: str) -> None:
    """Point the device's `driver` link at the driver for `mode` (atomically)."""
    link = device.sysfs_dir / "driver"
    if mode == DaxMode.DISABLED:
        if link.is_symlink():
            link.unlink()
        return
    tmp = device.sysfs_dir / f".driver.{secrets.token_hex(4)}"
    os.symlink(f"../../drivers/{MODE_DRIVERS[mode]}", tmp)
    os.replace(tmp, link)


def _owned_link(source: Path) -> Path:
    """A new link name beside `source` (hard links stay on one filesystem)."""
    return source.parent / f"{memory_files.PREFIX}{secrets.token_hex(8)}"


def memory_missing(device: DaxDevice) -> bool:
    """True when the device's memory file is gone (deleted by hand, cleared by a reboot)."""
    return not os.path.exists(device.node)


def create(
    name: str,
    size: int | None,
    root: Path,
    *,
    backing: str | None = None,
    share: str | None = None,
    mode: str = DaxMode.FAMFS,
    align: int = DEFAULT_ALIGN,
    warn: Callable[[str], None] = log.warning,
    coherent: bool | None = None,
) -> DaxDevice:
    """Create emulated device `name` under `root`; see `famfs-py dax create --help`.
    `warn` is told (one line) when new memory cannot be on 2 MiB pages. `coherent`: None
    takes the shared device's (with `share`), else not coherent."""
    if not NAME_RE.match(name):
        raise ValueError(f"device name {name!r} is not of the form daxX.Y")
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r} (one of {', '.join(MODES)})")
    if backing and share:
        raise ValueError("a backing file and a shared device exclude each other")
    trust.check_emulation_root(root)  # before making anything in it, and after
    _setup_root(root)
    trust.check_emulation_root(root)
    device = device_in_root(name, root)
    if device.exists():
        if memory_missing(device):
            raise FileExistsError(
                errno.EEXIST,
                f"{device.describe()} already exists, but its memory "
                f"{os.readlink(device.node) if device.node.is_symlink() else ''} is gone "
                f"(deleted, or cleared by a reboot): remove the device with "
                f"'famfs-py dax remove {device.path}' and create it again",
            )
        raise FileExistsError(errno.EEXIST, f"{device.describe()} already exists")

    source: Path | None = None
    if share:
        shared = resolve_device(share, root if "/" not in share else None)
        if not shared.emulated or not os.path.exists(shared.node):
            raise FileNotFoundError(errno.ENOENT, f"{share}: no emulated device to share")
        source = Path(os.path.realpath(shared.node))
        if coherent is None:
            coherent = shared.coherent
    elif backing:
        source = Path(backing).absolute()
        trust.check_directory(
            source.parent, "a directory for the backing file", open_to_all_ok=True
        )
        if not os.path.lexists(source):
            if size is None:
                raise ValueError(f"backing file {backing} does not exist and no size was given")
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(source, flags, 0o600)
            try:
                os.ftruncate(fd, size)
            finally:
                os.close(fd)
    if source is not None:
        trust.check_memory_file(source)
        actual = source.stat().st_size
        if size is None:
            size = actual
        elif actual < size:
            raise ValueError(f"backing file {source} holds {actual} bytes, less than {size}")
    if size is None or size <= 0:
        raise ValueError("no device size was given")
    if size % align:
        raise ValueError(f"size {size} is not a multiple of the alignment {align}")

    # the memory file is flocked until the device is complete: a sweep of orphaned memory
    # (famfs_py.dax.backing.reclaim) never takes memory that is being set up
    if source is None:
        where = memory_files.memory_dir()
        if where.warning:
            warn(where.warning)
        trust.check_directory(where.path, "a memory directory", open_to_all_ok=True)
        link = where.path / f"{memory_files.PREFIX}{secrets.token_hex(8)}"
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(link, flags, 0o600)
        try:  # private, as a devdax node is (crw------- root): give it to a group to share
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.ftruncate(fd, size)
        except BaseException:
            os.close(fd)
            link.unlink(missing_ok=True)
            raise
    else:
        link = _owned_link(source)
        os.link(source, link)
        fd = os.open(link, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        fcntl.flock(fd, fcntl.LOCK_EX)

    devdir = device.sysfs_dir
    try:
        memory_files.record_owner(link, device.node)
        devdir.mkdir(parents=True)
        region, instance = (int(x) for x in NAME_RE.match(name).groups())  # type: ignore[union-attr]
        start = FAKE_PHYS_BASE * (region + 1) + (instance << 40)
        _write(devdir / "size", f"{size}\n")
        _write(devdir / "align", f"{align}\n")
        _write(devdir / "resource", f"{start:#x}\n")
        _write(devdir / "numa_node", "0\n")
        _write(devdir / "target_node", f"{region + 1}\n")
        _write(devdir / "modalias", "dax:t0\n")
        _write(devdir / "dev", f"{FAKE_MAJOR}:{region * 16 + instance}\n")
        mapping = devdir / "mapping0"
        mapping.mkdir()
        _write(mapping / "start", f"{start:#x}\n")
        _write(mapping / "end", f"{start + size - 1:#x}\n")
        _write(mapping / "page_offset", "0x0\n")
        _write(devdir / "badblocks", "")
        _write(devdir / INJECTED, "")
        _write(devdir / COHERENT, "1\n" if coherent else "0\n")
        _bind(device, mode)
        os.symlink(link, device.node)
    except BaseException:
        shutil.rmtree(devdir, ignore_errors=True)
        device.node.unlink(missing_ok=True)
        memory_files.forget(link)
        raise
    finally:
        os.close(fd)
    log.info("created %s (%d bytes, %s, memory %s)", device.path, size, mode, link)
    return device


def describe(device: DaxDevice) -> dict[str, object]:
    """daxctl-style JSON object for one device."""
    out = device.as_daxctl()
    if device.emulated:
        out["path"] = device.path
        memory = os.path.realpath(device.node)
        out["memory"] = memory
        out["coherent"] = device.coherent
        if memory_missing(device):
            out["memory_missing"] = True
        else:
            out["huge_pages"] = memory_files.huge_pages(Path(memory).parent)
        info = holder.holder_info(device)
        if info is not None:
            out["holder"] = info.get("holder")
            out["holder_pid"] = info.get("pid")
        bad = device.badblocks()
        if bad:
            out["badblocks"] = [{"offset": o, "length": n} for o, n in bad]
    return out


def _pre_remove(device: DaxDevice) -> int | None:
    """Tell the holder (if any) the device is going away; never wait for permission."""
    if holder.holder_info(device) is None:
        return None
    rc = holder.notify_failure(
        device, 0, failure_delivery.WHOLE_DEVICE, failure_delivery.MF_MEM_PRE_REMOVE, locked=True
    )
    log.info("pre-remove of %s delivered to its holder: rc %d", device.path, rc)
    return rc


def reconfigure(device: DaxDevice, mode: str) -> int | None:
    """Change the device's mode (unbind + bind). Returns the pre-remove delivery's result
    when a holder was told, else None."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r} (one of {', '.join(MODES)})")
    with holder.device_lock(device, exclusive=True):
        if not device.exists():
            raise FileNotFoundError(errno.ENODEV, f"{device.describe()} does not exist")
        current = device.mode
        if mode == current:
            return None
        if mode == DaxMode.SYSTEM_RAM and current == DaxMode.FAMFS:
            raise PermissionError(
                errno.EPERM,
                f"{device.describe()} is in famfs mode: it must be in devdax mode first",
            )
        rc = _pre_remove(device)
        _bind(device, mode)
    log.info("reconfigured %s: %s -> %s", device.path, current, mode)
    return rc


def remove(device: DaxDevice) -> int | None:
    """Remove the device; a holder is told first (pre-remove) and then loses it."""
    with holder.device_lock(device, exclusive=True):
        if not device.exists():
            raise FileNotFoundError(errno.ENODEV, f"{device.describe()} does not exist")
        rc = _pre_remove(device)
        link = Path(os.readlink(device.node)) if device.node.is_symlink() else None
        device.node.unlink(missing_ok=True)
        shutil.rmtree(device.sysfs_dir, ignore_errors=True)
        if link is not None:
            memory_files.forget(link)
    log.info("removed %s", device.path)
    return rc


def inject_error(device: DaxDevice, offset: int, length: int, flags: int) -> int:
    """Record a memory error in `badblocks` and deliver it to the holder. Returns 0 or the
    kernel's errno: ENXIO (device dead), EOPNOTSUPP (no holder: still recorded), or the
    holder's answer."""
    if not device.exists():
        return errno.ENXIO
    size = device.size
    if offset < 0 or length <= 0 or offset + length > size:
        raise ValueError(f"range {offset:#x}+{length:#x} is outside the device ({size:#x} bytes)")
    flags |= failure_delivery.MF_SW_SIMULATED
    with holder.device_lock(device, exclusive=False):
        text = format_badblocks([(offset, length)])
        with open(device.sysfs_dir / "badblocks", "a") as f:
            f.write(text)
        with open(device.sysfs_dir / INJECTED, "a") as f:
            f.write(text)
    return holder.notify_failure(device, offset, length, flags)


def clear_errors(device: DaxDevice) -> int:
    """Forget injected errors (only while nobody holds the device). Returns how many."""
    with holder.device_lock(device, exclusive=True):
        if not device.exists():
            raise FileNotFoundError(errno.ENODEV, f"{device.describe()} does not exist")
        if holder.holder_info(device) is not None:
            raise OSError(
                errno.EBUSY,
                f"{device.describe()} is {holder.describe_holder(device)}: unmount it first",
            )
        injected = read_badblocks_file(device.sysfs_dir / INJECTED)
        remaining = [r for r in device.badblocks() if r not in injected]
        _write(device.sysfs_dir / "badblocks", format_badblocks(remaining))
        _write(device.sysfs_dir / INJECTED, "")
    return len(injected)
