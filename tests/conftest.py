"""Shared fixtures: reference images, emulation roots, and the real CLI in subprocesses."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
REF_DIR = REPO / "tests" / "data" / "famfs-ref"
BIN = Path(sys.executable).parent
MASTER_UUID = "6b1c9a3e-2f4d-4e8a-9b7c-1d2e3f405162"  # the reference images' system UUID
CLIENT_UUID = "0c1d2e3f-4a5b-4c6d-8e7f-901122334455"
GiB = 1 << 30
MiB = 1 << 20


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def out(self) -> str:
        return self.stdout + self.stderr


def run_cli(
    *args: str | os.PathLike[str],
    env: dict[str, str] | None = None,
    prog: str = "famfs-py",
    timeout: float = 60,
    input: str | None = None,
) -> Result:
    """Run an installed console script (famfs-py, mkfs.famfs-py) and capture its output."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        [str(BIN / prog), *map(str, args)],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def assert_no_traceback(result: Result) -> None:
    assert "Traceback" not in result.out, result.out
    assert "internal error" not in result.out, result.out


@dataclass
class Host:
    """One simulated host: an emulation root and a system UUID."""

    root: Path
    system_uuid: str

    @property
    def env(self) -> dict[str, str]:
        return {"FAMFS_PY_DAX_ROOT": str(self.root), "FAMFS_PY_SYSTEM_UUID": self.system_uuid}

    def cli(self, *args: str | os.PathLike[str], **kwargs: object) -> Result:
        env = {**self.env, **kwargs.pop("env", {})}  # type: ignore[dict-item]
        return run_cli(*args, env=env, **kwargs)  # type: ignore[arg-type]

    def ok(self, *args: str | os.PathLike[str], **kwargs: object) -> Result:
        result = self.cli(*args, **kwargs)
        assert result.returncode == 0, f"{args}: rc {result.returncode}\n{result.out}"
        assert_no_traceback(result)
        return result

    def node(self, name: str = "dax0.0") -> Path:
        return self.root / "dev" / name

    def memory(self, name: str = "dax0.0") -> Path:
        return Path(os.path.realpath(self.node(name)))


def _cleanup_root(root: Path) -> None:
    devices = root / "sys" / "bus" / "dax" / "devices"
    if devices.is_dir():
        for dev in devices.iterdir():
            node = root / "dev" / dev.name
            if node.is_symlink():
                Path(os.readlink(node)).unlink(missing_ok=True)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def host_factory(tmp_path: Path) -> Iterator:
    made: list[Host] = []

    def make(name: str = "host0", system_uuid: str = MASTER_UUID) -> Host:
        host = Host(tmp_path / name, system_uuid)
        made.append(host)
        return host

    yield make
    for host in made:
        _cleanup_root(host.root)


@pytest.fixture
def host(host_factory) -> Host:
    return host_factory()


@pytest.fixture
def fresh(host) -> Host:
    """A host with a 4 GiB emulated device holding a new famfs (this host is its master)."""
    host.ok("dax", "create", "dax0.0", "--size", "4g")
    host.ok("mkfs", "dax0.0")
    return host


@pytest.fixture
def pair(host_factory) -> tuple[Host, Host]:
    """A master host with a new famfs and a client host sharing its memory (not mounted)."""
    master = host_factory("master")
    master.ok("dax", "create", "dax0.0", "--size", "4g")
    master.ok("mkfs", "dax0.0")
    client = host_factory("client", CLIENT_UUID)
    client.ok("dax", "create", "dax0.0", "--share", master.node())
    return master, client


# -- reference images ------------------------------------------------------------------------
IMAGE_CACHE = Path("/dev/shm") / f"famfs-py-tests-{os.getpid()}"


def manifest(name: str) -> dict:
    return json.loads((REF_DIR / f"{name}.manifest.json").read_text())


