"""Where emulated devices' memory lives: on 2 MiB pages in famfs-py's own tmpfs (or /dev/shm
with a warning), owned by one device each; memory whose device is gone is shown and
reclaimed, a device whose memory is gone says so and how to clear it."""

from __future__ import annotations

import ctypes
import json
import os
import re
import secrets
from pathlib import Path

import pytest
from helpers import CLIENT_UUID, MiB, assert_no_traceback, memory_dir

from famfs_py.dax import backing
from famfs_py.dax.device import device_in_root
from famfs_py.dax.memory import DeviceMemory


def _pmd_mapped_kib(base: int) -> int:
    """ShmemPmdMapped + FilePmdMapped of this process's mapping that starts at `base`."""
    total, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = re.match(r"^([0-9a-f]+)-[0-9a-f]+ ", line)
            if head:
                inside = int(head.group(1), 16) == base
            elif inside and line.split(":")[0] in ("ShmemPmdMapped", "FilePmdMapped"):
                total += int(line.split()[1])
    return total


def _need_huge_pages() -> None:
    if not backing.huge_pages(memory_dir()):
        pytest.skip("no huge-page tmpfs here (not root, or no transparent huge pages)")


def test_new_memory_sits_on_2mib_pages_and_maps_with_pmds(host):
    _need_huge_pages()
    result = host.ok("dax", "create", "dax0.0", "--size", "1g")
    assert "warning" not in result.stderr, result.out
    (row,) = json.loads(host.ok("dax", "list", "--json").stdout)
    assert row["huge_pages"] is True and Path(row["memory"]).parent == memory_dir()
    device = device_in_root("dax0.0", host.root)
    with DeviceMemory.of_device(device, writable=True) as mem:
        assert mem.base % (2 * MiB) == 0
        mem.write(6 * MiB, secrets.token_bytes(8 * MiB))  # first touch, by the kernel
        assert mem.read(6 * MiB, 4) != b"\0\0\0\0"
        assert _pmd_mapped_kib(mem.base) >= 8 * 1024  # 2 MiB page table entries, not 4 KiB


