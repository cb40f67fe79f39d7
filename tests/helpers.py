"""What tests share besides fixtures: the real CLI in subprocesses, simulated hosts, the
reference images, waiting for a condition with a deadline, and a few checks."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

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
    full_env = plugin_env(env)
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


NO_SETTINGS = {  # a test that wants settings files names its own
    "FAMFS_PY_CONFIG_SYSTEM": "/nonexistent/famfs-py-test/system.conf",
    "FAMFS_PY_CONFIG_GLOBAL": "/nonexistent/famfs-py-test/global.conf",
}
PLUGINS = Path(__file__).resolve().parent / "plugins"  # test-only switches (famfs_switches)
T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout: float = 5.0, what: str = "the condition") -> T:
    """Poll `condition` until it returns something true, and return that; AssertionError
    naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout}s")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def wait_gone(pid: int, timeout: float = 10.0) -> None:
    """Wait for process `pid` (not necessarily our child) to end, on its pidfd; a zombie has
    ended (it holds no files and no claim)."""
    import select

    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        if not select.select([pidfd], [], [], timeout)[0]:
            raise AssertionError(f"process {pid} is still alive after {timeout}s")
    finally:
        os.close(pidfd)


def plugin_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a famfs-py process a test starts: the test-only switches'
    directory on PYTHONPATH (they do nothing unless their variables are set), and settings
    files of its own (never this machine's /etc/famfs.conf or ~/.famfs: famfs_py.config)."""
    full = {**os.environ, **NO_SETTINGS, **(env or {})}
    paths = [str(PLUGINS), *filter(None, full.get("PYTHONPATH", "").split(os.pathsep))]
    full["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return full


def is_mounted(mp: Path) -> bool:
    real = os.path.realpath(mp)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == real for line in f)


def mount_source(mp: Path) -> str:
    """The source /proc/self/mountinfo gives the mount at `mp` (what findmnt -S matches)."""
    real = os.path.realpath(mp)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if left.split()[4] == real:
                return right.split()[1]
    raise AssertionError(f"{mp} is not mounted")


# -- this run's memory --------------------------------------------------------------------------
def memory_dir() -> Path:
    """This test run's own memory directory (set up by conftest, tests/run_isolation.py):
    emulated memory and the reference-image cache live there and go with the run."""
    return Path(os.environ["FAMFS_PY_MEMORY_DIR"])


# -- reference images ------------------------------------------------------------------------
def image_cache() -> Path:
    return memory_dir() / "images"


def manifest(name: str) -> dict:
    return json.loads((REF_DIR / f"{name}.manifest.json").read_text())


def decompress_image(name: str) -> Path:
    """Reference image NAME, decompressed once per test run (read-only: copy it first)."""
    import zstandard

    image_cache().mkdir(exist_ok=True)
    out = image_cache() / f"{name}.img"
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


def copy_image(src: Path, dst: Path) -> Path:
    subprocess.run(["cp", "--sparse=always", str(src), str(dst)], check=True)
    return dst


PAGE = 4096
ZERO_PAGE = bytes(PAGE)


def fingerprint(path: Path, skip: range = range(0)) -> str:
    """A hash of a (sparse) file's content: equal iff no byte changed. Reads only the data
    segments, page by page, and skips zero pages (pages a read allocated do not count), so
    a mostly empty 4 GiB device is quick. Pages in `skip` (page-aligned) are left out."""
    digest = hashlib.blake2b()
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        digest.update(str(size).encode())
        offset = 0
        while offset < size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            for pos in range(start - start % PAGE, end, PAGE):
                if pos in skip:
                    continue
                chunk = os.pread(fd, PAGE, pos)
                if chunk != ZERO_PAGE:
                    digest.update(f"@{pos}".encode())
                    digest.update(chunk)
            offset = end
    finally:
        os.close(fd)
    return digest.hexdigest()


def as_user(uid: int, action, groups: tuple[int, ...] = ()) -> str:
    """Run `action()` in a forked child whose uid and gid are `uid`, with supplementary
    `groups`. Returns "ok <result>" or "error <errno> <message>"."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        try:
            os.close(read_fd)
            os.setgroups(list(groups))
            os.setgid(uid)
            os.setuid(uid)
            try:
                text = f"ok {action()}"
            except Exception as exc:
                text = f"error {getattr(exc, 'errno', None)} {exc}"
            os.write(write_fd, text.encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as f:
        text = f.read()
    os.waitpid(pid, 0)
    return text


# -- where a process's data lives (the data-stack tests) ----------------------------------
def resident(path: Path) -> int:
    """Bytes of `path` in this machine's page cache (util-linux fincore)."""
    out = subprocess.run(
        ["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout.split()[0])


def device_ranges(memory: Path) -> list[tuple[int, int]]:
    """This process's mappings of the (emulated) device's memory file."""
    inode = os.stat(memory).st_ino
    found = []
    with open("/proc/self/maps") as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 6 and int(fields[4]) == inode:
                lo, hi = (int(x, 16) for x in fields[0].split("-"))
                found.append((lo, hi))
    return found


def readme_block(marker: str) -> str:
    """The README's python code block that contains `marker`, as written there."""
    import re

    readme = (REPO / "README.md").read_text()
    for block in re.findall(r"```python\n(.*?)```", readme, re.S):
        if marker in block:
            return block
    raise AssertionError(f"no python block with {marker!r} in README.md")