def _decompress(name: str) -> Path:
    import zstandard

    IMAGE_CACHE.mkdir(exist_ok=True)
    out = IMAGE_CACHE / f"{name}.img"
    if out.exists():
        return out
    if shutil.which("zstd"):  # 5x faster than the Python decoder; writes sparse files
        tmp = out.with_suffix(".tmp")
        subprocess.run(
            ["zstd", "-q", "-d", "-f", str(REF_DIR / f"{name}.img.zst"), "-o", str(tmp)],
            check=True,
        )
        tmp.rename(out)
        return out
    digest = hashlib.sha256()
    tmp = out.with_suffix(".tmp")
    block = 1 << 20
    zero = bytes(block)
    with open(REF_DIR / f"{name}.img.zst", "rb") as src, open(tmp, "wb") as dst:
        reader = zstandard.ZstdDecompressor().stream_reader(src)
        pending = b""
        while True:
            data = reader.read(block)
            if not data:
                break
            pending += data
            while len(pending) >= block:
                chunk, pending = pending[:block], pending[block:]
                digest.update(chunk)
                if chunk == zero:
                    dst.seek(block, os.SEEK_CUR)  # keep the image sparse
                else:
                    dst.write(chunk)
        digest.update(pending)
        dst.write(pending)
        dst.truncate()
    expected = manifest(name)["image"]["sha256_decompressed"]
    assert digest.hexdigest() == expected, f"{name}: decompressed image checksum mismatch"
    tmp.rename(out)
    return out


@pytest.fixture(scope="session")
def ref_images() -> Iterator:
    """Decompressed reference images (read-only: copy one before writing to it)."""
    yield _decompress
    shutil.rmtree(IMAGE_CACHE, ignore_errors=True)


def copy_image(src: Path, dst: Path) -> Path:
    subprocess.run(["cp", "--sparse=always", str(src), str(dst)], check=True)
    return dst


@pytest.fixture
def ref_device(ref_images, host_factory, tmp_path):
    """Make an emulated device holding a private copy of reference image NAME."""

    def make(name: str, host: Host | None = None, dev: str = "dax0.0") -> Host:
        host = host or host_factory(f"ref{name}")
        image = copy_image(ref_images(name), Path("/dev/shm") / f"famfs-py-ref-{uuid.uuid4()}")
        try:
            host.ok("dax", "create", dev, "--backing", image)
        finally:
            image.unlink()  # the device keeps its own link to the memory
        return host

    return make


# -- mounts ----------------------------------------------------------------------------------
class Mounts:
    """Mounts made by one test; all are unmounted and their daemons gone at teardown."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.log_dir = tmp_path / "logs"
        self.made: list[tuple[Path, int | None]] = []

    def mount(
        self,
        host: Host,
        mountpoint: Path | str | None = None,
        *args: str,
        device: str = "dax0.0",
        expect_ok: bool = True,
    ) -> Path:
        mp = Path(mountpoint) if mountpoint else self.tmp_path / f"mnt-{host.root.name}"
        mp.mkdir(exist_ok=True)
        result = host.cli("mount", *args, device, mp, env={"FAMFS_PY_LOG_DIR": str(self.log_dir)})
        pid = None
        if "daemon pid" in result.stdout:
            pid = int(result.stdout.split("daemon pid ")[1].split(",")[0])
        self.made.append((mp, pid))
        if expect_ok:
            assert result.returncode == 0, result.out + self.logs()
            assert_no_traceback(result)
        self.last = result
        return mp

    def logs(self) -> str:
        if not self.log_dir.is_dir():
            return ""
        return "\n".join(p.read_text(errors="replace") for p in self.log_dir.glob("*.log"))

    def cleanup(self) -> None:
        for mp, pid in reversed(self.made):
            if _is_mounted(mp):
                subprocess.run(["fusermount3", "-u", "-z", str(mp)], capture_output=True)
            if pid is not None:
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass


def _is_mounted(mp: Path) -> bool:
    real = os.path.realpath(mp)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == real for line in f)


@pytest.fixture
def mounts(tmp_path: Path, host_factory) -> Iterator[Mounts]:
    tracker = Mounts(tmp_path)
    yield tracker
    tracker.cleanup()
    logs = tracker.logs()
    # like s3ql's checklogs: a daemon that logged a traceback failed, whatever the test saw
    assert "Traceback" not in logs or "FAMFS_PY_FAULT_INJECT" in logs, logs


# -- the reliability campaign's figures -------------------------------------------------------
def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    from reliability import figures

    if not figures.FIGURES:
        return
    terminalreporter.write_sep("-", "reliability figures")
    for line in figures.summary_lines():
        terminalreporter.write_line(line)
    written = figures.write(config.option.markexpr or "all")
    if written:
        terminalreporter.write_line(f"(merged into {written})")
