"""Device-dax attributes as sysfs shows them, under a sysfs root ("/sys" or an emulated one).

Reads and writes the kernel's file formats (see shared/spec/dax.md); knows nothing of holders.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# driver name -> the mode daxctl reports
DRIVER_MODES = {"device_dax": "devdax", "kmem": "system-ram", "fsdev_dax": "famfs"}
MODE_DRIVERS = {mode: driver for driver, mode in DRIVER_MODES.items()}
MODES = (*MODE_DRIVERS, "disabled")

SECTOR = 512  # badblocks are counted in 512-byte sectors


@dataclass(frozen=True)
class DaxSysfs:
    """The `bus/dax` part of one sysfs tree."""

    root: Path  # "/sys" for real devices; "<emulation root>/sys" for emulated ones

    @property
    def devices_dir(self) -> Path:
        return self.root / "bus" / "dax" / "devices"

    @property
    def drivers_dir(self) -> Path:
        return self.root / "bus" / "dax" / "drivers"

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
            return "disabled"
        return DRIVER_MODES.get(driver, driver)

    def read_badblocks(self, name: str) -> list[tuple[int, int]]:
        """Bad ranges as (offset, length) in bytes, from a kernel-format `badblocks` file."""
        return read_badblocks_file(self.device_dir(name) / "badblocks")


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
