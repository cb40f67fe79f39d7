"""DaxDevice: find a device by name or path (real under /sys, or emulated) and read its state.

A name is `daxX.Y`; a path is `/dev/daxX.Y` or `<emulation root>/dev/daxX.Y`. An emulation
root (`--root`, or FAMFS_PY_DAX_ROOT) makes names and `/dev/daxX.Y` paths refer to it.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from famfs_py.dax.sysfs import DaxSysfs

ROOT_ENV = "FAMFS_PY_DAX_ROOT"
DEFAULT_EMULATION_ROOT = Path("/run/famfs-py/emul")
REAL_SYSFS = Path("/sys")
REAL_DEV = Path("/dev")
REAL_HOLDER_STATE = Path("/run/famfs-py/holders")
NAME_RE = re.compile(r"^dax(\d+)\.(\d+)$")


def emulation_root(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The emulation root chosen by an option or the environment (None: not chosen)."""
    if explicit:
        return Path(explicit).absolute()
    env = os.environ.get(ROOT_ENV)
    return Path(env).absolute() if env else None


def is_emulation_root(path: Path) -> bool:
    return (path / "sys" / "bus" / "dax").is_dir()


@dataclass(frozen=True)
class DaxDevice:
    """One dax device as a host sees it: its sysfs entry, its node and its holder state."""

    name: str
    sysfs: DaxSysfs
    node: Path
    emulation_root: Path | None  # None for a real device

    @property
    def emulated(self) -> bool:
        return self.emulation_root is not None

    @property
    def path(self) -> str:
        """The path users know the device by."""
        return str(self.node)

    @property
    def sysfs_dir(self) -> Path:
        return self.sysfs.device_dir(self.name)

    @property
    def holder_dir(self) -> Path:
        """Where the claim lock and holder diagnostics live."""
        if self.emulation_root is not None:
            return self.sysfs_dir
        return REAL_HOLDER_STATE / self.name

    @property
    def state_lock_path(self) -> Path:
        """The device's read/write lock (the alive guard shares it, reconfigure takes it)."""
        if self.emulation_root is not None:
            return self.emulation_root / "run" / f"{self.name}.lock"
        return REAL_HOLDER_STATE / f"{self.name}.lock"

    def exists(self) -> bool:
        return self.sysfs.exists(self.name)

    @property
    def size(self) -> int:
        return self.sysfs.read_int(self.name, "size")

    @property
    def align(self) -> int:
        """What every mapping's offset, length and address must be a multiple of (devices of
        kernels without an `align` attribute map in 2 MiB units)."""
        try:
            return self.sysfs.read_int(self.name, "align")
        except FileNotFoundError:
            return 2 << 20

    @property
    def driver(self) -> str | None:
        return self.sysfs.driver(self.name)

    @property
    def mode(self) -> str:
        return self.sysfs.mode(self.name)

    @property
    def coherent(self) -> bool:
        """Whether this host's CPU caches are known to be coherent with the other hosts'
        over this memory. An emulated device says so (`dax create --coherent`); a real one
        cannot tell (a fabric pool shared by hosts is not, on most systems today)."""
        if self.emulation_root is None:
            return False
        try:
            return (self.sysfs_dir / "coherent").read_text().strip() == "1"
        except OSError:
            return False

    def badblocks(self) -> list[tuple[int, int]]:
        return self.sysfs.read_badblocks(self.name)

    def describe(self) -> str:
        kind = "emulated " if self.emulated else ""
        return f"{kind}device {self.path}"

    def as_daxctl(self) -> dict[str, object]:
        """The device as `daxctl list` shows it (attributes the kernel lacks are left out)."""
        out: dict[str, object] = {"chardev": self.name}
        for key in ("size", "target_node", "align", "numa_node"):
            try:
                out[key] = self.sysfs.read_int(self.name, key)
            except (OSError, ValueError):
                pass
        out["mode"] = self.mode
        if self.driver is None:
            out["state"] = "disabled"
        return out


def device_in_root(name: str, root: Path) -> DaxDevice:
    return DaxDevice(name, DaxSysfs(root / "sys"), root / "dev" / name, root)


def real_device(name: str) -> DaxDevice:
    return DaxDevice(name, DaxSysfs(REAL_SYSFS), REAL_DEV / name, None)


def resolve_device(spec: str, root: str | os.PathLike[str] | None = None) -> DaxDevice:
    """Find the device `spec` names. Raises OSError(ENODEV) naming what was looked for.

    The device need not be alive: callers check that (the holder's alive guard does).
    """
    chosen_root = emulation_root(root)
    path = Path(spec)
    match = NAME_RE.match(path.name)
    if match is None:
        raise OSError(
            errno.ENODEV,
            f"{spec} is not a dax device (expected daxX.Y, /dev/daxX.Y or an emulated node)",
        )
    name = path.name
    if len(path.parts) > 1:
        parent = path.absolute().parent
        if parent != REAL_DEV and parent.name == "dev" and is_emulation_root(parent.parent):
            return device_in_root(name, parent.parent)
        if parent != REAL_DEV:
            raise OSError(errno.ENODEV, f"{spec} is not a dax device node")
    if chosen_root is not None:
        return device_in_root(name, chosen_root)
    real = real_device(name)
    if real.exists() or _is_char_device(real.node):
        return real
    if is_emulation_root(DEFAULT_EMULATION_ROOT):
        emulated = device_in_root(name, DEFAULT_EMULATION_ROOT)
        if emulated.exists():
            return emulated
    return real


def _is_char_device(path: Path) -> bool:
    try:
        return stat.S_ISCHR(path.stat().st_mode)
    except OSError:
        return False


def list_devices(root: str | os.PathLike[str] | None = None) -> list[DaxDevice]:
    """Every device of the chosen emulation root, or the real ones when none is chosen."""
    chosen_root = emulation_root(root)
    if chosen_root is not None:
        sysfs = DaxSysfs(chosen_root / "sys")
        return [device_in_root(n, chosen_root) for n in sysfs.names()]
    return [real_device(n) for n in DaxSysfs(REAL_SYSFS).names()]
