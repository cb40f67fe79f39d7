"""mkfs: write a famfs superblock and an empty log, byte-compatible with upstream mkfs.famfs.

The device is claimed for the whole operation, and every refusal happens before a byte is
written. CPU caches (unless the device is coherent, famfs_py.dax.cache): the old superblock
is invalidated before it is read; the new log is flushed, then the superblock, as upstream
does, so that a host mounting next reads them from memory.
"""

from __future__ import annotations

import errno
import uuid
from dataclasses import dataclass

from famfs_py import omf
from famfs_py.dax import cache, holder
from famfs_py.dax.device import DaxDevice
from famfs_py.dax.memory import DeviceMemory, MemoryFault
from famfs_py.errors import FamfsError
from famfs_py.fs.log import read_superblock


@dataclass(frozen=True)
class MkfsResult:
    device: str
    dev_size: int
    log_len: int
    log_slots: int
    free_bytes: int
    killed: bool
    superblock: omf.Superblock | None
    had_fs: bool = True  # with killed: False if there was no famfs to kill


def _fail(message: str, code: int | None = None, needs: str | None = None) -> FamfsError:
    return FamfsError(message, code, needs=needs)


def check_log_len(log_len: int, dev_size: int) -> None:
    if not omf.valid_log_len(log_len):
        raise _fail(
            f"log length {log_len} is not a power of two of at least 8 MiB",
            errno.EINVAL,
            needs="log_len",
        )
    if omf.LOG_OFFSET + log_len + omf.ALLOC_UNIT > dev_size:
        raise _fail(f"a log of {log_len} bytes does not fit on a {dev_size}-byte device")


def mkfs(
    device: DaxDevice,
    *,
    system_uuid: uuid.UUID,
    force: bool = False,
    kill: bool = False,
    log_len: int = omf.DEFAULT_LOG_LEN,
    alloc_unit: int = omf.ALLOC_UNIT,
    allow_small: bool = False,
    allow_devdax: bool = False,
    fs_uuid: uuid.UUID | None = None,
    dev_uuid: uuid.UUID | None = None,
) -> MkfsResult:
    """Make (or with `kill`, unmake) a famfs on `device`, with 2 MiB allocation units or
    (`alloc_unit=omf.SMALL_ALLOC_UNIT`, mkfs --4k) 4 KiB ones. Raises FamfsError on refusal."""
    if alloc_unit not in omf.ALLOC_UNITS:
        raise _fail(f"allocation unit {alloc_unit:#x}: famfs knows 2 MiB and 4 KiB", errno.EINVAL)
    try:
        claim = holder.claim(device, "mkfs.famfs-py", allow_devdax=allow_devdax)
    except OSError as exc:
        raise _fail(_claim_message(device, exc), exc.errno) from None
    with claim:
        dev_size = device.size
        if not kill:
            if dev_size < omf.MIN_DEVICE_SIZE and not (allow_small and device.emulated):
                raise _fail(
                    f"{device.path} holds {dev_size} bytes; famfs needs at least 4 GiB",
                    errno.EINVAL,
                )
            check_log_len(log_len, dev_size)
        if dev_size < omf.SUPERBLOCK_STRUCT_SIZE:
            raise _fail(f"{device.path} holds {dev_size} bytes: too small for famfs")
        coherency = cache.for_device(device)
        with DeviceMemory.of_device(device, writable=True) as mem:
            try:
                coherency.invalidate(mem.view(0, omf.SUPERBLOCK_STRUCT_SIZE))
                old = read_superblock(mem)
                has_fs = old.magic == omf.SUPER_MAGIC
                if kill:
                    if not force:
                        raise _fail(
                            f"{device.path}: killing the filesystem must be forced", needs="force"
                        )
                    if not has_fs:  # killed already, or never made: nothing to do (as upstream)
                        return MkfsResult(device.path, dev_size, 0, 0, 0, True, None, False)
                    mem.write(0, bytes(8))  # zero the magic only
                    coherency.flush(mem.view(0, 8))
                    return MkfsResult(device.path, dev_size, old.log_len, 0, 0, True, None)
                if not has_fs and not force and _damaged_famfs(mem, old):
                    raise _fail(
                        f"{device.path} holds a damaged famfs superblock (magic {old.magic:#x}); "
                        "run fsck",
                        errno.EEXIST,
                        needs="force",
                    )
                if has_fs and not force:
                    if old.system_uuid != system_uuid and not old.problems():
                        raise _fail(
                            f"{device.path} holds a famfs filesystem that belongs to another host "
                            f"(system UUID {old.system_uuid})",
                            errno.EEXIST,
                            needs="force",
                        )
                    raise _fail(
                        f"{device.path} already holds a famfs filesystem (version {old.version})",
                        errno.EEXIST,
                        needs="force",
                    )
                sb = omf.Superblock.new(
                    dev_size=dev_size,
                    dev_name=f"/dev/{device.name}",  # what the host calls it (emulated too)
                    system_uuid=system_uuid,
                    log_len=log_len,
                    alloc_unit=alloc_unit,
                    fs_uuid=fs_uuid,
                    dev_uuid=dev_uuid,
                )
                header = omf.LogHeader.new(log_len)
                # log first, superblock last: a crash mid-mkfs leaves no valid superblock
                mem.write(sb.log_offset, header.pack().ljust(log_len, b"\0"))
                coherency.flush(mem.view(sb.log_offset, log_len))
                mem.write(0, sb.pack().ljust(omf.SUPERBLOCK_SIZE, b"\0"))
                coherency.flush(mem.view(0, omf.SUPERBLOCK_SIZE))
            except (MemoryFault, cache.CacheFault) as exc:
                raise _fail(f"{device.path} has a memory error ({exc}); nothing was done") from None
    reserved = omf.LOG_OFFSET + log_len
    return MkfsResult(
        device.path,
        dev_size,
        log_len,
        header.slots,
        (dev_size // alloc_unit) * alloc_unit - reserved,
        False,
        sb,
    )


def _damaged_famfs(mem: DeviceMemory, old: omf.Superblock) -> bool:
    """A superblock whose magic is damaged but whose other fields still say famfs (the
    version and log offset mkfs writes), or that sits in front of a famfs log header. A zero
    magic is a killed filesystem (mkfs -k) or none at all."""
    if old.magic == 0:
        return False
    if old.version == omf.CURRENT_VERSION and old.log_offset == omf.LOG_OFFSET:
        return True
    if mem.size < omf.LOG_OFFSET + omf.LOG_HEADER_SIZE:
        return False
    return (
        omf.LogHeader.unpack(mem.read(omf.LOG_OFFSET, omf.LOG_HEADER_SIZE)).magic == omf.LOG_MAGIC
    )


def _claim_message(device: DaxDevice, exc: OSError) -> str:
    if exc.errno == errno.EBUSY:
        return f"{exc.strerror}; unmount it before running mkfs"
    return exc.strerror or str(exc)
