"""7.x kernels: a device bound to fsdev_dax (mode famfs, the seed's claim target) cannot be
mapped from userspace (mmap gives ENODEV), so famfs-py must refuse it with one clear line
that says which mode to switch to and how. Then the device goes back to devdax and mounts
with every byte intact (the refusals wrote nothing).

Runs after one_host, on its filesystem.
"""

from __future__ import annotations

import contextlib
import errno
import json
import mmap
import os
import re
from pathlib import Path

from guest.inguest.checks import (
    DEVICE,
    Scenario,
    Skip,
    State,
    cli,
    is_mounted,
    one_line_error,
    sh,
    sha256,
)

SCENARIO = Scenario("fsdev")
check = SCENARIO.check
DRIVERS = Path("/sys/bus/dax/drivers")
DEVICE_DIR = Path("/sys/bus/dax/devices/dax0.0")


def driver() -> str | None:
    try:
        return Path(os.readlink(DEVICE_DIR / "driver")).name
    except FileNotFoundError:
        return None


def write(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


@check("bind_fsdev_dax")
def bind_fsdev_dax(state: State) -> str:
    if not (DRIVERS / "fsdev_dax").is_dir():
        raise Skip("this kernel has no fsdev_dax driver")
    if is_mounted(state.mountpoint):
        cli("umount", state.mountpoint)
    # a plain `bind` write is refused; new_id makes fsdev_dax take the device
    write(DRIVERS / "device_dax" / "unbind", "dax0.0")
    write(DRIVERS / "fsdev_dax" / "new_id", "dax0.0")
    assert driver() == "fsdev_dax", f"driver {driver()}"
    return "dax0.0 bound to fsdev_dax"


@check("mmap_enodev", needs="bind_fsdev_dax")
def mmap_enodev(state: State) -> str:
    fd = os.open(DEVICE, os.O_RDWR)
    try:
        mmap.mmap(fd, 2 << 20, mmap.MAP_SHARED).close()
    except OSError as exc:
        assert exc.errno == errno.ENODEV, exc
        return "mmap of /dev/dax0.0 in famfs mode: ENODEV"
    finally:
        os.close(fd)
    raise AssertionError("mmap of a device in famfs mode worked")


@check("dax_list_mode", needs="bind_fsdev_dax")
def dax_list_mode(state: State) -> str:
    ours = json.loads(cli("dax", "list", "--json").stdout)
    assert ours[0]["mode"] == "famfs", ours
    return str(ours[0])


def _refusal(result) -> str:
    line = one_line_error(result, "dax0.0")
    assert "famfs" in line and "devdax" in line, f"does not name both modes: {line}"
    assert any(how in line for how in ("daxctl", "device_dax", "bind")), f"no how: {line}"
    return line


@check("mkfs_refused", needs="bind_fsdev_dax")
def mkfs_refused(state: State) -> str:
    with_flag = _refusal(cli("-f", "--devdax", DEVICE, prog="mkfs.famfs-py", ok=False))
    _refusal(cli("-f", DEVICE, prog="mkfs.famfs-py", ok=False))
    return with_flag


refusal: list[str] = []


@check("mount_refused", needs="bind_fsdev_dax")
def mount_refused(state: State) -> str:
    line = _refusal(cli("mount", "--devdax", DEVICE, state.mountpoint, ok=False))
    assert not is_mounted(state.mountpoint)
    refusal.append(line)
    return line


@check("advice_works", needs="mount_refused")
def advice_works(state: State) -> str:
    """The refusal's way out, run as written (the sysfs route: Debian 12's daxctl 76 takes a
    device in famfs mode for devdax and leaves it as it is), puts the device in devdax mode."""
    found = re.search(r"`(echo [^`]+)`", refusal[0])
    assert found, f"no sysfs commands in {refusal[0]!r}"
    result = sh(found.group(1), ok=False)
    assert driver() == "device_dax", (
        f"{found.group(1)!r}: exit {result.returncode}, the driver is {driver()}: "
        f"{result.out.strip()[:300]}"
    )
    return f"{found.group(1)}: device_dax"


@check("back_to_devdax", needs="bind_fsdev_dax")
def back_to_devdax(state: State) -> str:
    if driver() == "fsdev_dax":
        write(DRIVERS / "fsdev_dax" / "unbind", "dax0.0")
    with contextlib.suppress(OSError):  # the id new_id gave fsdev_dax, if still there
        write(DRIVERS / "fsdev_dax" / "remove_id", "dax0.0")
    if driver() != "device_dax":
        write(DRIVERS / "device_dax" / "bind", "dax0.0")
    assert driver() == "device_dax", f"driver {driver()}"
    cli("mount", "--devdax", DEVICE, state.mountpoint)
    bad = [n for n, d in state.expected.items() if sha256(state.mountpoint / n) != d]
    assert not bad, f"changed: {bad}"
    return f"devdax again, {len(state.expected)} files byte-exact"
