"""Which device modes famfs-py can map and hold, and the way out of the others.

A device is *dead* to a filesystem when it is missing, disabled, onlined as system RAM or
has lost its memory (`dead_reason`); a live device must be in a mode famfs-py can map and
hold (`check_mode`: famfs for an emulated device, devdax for a real one). Every refusal says
how to put the device right (`mode_hint`).
"""

from __future__ import annotations

import errno
import os

from famfs_py.dax.device import DaxDevice
from famfs_py.dax.sysfs import DaxDriver, DaxMode


def mode_hint(device: DaxDevice, mode: str) -> str:
    """How to put `device` in `mode` (devdax for a real device, famfs for an emulated one)."""
    if device.emulated:
        return (
            f"famfs-py dax reconfigure {device.name} --mode {mode} --root {device.emulation_root}"
        )
    return f"daxctl reconfigure-device --mode={mode} {device.name}"


def dead_reason(device: DaxDevice) -> str | None:
    """Why the device cannot be used by a filesystem at all (None: it is alive)."""
    if not device.exists():
        return f"{device.describe()} does not exist"
    usable = DaxMode.FAMFS if device.emulated else DaxMode.DEVDAX
    driver = device.driver
    if driver is None:
        enable = (
            mode_hint(device, usable) if device.emulated else f"daxctl enable-device {device.name}"
        )
        return f"{device.describe()} is disabled (no driver bound); enable it: {enable}"
    if driver == DaxDriver.KMEM:
        return (
            f"{device.describe()} is in system-ram mode (onlined as memory); give it back "
            f"(offline its memory, then {mode_hint(device, usable)})"
        )
    if device.emulated and not os.path.exists(device.node):
        if not device.node.is_symlink():
            return f"{device.describe()} has no memory node {device.node}"
        return (
            f"the memory of {device.describe()}, {os.readlink(device.node)}, is gone (deleted, "
            f"or cleared by a reboot): remove the device with 'famfs-py dax remove "
            f"{device.path}' and create it again"
        )
    return None


def check_mode(device: DaxDevice, *, allow_devdax: bool) -> None:
    """OSError(EOPNOTSUPP) with the way out, unless famfs-py can map and hold the device in
    the mode it is in: famfs for an emulated device; devdax (with `allow_devdax`) for a real
    one, whose famfs mode (fsdev_dax) the kernel does not let userspace map."""
    driver = device.driver
    if device.emulated:
        if driver == DaxDriver.FSDEV_DAX:
            return
        hint = mode_hint(device, DaxMode.FAMFS)
        raise OSError(
            errno.EOPNOTSUPP, f"{device.describe()} is in {device.mode} mode, not famfs ({hint})"
        )
    if driver == DaxDriver.DEVICE_DAX:
        if allow_devdax:
            return
        raise OSError(
            errno.EOPNOTSUPP,
            f"{device.describe()} is in devdax mode: give --devdax to use it (the kernel does "
            "not stop other processes from mapping a devdax device while famfs-py holds it)",
        )
    if driver == DaxDriver.FSDEV_DAX:
        raise OSError(
            errno.EOPNOTSUPP,
            f"{device.describe()} is in famfs mode (fsdev_dax), whose memory the kernel does "
            f"not let userspace map; switch it to devdax mode and give --devdax: as root, "
            f"`echo {device.name} > /sys/bus/dax/drivers/fsdev_dax/unbind; "
            f"echo {device.name} > /sys/bus/dax/drivers/device_dax/bind` (or "
            f"`{mode_hint(device, DaxMode.DEVDAX)}` with a daxctl that knows famfs mode: "
            f"Debian 12's daxctl 76 does not)",
        )
    raise OSError(
        errno.EOPNOTSUPP,
        f"{device.describe()} is bound to {driver} ({device.mode} mode), which famfs-py "
        f"cannot use; switch it to devdax mode ({mode_hint(device, DaxMode.DEVDAX)})",
    )
