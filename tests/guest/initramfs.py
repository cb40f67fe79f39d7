"""The guest's initramfs: a static busybox, the kernel modules the tier needs (with their
dependencies, decompressed for busybox's insmod) and the tier's own /init and stage 2.

Written as a newc cpio archive by this module (no cpio tool), gzip-compressed. The archive is
cached next to the kernel under a key of everything that goes into it, so a change to the
boot scripts or the module list rebuilds it.
"""

from __future__ import annotations

import gzip
import hashlib
import lzma
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

from guest.kernel import Kernel

BOOT_DIR = Path(__file__).resolve().parent / "boot"
# virtio/9p for the host's root and the exchange directory, overlay for a writable root,
# nfit/nd_pmem/dax_pmem/device_dax for /dev/dax0.0 on the emulated NVDIMM, kmem for the
# system-ram mode, fuse for famfs-py (builtin on 7.x)
MODULES = (
    "virtio_pci",
    "9pnet_virtio",
    "9p",
    "overlay",
    "nfit",
    "nd_pmem",
    "dax_pmem",
    "device_dax",
    "kmem",
    "fuse",
)
BUSYBOX = Path("/bin/busybox")


class InitramfsError(RuntimeError):
    pass


def modules_for(kernel: Kernel) -> list[Path]:
    """Every module file to load, dependencies first, each once (builtins are skipped)."""
    wanted = [*MODULES, *kernel.flavour.extra_modules]
    found: list[Path] = []
    for name in wanted:
        result = subprocess.run(
            [
                "modprobe",
                "-C",
                "/dev/null",  # not the host's modprobe.d (ndctl ships an install rule)
                "-d",
                str(kernel.modules_root),
                "-S",
                kernel.version,
                "--show-depends",
                name,
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise InitramfsError(f"module {name} of {kernel.version}: {result.stderr.strip()}")
        for line in result.stdout.splitlines():
            words = line.split()
            if words and words[0] == "insmod":
                path = Path(words[1])
                if path not in found:
                    found.append(path)
    return found


def cache_key(kernel: Kernel) -> str:
    digest = hashlib.sha256()
    digest.update(f"{kernel.version} {kernel.package_version}\n".encode())
    digest.update(" ".join([*MODULES, *kernel.flavour.extra_modules]).encode())
    for path in (Path(__file__), *sorted(BOOT_DIR.iterdir())):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    digest.update(str(BUSYBOX.resolve().stat().st_size).encode())
    return digest.hexdigest()[:16]


def build(kernel: Kernel, cache: Path) -> Path:
    """The initramfs for `kernel` (built into `cache` unless a current one is there)."""
    out = cache / f"initramfs-{kernel.version}-{cache_key(kernel)}.gz"
    if out.exists():
        return out
    if not BUSYBOX.exists():
        raise InitramfsError(f"{BUSYBOX} is missing: run ./scripts/setup-guest.sh")
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        tree = Path(tmp) / "tree"
        _populate(tree, kernel)
        partial = Path(tmp) / "initramfs.gz"
        with gzip.open(partial, "wb", compresslevel=1) as stream:
            write_newc(tree, stream)
        os.replace(partial, out)
    for old in cache.glob(f"initramfs-{kernel.version}-*.gz"):
        if old != out:
            old.unlink(missing_ok=True)
    return out


def _populate(tree: Path, kernel: Kernel) -> None:
    for sub in ("bin", "proc", "sys", "dev", "newroot"):
        (tree / sub).mkdir(parents=True)
    shutil.copy2(BUSYBOX.resolve(), tree / "bin" / "busybox")
    shutil.copy2(BOOT_DIR / "init.sh", tree / "init")
    shutil.copy2(BOOT_DIR / "stage2.sh", tree / "stage2")
    for script in ("init", "stage2"):
        (tree / script).chmod(0o755)
    modules = tree / "kmods" / "lib" / "modules" / kernel.version
    modules.mkdir(parents=True)
    order = []
    for source in modules_for(kernel):
        relative = source.relative_to(kernel.modules_dir)
        target = modules / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.suffix == ".xz":
            target = target.with_suffix("")  # busybox insmod takes plain .ko only
            target.write_bytes(lzma.decompress(source.read_bytes()))
        elif source.suffix == ".zst":
            target = target.with_suffix("")
            subprocess.run(["zstd", "-q", "-d", "-f", str(source), "-o", str(target)], check=True)
        else:
            shutil.copy2(source, target)
        order.append(str(target.relative_to(modules)))
    (tree / "kmods" / "order").write_text("".join(f"{line}\n" for line in order))
    for name in ("modules.order", "modules.builtin", "modules.builtin.modinfo"):
        if (kernel.modules_dir / name).exists():
            shutil.copy2(kernel.modules_dir / name, modules / name)
    # the guest's modprobe (udev, systemd's modprobe@) finds these modules in its root
    subprocess.run(
        ["depmod", "-b", str(tree / "kmods"), kernel.version], check=True, capture_output=True
    )


def write_newc(tree: Path, stream) -> None:
    """Write `tree` as a newc ("070701") cpio archive, owned by root, plus /dev/console."""
    inode = 1

    def entry(name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        nonlocal inode
        encoded = name.encode() + b"\0"
        fields = (inode, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
        header = b"070701" + b"".join(b"%08X" % value for value in fields)
        stream.write(header + encoded + b"\0" * (-(len(header) + len(encoded)) % 4))
        stream.write(data + b"\0" * (-len(data) % 4))
        inode += 1

    for path in sorted(tree.rglob("*")):
        name = str(path.relative_to(tree))
        info = path.lstat()
        if stat.S_ISDIR(info.st_mode):
            entry(name, stat.S_IFDIR | 0o755)
        elif stat.S_ISLNK(info.st_mode):
            entry(name, stat.S_IFLNK | 0o777, os.readlink(path).encode())
        else:
            entry(name, stat.S_IFREG | stat.S_IMODE(info.st_mode), path.read_bytes())
    entry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1))
    entry("TRAILER!!!", 0)
