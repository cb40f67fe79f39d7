"""Root acting in a place another user prepared (issue 28 item 2): an emulation root, or a
memory directory, that an unprivileged user owns or may write is refused before root follows
anything in it — a symlinked lock, a swapped device node, planted holder temporaries."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import Host, MiB, as_user, assert_no_traceback

from famfs_py.dax import backing

NOBODY = 65534


def _chown_tree(top: Path, uid: int) -> None:
    os.lchown(top, uid, uid)
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), uid, uid)


def _victim(tag: str) -> Path:
    return Path(tempfile.gettempdir()) / f"famfs-py-victim-{tag}-{secrets.token_hex(4)}"


@pytest.fixture
def users_root() -> Iterator[Host]:
    """An emulation root with a device (made by root), then given to user nobody: as if
    nobody had prepared it."""
    top = Path(tempfile.mkdtemp(prefix="famfs-py-users-root-", dir="/tmp"))
    os.chmod(top, 0o755)
    host = Host(top / "root", "6b1c9a3e-2f4d-4e8a-9b7c-1d2e3f405162")
    host.ok("dax", "create", "dax0.0", "--size", "4g")
    memory = host.memory()
    _chown_tree(host.root, NOBODY)
    yield host
    memory.unlink(missing_ok=True)
    backing.owner_link(memory).unlink(missing_ok=True)
    shutil.rmtree(top, ignore_errors=True)


def _refused(result, *words: str) -> None:
    assert result.returncode != 0, result.out
    assert_no_traceback(result)
    assert "refusing" in result.out, result.out
    for word in words:
        assert word in result.out, result.out


def test_a_symlinked_lock_in_a_users_root_is_not_followed(users_root):
    victim = _victim("lock")
    lock = users_root.root / "run" / "dax0.0.lock"

    def plant():
        lock.unlink(missing_ok=True)
        os.symlink(victim, lock)
        return "planted"

    assert as_user(NOBODY, plant) == "ok planted"
    try:
        _refused(users_root.cli("mkfs", "dax0.0"), f"belongs to uid {NOBODY}")
        assert not victim.exists()  # the old code created it, as root, where the link pointed
        _refused(users_root.cli("dax", "remove", "dax0.0"), f"belongs to uid {NOBODY}")
    finally:
        victim.unlink(missing_ok=True)


def test_a_swapped_device_node_in_a_users_root_gets_no_filesystem(users_root):
    mine = _victim("mine")
    node = users_root.node()

    def swap():
        with open(mine, "wb") as f:
            f.truncate(4 << 30)
        node.unlink()
        os.symlink(mine, node)
        return "swapped"

    assert as_user(NOBODY, swap) == "ok swapped"
    try:
        _refused(users_root.cli("mkfs", "dax0.0"))
        with open(mine, "rb") as f:
            assert f.read(2 * MiB).count(0) == 2 * MiB  # no superblock written into it
    finally:
        mine.unlink(missing_ok=True)


def test_planted_holder_temporaries_overwrite_nothing(users_root):
    """The claim wrote its holder record through `.holder.<pid>`: links planted for the pids
    to come made root overwrite a file of the user's choice."""
    victim = _victim("holder")
    victim.write_text("precious\n")
    devdir = users_root.root / "sys" / "bus" / "dax" / "devices" / "dax0.0"
    with open("/proc/sys/kernel/ns_last_pid") as f:
        last = int(f.read())
    with open("/proc/sys/kernel/pid_max") as f:
        pid_max = int(f.read())

    def plant():
        for pid in range(last + 1, min(last + 3000, pid_max)):
            os.symlink(victim, devdir / f".holder.{pid}")
        return "planted"

    assert as_user(NOBODY, plant) == "ok planted"
    try:
        _refused(users_root.cli("mkfs", "dax0.0"))
        assert victim.read_text() == "precious\n"
    finally:
        victim.unlink(missing_ok=True)


def test_a_world_writable_root_of_roots_own_is_refused(tmp_path):
    """An operator's mistake (chmod 0777) is as dangerous as a user's root."""
    top = Path(tempfile.mkdtemp(prefix="famfs-py-open-root-", dir="/tmp"))
    try:
        os.chmod(top, 0o777)
        host = Host(top, "6b1c9a3e-2f4d-4e8a-9b7c-1d2e3f405162")
        _refused(host.cli("dax", "create", "dax0.0", "--size", "64m"), "written by other users")
        assert not (top / "dev").exists()
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_a_memory_directory_another_user_owns_is_refused(host):
    chosen = Path(tempfile.mkdtemp(prefix="famfs-py-users-memory-", dir="/tmp"))
    try:
        os.chown(chosen, NOBODY, NOBODY)
        result = host.cli(
            "dax", "create", "dax0.0", "--size", "64m", env={backing.DIR_ENV: str(chosen)}
        )
        _refused(result, f"belongs to uid {NOBODY}")
        assert os.listdir(chosen) == []  # the old code put root's memory there
    finally:
        shutil.rmtree(chosen, ignore_errors=True)
