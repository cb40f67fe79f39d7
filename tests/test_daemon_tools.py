"""The README's table of tools run through the master's mount (issue 24): each row here, with
the real tool, checked on a client host once the master has committed what it wrote."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from helpers import MiB, wait_until


@pytest.fixture
def hosts(pair, mounts, tmp_path):
    master, client = pair
    mmp = mounts.mount(master, tmp_path / "mnt-master")
    cmp = mounts.mount(client, tmp_path / "mnt-client")
    return mmp, cmp


def _tree(root: Path) -> Path:
    """A small tree: modes that differ from the defaults, a file over 2 MiB, nesting."""
    (root / "d1" / "d2").mkdir(parents=True)
    (root / "top.txt").write_text("top\n")
    (root / "d1" / "a.txt").write_text("a" * 1000)
    (root / "d1" / "d2" / "big.bin").write_bytes(os.urandom(5 * MiB + 7))
    os.chmod(root / "d1" / "a.txt", 0o640)
    os.chmod(root / "d1" / "d2", 0o750)
    return root


def _listing(root: Path) -> dict[str, tuple[int, int]]:
    """relative path -> (mode, size) of everything under root (directories: size 0)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.stat()
            size = 0 if path.is_dir() else st.st_size
            out[str(path.relative_to(root))] = (st.st_mode & 0o7777, size)
    return out


def _same_on_client(src: Path, dst: Path, *, modes: bool = True) -> None:
    want = _listing(src)
    wait_until(
        timeout=30,
        condition=lambda: all((dst / rel).exists() for rel in want),
        what=f"{dst} on the client",
    )
    got = _listing(dst)
    if not modes:
        want = {k: (0, s) for k, (_, s) in want.items()}
        got = {k: (0, s) for k, (_, s) in got.items()}
    assert got == want
    for rel in want:
        if (src / rel).is_file():
            assert (dst / rel).read_bytes() == (src / rel).read_bytes(), rel


def _run(*cmd: str | os.PathLike[str], check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=120, check=False
    )
    if check:
        assert result.returncode == 0, (cmd, result.stderr)
    return result


def test_shell_redirect(hosts):
    mmp, cmp = hosts
    _run("sh", "-c", f"echo hello > {mmp / 'new.txt'}")
    wait_until(
        timeout=30, condition=lambda: (cmp / "new.txt").exists(), what="new.txt on the client"
    )
    assert (cmp / "new.txt").read_text() == "hello\n"


def test_cp_and_cp_a(hosts, tmp_path):
    mmp, cmp = hosts
    src = _tree(tmp_path / "src")
    _run("cp", "/etc/hostname", mmp)
    _run("cp", "-a", src, mmp / "copy")
    _same_on_client(src, cmp / "copy")
    wait_until(
        timeout=30, condition=lambda: (cmp / "hostname").exists(), what="hostname on the client"
    )
    assert (cmp / "hostname").read_bytes() == Path("/etc/hostname").read_bytes()


def test_mkdir_p(hosts):
    mmp, cmp = hosts
    _run("mkdir", "-p", mmp / "x" / "y" / "z")
    wait_until(
        timeout=30, condition=lambda: (cmp / "x" / "y" / "z").is_dir(), what="x/y/z on the client"
    )


def test_tar_x(hosts, tmp_path):
    mmp, cmp = hosts
    src = _tree(tmp_path / "src")
    _run("tar", "-C", src, "-cf", tmp_path / "t.tar", ".")
    os.mkdir(mmp / "untar")
    _run("tar", "-C", mmp / "untar", "-xf", tmp_path / "t.tar")
    _same_on_client(src, cmp / "untar")


