"""Device-dax attributes as sysfs shows them, under a sysfs root ("/sys" or an emulated one).

Reads and writes the kernel's file formats (see shared/spec/dax.md); knows nothing of holders.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path


class DaxDriver(StrEnum):
    """The kernel drivers a dax device can be bound to (sysfs `driver` link names)."""

    DEVICE_DAX = "device_dax"
    KMEM = "kmem"
    FSDEV_DAX = "fsdev_dax"


class DaxMode(StrEnum):
    """A dax device's mode as daxctl reports it: which driver holds it (or none)."""

    DEVDAX = "devdax"
    SYSTEM_RAM = "system-ram"
    FAMFS = "famfs"
    DISABLED = "disabled"


# driver -> the mode daxctl reports
DRIVER_MODES: dict[str, DaxMode] = {
    DaxDriver.DEVICE_DAX: DaxMode.DEVDAX,
    DaxDriver.KMEM: DaxMode.SYSTEM_RAM,
    DaxDriver.FSDEV_DAX: DaxMode.FAMFS,
}
MODE_DRIVERS: dict[str, DaxDriver] = {mode: DaxDriver(d) for d, mode in DRIVER_MODES.items()}
MODES = tuple(DaxMode)

SECTOR = 512  # badblocks are counted in 512-byte sectors


@dataclass(frozen=True)
class DaxSysfs:
    """The `bus/dax` part of one sysfs tree."""

    root: Path  # "/sys" for real devices; "<emulation root>/sys" for emulated ones

    @property
    def devices_dir(self) -> Path:
        return self.root / "bus" / "dax" / "devices"

    def device_dir(self, name: str) -> Path:
        return self.devices_dir / name

    def exists(self, name: str) -> bool:
        return self.device_dir(name).is_dir()

    def names(self) -> list[str]:
        try:
            found = [p.name for p in self.devices_dir.iterdir() if p.name.startswith("dax")]
        except FileNotFoundError:
            return []
        return sorted(found, key=_name_key)

    def read(self, name: str, attr: str) -> str:
        return (self.device_dir(name) / attr).read_text().strip()

    def read_int(self, name: str, attr: str) -> int:
        return int(self.read(name, attr), 0)

    def driver(self, name: str) -> str | None:
        """The bound driver's name, or None when the device is disabled (no `driver` link)."""
        try:
            return Path(os.readlink(self.device_dir(name) / "driver")).name
        except (FileNotFoundError, OSError):
            return None

    def mode(self, name: str) -> str:
        driver = self.driver(name)
        if driver is None:
            return DaxMode.DISABLED
        return DRIVER_MODES.get(driver, driver)

    def read_badblocks(self, name: str) -> list[tuple[int, int]]:
        """Bad ranges as (device offset, length) in bytes. Emulated devices keep a
        `badblocks` file of their own; a real device's bad blocks are its nd region's
        (`.../regionN/badblocks`, sectors from the region's start), shifted by where the
        device starts in the region."""
        own = self.device_dir(name) / "badblocks"
        if own.exists():
            return read_badblocks_file(own)
        return self._region_badblocks(name)

    def _region_badblocks(self, name: str) -> list[tuple[int, int]]:
        try:
            real = self.device_dir(name).resolve()
            start = int(self.read(name, "resource"), 0)
            size = self.read_int(name, "size")
        except (OSError, ValueError):
            return []
        for parent in real.parents:
            if parent.name.startswith("region") and (parent / "badblocks").exists():
                try:
                    region_start = int((parent / "resource").read_text().strip(), 0)
                except (OSError, ValueError):
                    return []
                shift = start - region_start
                out = []
                for offset, length in read_badblocks_file(parent / "badblocks"):
                    lo, hi = max(offset - shift, 0), min(offset + length - shift, size)
                    if lo < hi:
                        out.append((lo, hi - lo))
                return out
        return []


def _name_key(name: str) -> tuple[int, int]:
    try:
        region, instance = name[3:].split(".")
        return int(region), int(instance)
    except ValueError:
        return (1 << 30, 0)


def read_badblocks_file(path: Path) -> list[tuple[int, int]]:
    try:
        text = path.read_text()
    except (FileNotFoundError, NotADirectoryError):
        return []
    ranges = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit() and parts[1].isdigit():
            ranges.append((int(parts[0]) * SECTOR, int(parts[1]) * SECTOR))
    return ranges


def format_badblocks(ranges: list[tuple[int, int]]) -> str:
    """Kernel badblocks text for byte ranges (rounded out to whole sectors)."""
    lines = []
    for offset, length in ranges:
        first = offset // SECTOR
        last = (offset + length + SECTOR - 1) // SECTOR
        lines.append(f"{first} {last - first}\n")
    return "".join(lines)
