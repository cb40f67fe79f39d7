"""famfs-py as a package: `python -m build` makes a wheel (from the sdist it makes first,
compiling the one C extension); the wheel, installed alone into a fresh virtualenv, gives
working commands (mkfs, mount, creat, verify, umount, install-service) and one version."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from helpers import MASTER_UUID, REPO

import famfs_py

SERVICE_FILES = ("famfs-py@.service", "90-famfs-py-dax.rules", "example.conf")

# what a build needs from a checkout (a copy of it is built, so the checkout stays clean)
SKIP = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
    ".ruff_cache", "tests", "bench", "docs", "*.so",
)  # fmt: skip


def _run(*argv: str | os.PathLike[str], timeout: float = 600, **kwargs) -> str:
    proc = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=timeout, **kwargs
    )
    assert proc.returncode == 0, f"{argv}: rc {proc.returncode}\n{proc.stdout}{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """The sdist and wheel of this checkout, built as a packager builds them."""
    if not (REPO / "pyproject.toml").is_file():
        pytest.skip("no checkout to build from")
    work = tmp_path_factory.mktemp("package")
    source = work / "source"
    shutil.copytree(REPO, source, ignore=SKIP, symlinks=True)
    _run(sys.executable, "-m", "build", "--outdir", work / "dist", source)
    (wheel,) = (work / "dist").glob("famfs_py-*.whl")
    (sdist,) = (work / "dist").glob("famfs_py-*.tar.gz")
    return {"wheel": wheel, "sdist": sdist, "work": work}


@pytest.fixture(scope="module")
def venv(built) -> Path:
    """A fresh virtualenv with nothing but the wheel and its dependencies."""
    env_dir = built["work"] / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    _run(base, "-m", "venv", env_dir)
    _run(env_dir / "bin" / "pip", "install", "-q", built["wheel"])
    return env_dir / "bin"


def test_systemd_is_the_one_source_of_the_service_files():
    """The unit, the udev rule and the example configuration are written once, in systemd/;
    the package's copies are relative symlinks to them (no second copy to drift)."""
    for data in SERVICE_FILES:
        packaged = REPO / "famfs_py" / "service" / data
        assert packaged.is_symlink(), f"{packaged} is not a link to systemd/{data}"
        assert os.readlink(packaged) == f"../../systemd/{data}"
        assert packaged.resolve() == (REPO / "systemd" / data).resolve()
        assert (REPO / "systemd" / data).is_file() and not (REPO / "systemd" / data).is_symlink()


def test_the_wheel_and_sdist_hold_the_package_its_data_and_one_version(built):
    version = famfs_py.__version__
    assert built["wheel"].name.startswith(f"famfs_py-{version}-")
    names = zipfile.ZipFile(built["wheel"]).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"famfs_py", f"famfs_py-{version}.dist-info"}  # nothing else at the top
    assert any(n.startswith("famfs_py/dax/_region.") and n.endswith(".so") for n in names)
    for data in SERVICE_FILES:  # the files themselves, as systemd/ holds them
        wheel_copy = zipfile.ZipFile(built["wheel"]).read(f"famfs_py/service/{data}")
        assert wheel_copy == (REPO / "systemd" / data).read_bytes(), data
    entry_points = zipfile.ZipFile(built["wheel"]).read(
        f"famfs_py-{version}.dist-info/entry_points.txt"
    )
    for script in (b"famfs-py =", b"mkfs.famfs-py =", b"mount.fuse.famfs-py ="):
        assert script in entry_points
    with tarfile.open(built["sdist"]) as sdist:
        members = sdist.getnames()
        for data in SERVICE_FILES:
            member = sdist.getmember(f"famfs_py-{version}/famfs_py/service/{data}")
            assert member.isfile(), f"{data} is not carried as a file in the sdist"
    for name in ("pyproject.toml", "setup.py", "famfs_py/dax/_region.c"):
        assert f"famfs_py-{version}/{name}" in members


def test_an_installed_wheel_runs_the_main_job_from_its_venv_alone(venv, tmp_path):
    """mkfs, mount, creat, verify and umount with nothing but the fresh venv: no checkout
    on the path, no PYTHONPATH, the commands run from the venv's bin."""
    env = {
        "PATH": f"{venv}:/usr/sbin:/usr/bin:/sbin:/bin",
        "FAMFS_PY_DAX_ROOT": str(tmp_path / "root"),
        "FAMFS_PY_SYSTEM_UUID": MASTER_UUID,
        "FAMFS_PY_LOG_DIR": str(tmp_path / "logs"),
        "FAMFS_PY_MEMORY_DIR": os.environ["FAMFS_PY_MEMORY_DIR"],
    }

    def cli(*argv: str | os.PathLike[str], prog: str = "famfs-py") -> str:
        return _run(venv / prog, *argv, env=env, cwd=tmp_path, timeout=120)

    assert cli("--version").strip() == f"famfs-py {famfs_py.__version__}"
    code = "import famfs_py; print(famfs_py.__file__)"
    where = _run(venv / "python", "-c", code, env=env, cwd=tmp_path)
    assert Path(where.strip()).is_relative_to(venv.parent)
    cli("dax", "create", "dax0.0", "--size", "4g")
    cli("dax0.0", prog="mkfs.famfs-py")
    mp = tmp_path / "mnt"
    mp.mkdir()
    cli("mount", "dax0.0", mp)
    try:
        cli("mkdir", "-p", mp / "data")
        cli("creat", "-s", "3m", "-r", "-S", "42", mp / "data" / "seeded")
        cli("verify", "-S", "42", "-f", mp / "data" / "seeded")
        assert (mp / "data" / "seeded").stat().st_size == 3 << 20
        assert "role" in cli("status", mp)
    finally:
        cli("umount", mp)
    assert not os.path.ismount(mp)
    cli("mount", "dax0.0", mp)  # the bytes outlive the mount
    try:
        cli("verify", "-S", "42", "-f", mp / "data" / "seeded")
    finally:
        cli("umount", mp)
    cli("dax", "remove", "dax0.0")


def test_an_installed_wheel_installs_its_service_files_from_the_package(venv, tmp_path):
    shown = [Path(p) for p in _run(venv / "famfs-py", "install-service", "--files").split()]
    assert all(p.is_file() and p.is_relative_to(venv.parent) for p in shown)
    dirs = {name: tmp_path / name for name in ("unit", "sbin", "udev", "conf")}
    _run(venv / "famfs-py", "install-service", *(f"--{n}-dir={p}" for n, p in dirs.items()))
    unit = (dirs["unit"] / "famfs-py@.service").read_text()
    assert f"ExecStart={venv}/famfs-py mount --systemd " in unit
    assert os.readlink(dirs["sbin"] / "mount.fuse.famfs-py") == str(venv / "mount.fuse.famfs-py")
    assert (dirs["udev"] / "90-famfs-py-dax.rules").is_file()
