"""Shared fixtures: emulation roots (hosts), reference-image devices and mounts, all cleaned
up after each test. Helpers that tests call themselves live in helpers.py.

A run's memory, mounts and image cache are its own and are cleaned up at its end, also
after Ctrl-C or SIGTERM (tests/run_isolation.py); `pytest_report_header` names the famfs-py
under test (the checkout, or an installed copy: FAMFS_PY_TEST_INSTALLED=1 insists on one).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import run_isolation
from helpers import (
    BIN,
    CLIENT_UUID,
    MASTER_UUID,
    REPO,
    Host,
    assert_no_traceback,
    copy_image,
    decompress_image,
    image_cache,
    is_mounted,
    memory_dir,
)


def _cleanup_root(root: Path) -> None:
    devices = root / "sys" / "bus" / "dax" / "devices"
    if devices.is_dir():
        for dev in devices.iterdir():
            node = root / "dev" / dev.name
            if node.is_symlink():
                Path(os.readlink(node)).unlink(missing_ok=True)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def master_famfs(tmp_path: Path) -> Iterator:
    """The model tier's filesystem: a 4 GiB emulated device, made and opened in this process
    as the master (no daemon, no mount)."""
    from famfs_py.dax import emulated
    from famfs_py.fs.filesystem import Famfs
    from famfs_py.fs.mkfs import mkfs

    device = emulated.create("dax0.0", 4 << 30, tmp_path)
    mkfs(device, system_uuid=uuid.UUID(MASTER_UUID))
    famfs = Famfs.open(device, this_host=uuid.UUID(MASTER_UUID))
    yield famfs
    famfs.close()
    emulated.remove(device)


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


# -- this run's own resources ------------------------------------------------------------------
RUN: run_isolation.TestRun | None = None


def pytest_configure(config) -> None:
    global RUN
    import famfs_py

    source = Path(famfs_py.__file__).resolve()
    if os.environ.get("FAMFS_PY_TEST_INSTALLED") and source.is_relative_to(REPO):
        raise pytest.UsageError(
            f"FAMFS_PY_TEST_INSTALLED is set but famfs_py comes from the checkout ({source}); "
            "run the installed copy's pytest from outside the checkout (make test-installed)"
        )
    RUN = run_isolation.TestRun(BIN)


def pytest_report_header(config) -> list[str]:
    import famfs_py

    where = Path(famfs_py.__file__).resolve().parent
    lines = [f"famfs-py {famfs_py.__version__} from {where}, commands from {BIN}"]
    if RUN is not None:
        lines.append(f"this run's memory: {RUN.dir}")
        if RUN.swept:
            lines.append(f"swept after killed runs: {', '.join(map(str, RUN.swept))}")
    return lines


def pytest_unconfigure(config) -> None:
    global RUN
    if RUN is not None:
        left, RUN = RUN.close(), None
        for what in left:
            print(f"famfs-py tests: cleaned up what a test left behind: {what}")


@pytest.fixture(scope="session", autouse=True)
def _run_basetemp(tmp_path_factory) -> None:
    """Tell this run's cleanup where its mount points and emulation roots are."""
    if RUN is not None:
        RUN.set_basetemp(tmp_path_factory.getbasetemp())


# -- reference images ------------------------------------------------------------------------
@pytest.fixture(scope="session")
def ref_images() -> Iterator:
    """Decompressed reference images (read-only: copy one before writing to it)."""
    yield decompress_image
    shutil.rmtree(image_cache(), ignore_errors=True)


@pytest.fixture
def ref_device(ref_images, host_factory, tmp_path):
    """Make an emulated device holding a private copy of reference image NAME."""

    def make(name: str, host: Host | None = None, dev: str = "dax0.0") -> Host:
        host = host or host_factory(f"ref{name}")
        image = copy_image(ref_images(name), memory_dir() / f"ref-{uuid.uuid4()}")
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
            if is_mounted(mp):
                subprocess.run(["fusermount3", "-u", "-z", str(mp)], capture_output=True)
            if pid is not None:
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass


@pytest.fixture
def mounts(tmp_path: Path, host_factory) -> Iterator[Mounts]:
    tracker = Mounts(tmp_path)
    yield tracker
    tracker.cleanup()
    logs = tracker.logs()
    # like s3ql's checklogs: a daemon that logged a traceback failed, whatever the test saw
    assert "Traceback" not in logs or "FAMFS_PY_TEST_FAULT" in logs, logs


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


@pytest.fixture
def public_dir(mounts):
    """A directory other users can reach (pytest's tmp_path sits under a 0700 dir)."""
    import shutil
    import tempfile

    path = tempfile.mkdtemp(prefix="famfs-py-public-", dir="/tmp")
    os.chmod(path, 0o755)
    yield Path(path)
    mounts.cleanup()  # unmount first: this fixture ends before `mounts` does
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def public_mount(fresh, mounts, public_dir):
    """A master mount with --allow-other where other users can reach it."""
    return fresh, mounts.mount(fresh, public_dir / "shared", "--allow-other")