def _in_child(action) -> str:
    """Run `action()` in a forked child; its return value (a string) or its error."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_fd)
            try:
                text = f"ok {action()}"
            except BaseException as exc:
                text = f"error {type(exc).__name__}: {exc}"
            os.write(write_fd, text.encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as f:
        text = f.read()
    os.waitpid(pid, 0)
    return text


def _private_run_dir(libc) -> None:
    """In this (forked) process: a mount namespace of its own where /run/famfs-py is empty."""
    if libc.unshare(0x00020000) != 0:  # CLONE_NEWNS
        raise OSError(ctypes.get_errno(), "unshare")
    libc.mount(b"none", b"/", None, 0x4000 | 0x40000, None)  # MS_REC | MS_PRIVATE
    backing.HUGE_DIR.parent.mkdir(parents=True, exist_ok=True)
    if libc.mount(b"none", bytes(backing.HUGE_DIR.parent), b"tmpfs", 0, b"mode=1777"):
        raise OSError(ctypes.get_errno(), "mount")
    os.environ.pop(backing.DIR_ENV, None)


def test_first_uses_at_once_mount_one_huge_page_tmpfs_as_large_as_dev_shm():
    """Four processes asking for the memory directory at the same moment, where famfs-py's
    tmpfs is not mounted yet: one tmpfs is mounted (not four stacked), with huge pages,
    nosuid/nodev, sticky and open to all, and the size of /dev/shm."""
    if os.geteuid() != 0 or not backing.SHMEM_THP.exists():
        pytest.skip("needs root and transparent huge pages")
    libc = ctypes.CDLL(None, use_errno=True)

    def at_huge_dir() -> list[str]:
        with open("/proc/self/mountinfo") as f:
            return [x for x in f if x.split()[4] == str(backing.HUGE_DIR)]

    def race() -> str:
        _private_run_dir(libc)
        before = at_huge_dir()  # the host's, covered by the empty /run/famfs-py
        go_read, go_write = os.pipe()
        children = []
        for _ in range(4):
            pid = os.fork()
            if pid == 0:
                os.close(go_write)
                os.read(go_read, 1)  # all start together
                code = 0 if backing.memory_dir() == backing.MemoryDir(backing.HUGE_DIR, True) else 1
                os._exit(code)
            children.append(pid)
        os.close(go_write)  # EOF releases them all
        codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
        lines = [x for x in at_huge_dir() if x not in before]
        mode = backing.HUGE_DIR.stat().st_mode & 0o7777
        return json.dumps({"codes": codes, "mounts": lines, "mode": mode})

    text = _in_child(race)
    assert text.startswith("ok "), text
    found = json.loads(text[3:])
    assert found["codes"] == [0, 0, 0, 0]
    (line,) = found["mounts"]
    fstype, _source, options = line.split(" - ")[1].split()
    assert fstype == "tmpfs" and "huge=within_size" in options.split(",")
    assert {"nosuid", "nodev"} <= set(line.split()[5].split(","))
    assert found["mode"] == 0o1777
    shm = os.statvfs(backing.SHM_DIR)
    size_kib = next(o for o in options.split(",") if o.startswith("size=")).split("=")[1]
    assert int(size_kib.rstrip("k")) * 1024 == shm.f_blocks * shm.f_frsize


def test_an_unprivileged_user_without_famfs_pys_tmpfs_falls_back_to_dev_shm_with_a_warning():
    """In a mount namespace where /run/famfs-py is empty, a user who may not mount gets
    memory in /dev/shm and one warning line that says why and what to do."""
    if os.geteuid() != 0:
        pytest.skip("needs root to set up the namespace")
    root = backing.HUGE_DIR.parent / "emul"  # in the namespace's own tmpfs
    libc = ctypes.CDLL(None, use_errno=True)

    def create() -> str:
        from famfs_py.dax import emulated

        _private_run_dir(libc)
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
        warnings: list[str] = []
        device = emulated.create("dax0.0", 64 * MiB, root, warn=warnings.append)
        return json.dumps({"memory": os.readlink(device.node), "warnings": warnings})

    text = _in_child(create)
    assert text.startswith("ok "), text
    made = json.loads(text[3:])
    memory = Path(made["memory"])
    try:
        assert memory.parent == backing.SHM_DIR and memory.stat().st_uid == 65534
        (warning,) = made["warnings"]
        assert "/dev/shm on 4 KiB pages" in warning and "not permitted" in warning
        assert "\n" not in warning and backing.DIR_ENV in warning
    finally:
        backing.forget(memory)


def test_a_memory_directory_of_the_users_choice_is_used_as_it_is(host, tmp_path):
    plain = tmp_path / "plain"  # on a disk: no huge pages, and no warning for a choice
    result = host.ok("dax", "create", "dax0.0", "--size", "64m", env={backing.DIR_ENV: plain})
    assert "warning" not in result.stderr
    (row,) = json.loads(host.ok("dax", "list", "--json").stdout)
    assert row["huge_pages"] is False and Path(row["memory"]).parent == plain


def test_a_device_whose_memory_is_gone_says_so_and_dax_remove_clears_it(host):
    host.ok("dax", "create", "dax0.0", "--size", "64m")
    memory = host.memory()
    memory.unlink()  # deleted by hand, or a reboot cleared the tmpfs
    listing = host.ok("dax", "list").stdout
    assert f"memory missing: {memory} is gone" in listing
    assert f"famfs-py dax remove {host.node()}" in listing
    (row,) = json.loads(host.ok("dax", "list", "--json").stdout)
    assert row["memory_missing"] is True
    again = host.cli("dax", "create", "dax0.0", "--size", "64m")
    assert again.returncode == 1 and len(again.stderr.strip().splitlines()) == 1
    assert "its memory" in again.stderr and "is gone" in again.stderr
    assert f"'famfs-py dax remove {host.node()}'" in again.stderr
    assert_no_traceback(again)
    (host.root / "mnt").mkdir()
    mount = host.cli("mount", "dax0.0", host.root / "mnt")
    assert mount.returncode != 0 and "famfs-py dax remove" in mount.stderr, mount.out
    assert_no_traceback(mount)
    host.ok("dax", "remove", "dax0.0")
    assert not backing.owner_link(memory).exists()
    host.ok("dax", "create", "dax0.0", "--size", "64m")


def test_memory_whose_device_is_gone_is_listed_and_reclaimed(host_factory, tmp_path):
    own_dir = tmp_path / "memory"
    env = {backing.DIR_ENV: str(own_dir)}
    kept, dropped = host_factory("kept"), host_factory("dropped")
    kept.ok("dax", "create", "dax0.0", "--size", "64m", env=env)
    dropped.ok("dax", "create", "dax0.0", "--size", "64m", env=env)
    dropped.ok("dax", "create", "dax1.0", "--size", "64m", env=env)
    with open(dropped.node(), "r+b") as f:
        f.write(b"x" * MiB)
    lost = sorted([dropped.memory("dax0.0"), dropped.memory("dax1.0")])
    survivor = kept.memory()
    import shutil

    shutil.rmtree(dropped.root)  # the emulation root deleted by hand
    unknown = own_dir / f"famfs-py.{secrets.token_hex(8)}"  # an earlier famfs-py's memory
    unknown.write_bytes(b"old")

    listing = kept.ok("dax", "list", env=env).stdout
    for path in lost:
        line = next(x for x in listing.splitlines() if str(path) in x)
        assert line.startswith("orphaned memory: ") and "is gone" in line
        assert "famfs-py dax remove --orphans" in line
    assert f"memory of unknown owner: {unknown}" in listing
    assert str(survivor) not in listing
    mine = [
        o
        for o in json.loads(kept.ok("dax", "list", "--orphans", "--json", env=env).stdout)
        if o["memory"].startswith(str(own_dir))
    ]
    assert sorted(o["memory"] for o in mine if o["owner"]) == [str(p) for p in lost]
    assert {o["size"] for o in mine if o["owner"]} == {64 * MiB}
    assert [o["owner"] for o in mine if o["memory"] == str(unknown)] == [None]

    reclaimed = kept.ok("dax", "remove", "--orphans", env=env).stdout
    assert all(f"reclaimed {p}" in reclaimed for p in lost)
    assert not any(p.exists() or backing.owner_link(p).exists() for p in lost)
    assert unknown.exists() and survivor.exists()  # unknown owner: only when named
    refused = kept.cli("dax", "remove", "--memory", survivor, env=env)
    assert refused.returncode == 1 and str(kept.node()) in refused.stderr
    assert_no_traceback(refused)
    kept.ok("dax", "remove", "--memory", unknown, env=env)
    assert not unknown.exists() and survivor.exists()
    usage = kept.cli("dax", "remove")
    assert usage.returncode == 2 and "--orphans" in usage.stderr


def test_shared_memory_stays_on_one_filesystem_and_each_device_owns_its_link(host_factory):
    one, two = host_factory("one"), host_factory("two", CLIENT_UUID)
    one.ok("dax", "create", "dax0.0", "--size", "64m")
    two.ok("dax", "create", "dax0.0", "--share", one.node())
    first, second = Path(os.readlink(one.node())), Path(os.readlink(two.node()))
    assert first != second and first.parent == second.parent == memory_dir()
    assert os.path.samefile(first, second) and first.stat().st_nlink == 2
    assert backing.recorded_owner(first) == one.node()
    assert backing.recorded_owner(second) == two.node()
    one.ok("dax", "remove", "dax0.0")
    assert not first.exists() and second.stat().st_nlink == 1
    assert not any(str(second) in line for line in two.ok("dax", "list").stdout.splitlines()[1:])


def test_a_backing_file_anywhere_keeps_its_memory_beside_it(host, tmp_path):
    image = tmp_path / "images" / "mem.img"
    image.parent.mkdir()
    host.ok("dax", "create", "dax0.0", "--size", "64m", "--backing", image)
    link = Path(os.readlink(host.node()))
    assert link.parent == image.parent and os.path.samefile(link, image)
    assert backing.recorded_owner(link) == host.node()
    host.ok("dax", "remove", "dax0.0")
    assert image.exists() and not link.exists() and not backing.owner_link(link).exists()
