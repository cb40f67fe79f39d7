"""Opening a famfs on a claimed device: map its memory, check the superblock and the log
header, and make the `Log` that replays it (what `Famfs.open` does between the claim and
the first replay). Every refusal is an FsError that names the device and the way out.
"""

from __future__ import annotations

import errno
import uuid
from dataclasses import dataclass

from famfs_py import omf
from famfs_py.dax import cache
from famfs_py.dax.device import DaxDevice
from famfs_py.dax.memory import DeviceMemory, MemoryFault
from famfs_py.errors import FsError
from famfs_py.fs.identity import Role
from famfs_py.fs.log import Log, read_log_header, read_superblock


@dataclass(frozen=True)
class Opened:
    """A checked filesystem in mapped memory, its log not yet replayed."""

    sb: omf.Superblock
    role: Role
    writable: bool
    mem: DeviceMemory
    log: Log


def map_memory(device: DaxDevice, *, writable: bool, length: int | None = None) -> DeviceMemory:
    try:
        return DeviceMemory.of_device(device, writable=writable, length=length)
    except OSError as exc:
        raise FsError(
            f"{device.path}: cannot map its memory: {exc.strerror}", exc.errno or errno.EIO
        ) from None


def checked_superblock(device: DaxDevice, coherency: cache.Policy) -> omf.Superblock:
    """The device's superblock, read from memory (not a stale CPU cache line) and checked."""
    size = device.size
    if size < omf.SUPERBLOCK_STRUCT_SIZE:
        raise FsError(f"{device.path} holds {size} bytes: no famfs superblock fits", errno.EINVAL)
    probe = map_memory(device, writable=False, length=omf.SUPERBLOCK_STRUCT_SIZE)
    try:
        coherency.invalidate(probe.view(0, omf.SUPERBLOCK_STRUCT_SIZE))
        sb = read_superblock(probe)
    except (MemoryFault, cache.CacheFault) as exc:
        raise FsError(f"{device.path}: the superblock cannot be read ({exc})", errno.EIO) from None
    finally:
        probe.close()
    problems = sb.problems()
    if problems:
        raise FsError(
            f"{device.path} holds no valid famfs superblock ({problems[0]}); "
            "run mkfs.famfs-py to make one",
            errno.EINVAL,
        )
    if sb.dev_size > size or sb.dev_size < sb.log_offset + sb.log_len:  # as fsck checks
        raise FsError(
            f"{device.path}: the superblock says the device holds {sb.dev_size} bytes "
            f"but it holds {size}; run fsck",
            errno.EINVAL,
        )
    return sb


def open_filesystem(
    device: DaxDevice, this_host: uuid.UUID, coherency: cache.Policy, *, writable_client: bool
) -> Opened:
    """Map the device (writable for the master, or a client that asks), check the superblock
    and the log header; the log is ready to replay."""
    sb = checked_superblock(device, coherency)
    role = Role.of(this_host, sb.system_uuid)
    writable = role == Role.MASTER or writable_client
    mem = map_memory(device, writable=writable)
    try:
        coherency.invalidate(mem.view(sb.log_offset, omf.LOG_HEADER_SIZE))
        header = read_log_header(mem, sb)
    except (MemoryFault, cache.CacheFault) as exc:
        mem.close()
        raise FsError(f"{device.path}: the log header cannot be read ({exc})", errno.EIO) from None
    problems = header.problems(sb.log_len)
    if problems:
        mem.close()
        raise FsError(f"{device.path}: bad log header ({problems[0]}); run fsck", errno.EINVAL)
    return Opened(sb, role, writable, mem, Log(mem, sb, header, coherency))