def test_rsync_and_rsync_inplace(hosts, tmp_path):
    mmp, cmp = hosts
    src = _tree(tmp_path / "src")
    _run("rsync", "-a", f"{src}/", mmp / "rs")
    _same_on_client(src, cmp / "rs")
    _run("rsync", "-a", "--inplace", f"{src}/", mmp / "rsi")
    _same_on_client(src, cmp / "rsi")
    # once logged: the same size rewritten in place works, another size cannot be
    (src / "top.txt").write_text("TOP\n")
    _run("rsync", "-a", "--inplace", f"{src}/", mmp / "rsi")
    assert (cmp / "rsi" / "top.txt").read_text() == "TOP\n"
    (src / "top.txt").write_text("longer now\n")
    result = _run("rsync", "-a", "--inplace", f"{src}/", mmp / "rsi", check=False)
    assert result.returncode != 0 and "File too large" in result.stderr  # EFBIG


def test_dd(hosts):
    mmp, cmp = hosts
    _run("dd", "if=/dev/urandom", f"of={mmp / 'dd.bin'}", "bs=1M", "count=3", "status=none")
    wait_until(timeout=30, condition=lambda: (cmp / "dd.bin").exists(), what="dd.bin on the client")
    assert (cmp / "dd.bin").stat().st_size == 3 * MiB
    # into a logged file: within its size with conv=notrunc; truncating it cannot be
    _run("dd", "if=/dev/zero", f"of={mmp / 'dd.bin'}", "bs=1k", "count=1", "conv=notrunc")
    assert (cmp / "dd.bin").read_bytes()[:1024] == bytes(1024)
    result = _run("dd", "if=/dev/zero", f"of={mmp / 'dd.bin'}", "count=1", check=False)
    assert result.returncode != 0 and "Operation not permitted" in result.stderr


def test_numpy_save(hosts):
    import numpy as np

    mmp, cmp = hosts
    array = np.arange(1_000_000, dtype=np.float64)
    np.save(mmp / "a.npy", array)
    wait_until(timeout=30, condition=lambda: (cmp / "a.npy").exists(), what="a.npy on the client")
    assert np.array_equal(np.load(cmp / "a.npy"), array)


def test_parquet(hosts):
    pq = pytest.importorskip(
        "pyarrow.parquet", reason="pyarrow is not installed (pip install pyarrow)"
    )
    import pyarrow as pa

    mmp, cmp = hosts
    table = pa.table({"n": list(range(100_000)), "s": [f"row {i}" for i in range(100_000)]})
    pq.write_table(table, mmp / "t.parquet")
    wait_until(
        timeout=30, condition=lambda: (cmp / "t.parquet").exists(), what="t.parquet on the client"
    )
    assert pq.read_table(cmp / "t.parquet").equals(table)


def test_sqlite3_fails_with_a_clear_error_and_never_hangs(hosts):
    mmp, cmp = hosts
    result = _run(
        "sqlite3",
        mmp / "db.sqlite",
        "create table t(x); insert into t values(1);",
        check=False,
    )  # the journal is logged at its fsync; removing it afterwards cannot be recorded
    assert result.returncode != 0 and "disk I/O error" in result.stderr


def test_git_clone(hosts, tmp_path):
    mmp, cmp = hosts
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    _run(*git, "-C", repo, "init", "-q")
    (repo / "a.txt").write_text("hello\n")
    (repo / "empty").write_text("")
    _run(*git, "-C", repo, "add", ".")
    _run(*git, "-C", repo, "commit", "-qm", "first")
    _run(*git, "clone", "-q", repo, mmp / "clone")
    wait_until(
        lambda: (cmp / "clone" / "a.txt").exists(), timeout=30, what="the clone on the client"
    )
    assert (cmp / "clone" / "a.txt").read_text() == "hello\n"
    log = _run("git", "-C", cmp / "clone", "log", "--format=%s").stdout
    assert log == "first\n"
    # empty files are not kept (the format cannot record size 0): git sees one deleted
    wait_until(
        timeout=30,
        condition=lambda: not (mmp / "clone" / "empty").exists(),
        what="the empty file dropped",
    )
    status = _run("git", "-C", mmp / "clone", "status", "--porcelain", check=False)
    assert " D empty" in status.stdout or status.returncode != 0, status
