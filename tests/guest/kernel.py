"""Debian kernel packages for the guest: fetched with apt, unpacked into the cache, never
installed on the host.

Each kernel flavour names Debian suites. apt runs with a private state directory of the
tier's cache (its own sources list, package lists and preferences), so the host's apt sources,
lists and pins are never touched: the newest kernel comes from sid without a sid entry ever
being visible to the host's apt (nothing on the host can be upgraded from it).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
MIRROR = "http://deb.debian.org/debian"
SECURITY_MIRROR = "http://deb.debian.org/debian-security"


@dataclass(frozen=True)
class Flavour:
    """A kernel the tier boots: Debian's linux-image-amd64 from these suites."""

    name: str
    sources: tuple[str, ...]  # one-line apt sources entries
    extra_modules: tuple[str, ...] = ()


FLAVOURS = {
    # Debian 12 (bookworm): 6.1, one package with /boot and /lib/modules
    "stable": Flavour(
        "stable",
        (
            f"deb [signed-by={KEYRING}] {MIRROR} bookworm main",
            f"deb [signed-by={KEYRING}] {SECURITY_MIRROR} bookworm-security main",
        ),
    ),
    # the newest Debian kernel (7.x today): split into linux-image/-binary/-modules packages,
    # files under /usr/lib/modules/KVER, modules compressed (.ko.xz); has the fsdev_dax driver
    "sid": Flavour(
        "sid",
        (f"deb [signed-by={KEYRING}] {MIRROR} sid main",),
        extra_modules=("fsdev_dax",),
    ),
}


@dataclass(frozen=True)
class Kernel:
    """An unpacked kernel package: its vmlinuz and its modules tree."""

    flavour: Flavour
    version: str  # the kernel release, as `uname -r` prints it
    package_version: str  # the Debian package version
    root: Path  # where the packages were unpacked

    @property
    def modules_root(self) -> Path:
        """The directory that holds lib/modules/KVER (depmod's and modprobe's -b/-d)."""
        usr = self.root / "usr"
        return usr if (usr / "lib" / "modules" / self.version).is_dir() else self.root

    @property
    def modules_dir(self) -> Path:
        return self.modules_root / "lib" / "modules" / self.version

    @property
    def vmlinuz(self) -> Path:
        inside = self.modules_dir / "vmlinuz"
        return inside if inside.exists() else self.root / "boot" / f"vmlinuz-{self.version}"

    @property
    def config(self) -> Path:
        inside = self.modules_dir / "config"
        return inside if inside.exists() else self.root / "boot" / f"config-{self.version}"


class KernelError(RuntimeError):
    """The kernel package could not be fetched or unpacked."""


class Apt:
    """apt-get/apt-cache with a private state directory (sources, lists, preferences)."""

    def __init__(self, state: Path, sources: tuple[str, ...]) -> None:
        self.state = state
        for sub in ("lists/partial", "cache/archives/partial", "sources.list.d", "preferences.d"):
            (state / sub).mkdir(parents=True, exist_ok=True)
        (state / "sources.list").write_text("".join(f"{line}\n" for line in sources))
        self.options = [
            f"-oDir::Etc::SourceList={state / 'sources.list'}",
            f"-oDir::Etc::SourceParts={state / 'sources.list.d'}",
            f"-oDir::Etc::Preferences={state / 'preferences'}",
            f"-oDir::Etc::PreferencesParts={state / 'preferences.d'}",
            f"-oDir::State::Lists={state / 'lists'}",
            f"-oDir::Cache={state / 'cache'}",
            "-oAcquire::Languages=none",
            "-oAPT::Get::List-Cleanup=false",
        ]

    def run(self, tool: str, *args: str, cwd: Path | None = None) -> str:
        command = [tool, *self.options, *args]
        result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
        if result.returncode != 0:
            raise KernelError(f"{' '.join([tool, *args])} failed: {result.stderr.strip()}")
        return result.stdout

    def update(self) -> None:
        self.run("apt-get", "-q", "update")

    def candidate(self, package: str) -> tuple[str, str] | None:
        """(package version, first dependency named linux-image-N...) of the candidate."""
        out = self.run("apt-cache", "show", "--no-all-versions", package)
        version = re.search(r"^Version: (\S+)", out, re.M)
        depends = re.search(r"^Depends: .*?(linux-image-\d[^\s,]*)", out, re.M)
        if not version or not depends:
            return None
        return version.group(1), depends.group(1)

    def parts(self, image: str, release: str) -> list[str]:
        """The packages the image package depends on that carry the same kernel release
        (7.x splits it into linux-base/-binary/-modules-KVER; 6.1 has none)."""
        out = self.run("apt-cache", "show", "--no-all-versions", image)
        depends = re.search(r"^Depends: (.*)$", out, re.M)
        line = depends.group(1) if depends else ""
        names = re.findall(r"(linux-[a-z]+-" + re.escape(release) + r")\b", line)
        return list(dict.fromkeys(names))


def fetch(flavour: Flavour, cache: Path, *, max_age_days: float = 7.0) -> Kernel:
    """The newest linux-image-amd64 of `flavour`, unpacked under `cache` (reused while the
    package lists are younger than `max_age_days`)."""
    for tool in ("apt-get", "apt-cache", "dpkg-deb", "depmod"):
        if shutil.which(tool) is None:
            raise KernelError(f"{tool} is missing: run ./scripts/setup-guest.sh")
    apt = Apt(cache / f"apt-{flavour.name}", flavour.sources)
    stamp = apt.state / "updated"
    fresh = stamp.exists() and time.time() - stamp.stat().st_mtime < max_age_days * 86400
    if not fresh:
        apt.update()
        stamp.touch()
    found = apt.candidate("linux-image-amd64")
    if found is None:
        raise KernelError(f"no linux-image-amd64 with a linux-image-N dependency in {flavour}")
    package_version, image = found
    release = image.removeprefix("linux-image-")
    root = cache / f"kernel-{release}-{package_version}"
    if not (root / ".unpacked").exists():
        packages = [image, *apt.parts(image, release)]
        debs = cache / "debs"
        debs.mkdir(exist_ok=True)
        apt.run("apt-get", "-q", "download", *packages, cwd=debs)
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir()
        for package in packages:
            deb = _newest(debs.glob(f"{package}_*.deb"))
            subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        kernel = Kernel(flavour, release, package_version, root)
        subprocess.run(
            ["depmod", "-b", str(kernel.modules_root), release], check=True, capture_output=True
        )
        (root / ".unpacked").touch()
    kernel = Kernel(flavour, release, package_version, root)
    if not kernel.vmlinuz.exists():
        raise KernelError(f"{kernel.vmlinuz} is missing from the unpacked packages")
    return kernel


def _newest(paths) -> Path:
    found = sorted(paths, key=lambda p: p.stat().st_mtime)
    if not found:
        raise KernelError("apt-get download left no .deb")
    return found[-1]


def config_value(kernel: Kernel, option: str) -> str | None:
    """CONFIG_<option>'s value in the kernel's config ("y", "m", ...), None when unset."""
    match = re.search(rf"^CONFIG_{option}=(.*)$", kernel.config.read_text(), re.M)
    return match.group(1) if match else None
