"""One host on a real /dev/dax0.0: the refusals without --devdax, mkfs, mount, every way of
making and reading files (CLI, FUSE, mmap through the mount, open_mapped), the holder claim,
fsck online and offline, status, umount and a remount with every byte intact; then the CPU
cache flushing in force (status, `famfs-py flush`) and a short pcq run.

Leaves the filesystem mounted at state.mountpoint, with state.expected holding the sha256 of
every file, for the scenarios that follow in the same boot.
"""

from __future__ import annotations

import json
import mmap
import os
import re
from pathlib import Path

from guest.inguest.checks import (
    DEVICE,
    Scenario,
    State,
    cli,
    holder_released,
    is_mounted,
    one_line_error,
    pattern,
    sh,
    sha256,
)

SCENARIO = Scenario("one_host")
check = SCENARIO.check
MiB = 1 << 20
# the cp -r source tree: sizes around the 2 MiB allocation unit and the 4 KiB page
TREE = {
    "one-byte": 1,
    "page-and-one": 4097,
    "one-mib": MiB,
    "sub/two-mib-and-one": 2 * MiB + 1,
    "sub/deeper/three-mib": 3 * MiB,
}
INTERLEAVED_SIZE = 20983865  # 3 strips of 2 MiB chunks, not a multiple of anything


def mnt(state: State, relpath: str = "") -> Path:
    return state.mountpoint / relpath if relpath else state.mountpoint


def fuse_read(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


@check("device_facts")
def device_facts(state: State) -> str:
    """famfs-py dax list reports the real device as daxctl does."""
    theirs = json.loads(sh("daxctl list").stdout)
    ours = json.loads(cli("dax", "list", "--json").stdout)
    assert len(theirs) == 1 and len(ours) == 1, (theirs, ours)
    for key in ("chardev", "size", "align", "mode"):
        assert ours[0].get(key) == theirs[0].get(key), f"{key}: ours {ours[0]}, daxctl {theirs[0]}"
    assert theirs[0]["mode"] == "devdax", theirs
    return f"daxctl: {theirs[0]}"


@check("mkfs_refused_without_devdax")
def mkfs_refused_without_devdax(state: State) -> str:
    result = cli(DEVICE, prog="mkfs.famfs-py", ok=False)
    return one_line_error(result, "--devdax")


@check("mkfs")
def mkfs(state: State) -> str:
    result = cli("--devdax", DEVICE, prog="mkfs.famfs-py")
    return result.stdout.splitlines()[0]


@check("mount_refused_without_devdax", needs="mkfs")
def mount_refused_without_devdax(state: State) -> str:
    state.mountpoint.mkdir(parents=True, exist_ok=True)
    result = cli("mount", DEVICE, state.mountpoint, ok=False)
    line = one_line_error(result, "--devdax")
    assert not is_mounted(state.mountpoint), "mounted after all"
    assert holder_released(), "the refused mount left the device claimed"
    return line


@check("mount", needs="mkfs")
def mount(state: State) -> str:
    state.mountpoint.mkdir(parents=True, exist_ok=True)
    result = cli("mount", "--devdax", DEVICE, state.mountpoint)
    assert is_mounted(state.mountpoint)
    os.stat(state.mountpoint)
    return result.stdout.strip()


@check("mkdir_p", needs="mount")
def mkdir_p(state: State) -> None:
    cli("mkdir", "-p", mnt(state, "data/deep/er"))
    assert mnt(state, "data/deep/er").is_dir()


@check("creat_plain", needs="mkdir_p")
def creat_plain(state: State) -> None:
    path = mnt(state, "data/plain")
    cli("creat", "-s", "3m", path)
    assert path.stat().st_size == 3 * MiB
    state.expected["data/plain"] = sha256(path)


@check("creat_seeded", needs="mkdir_p")
def creat_seeded(state: State) -> None:
    path = mnt(state, "data/seeded")
    cli("creat", "-s", "5m", "-r", "-S", "11", path)
    assert path.stat().st_size == 5 * MiB
    state.expected["data/seeded"] = sha256(path)
    state.seeds["data/seeded"] = 11


@check("creat_interleaved", needs="mkdir_p")
def creat_interleaved(state: State) -> str:
    path = mnt(state, "data/striped")
    cli("creat", "-s", INTERLEAVED_SIZE, "-N", "3", "-B", "4", "-C", "2m", "-r", "-S", "12", path)
    getmap = json.loads(cli("getmap", "--json", path).stdout)
    text = json.dumps(getmap)
    assert "interleav" in text or "strips" in text, f"not interleaved: {text[:300]}"
    state.expected["data/striped"] = sha256(path)
    state.seeds["data/striped"] = 12
    return text[:200]


@check("cp_r", needs="mkdir_p")
def cp_r(state: State) -> None:
    source = Path("/root/tree")
    for seed, (name, size) in enumerate(TREE.items(), start=100):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes(pattern(seed, size))
    cli("cp", "-r", source, mnt(state, "tree"))
    for name in TREE:
        copy = mnt(state, f"tree/{name}")
        assert fuse_read(copy) == (source / name).read_bytes(), f"{name} differs"
        state.expected[f"tree/{name}"] = sha256(copy)


@check("verify", needs=("creat_seeded", "creat_interleaved"))
def verify(state: State) -> None:
    args = []
    for name, seed in state.seeds.items():
        args += ["-m", f"{mnt(state, name)},{seed}"]
    cli("verify", *args)


@check("fuse_read_write", needs="creat_plain")
def fuse_read_write(state: State) -> None:
    path = mnt(state, "data/plain")
    data = pattern(7, 300_000)
    fd = os.open(path, os.O_RDWR)
    try:
        assert os.pwrite(fd, data, 12345) == len(data)
        assert os.pwrite(fd, b"end!", 3 * MiB - 4) == 4
    finally:
        os.close(fd)
    content = fuse_read(path)
    assert content[12345 : 12345 + len(data)] == data
    assert content[-4:] == b"end!"
    state.expected["data/plain"] = sha256(path)


@check("mmap_through_mount", needs="creat_seeded")
def mmap_through_mount(state: State) -> None:
    path = mnt(state, "data/seeded")
    before = fuse_read(path)
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), 0) as view:
        assert view[:] == before, "a mapping of the FUSE file differs from read()"
        view[MiB : MiB + 8] = b"mmapped!"
        view.flush()
    after = fuse_read(path)
    assert after[MiB : MiB + 8] == b"mmapped!"
    assert after[:MiB] == before[:MiB] and after[MiB + 8 :] == before[MiB + 8 :]
    state.expected["data/seeded"] = sha256(path)
    state.seeds.pop("data/seeded")  # no longer the seeded pattern


def _open_mapped(state: State, relpath: str, mode: str) -> str:
    from famfs_py import open_mapped

    path = mnt(state, relpath)
    expected = fuse_read(path)
    with open_mapped(path, mode) as view:
        assert len(view) == len(expected), (len(view), len(expected))
        assert view[:] == expected, "open_mapped bytes differ from FUSE's"
        if mode == "r+":
            stamp = pattern(len(relpath), 5000)
            view[len(view) - 5000 :] = stamp
            view[2 * MiB - 3 : 2 * MiB + 3] = b"chunk!"  # across a 2 MiB boundary
    after = fuse_read(path)
    if mode == "r+":
        assert after[-5000:] == stamp, "a store through open_mapped is not seen through FUSE"
        assert after[2 * MiB - 3 : 2 * MiB + 3] == b"chunk!"
        state.expected[relpath] = sha256(path)
        state.seeds.pop(relpath, None)
    else:
        assert after == expected
    return f"{len(expected)} bytes"


@check("open_mapped_simple_r", needs="creat_plain")
def open_mapped_simple_r(state: State) -> str:
    return _open_mapped(state, "tree/sub/deeper/three-mib", "r")


@check("open_mapped_simple_rplus", needs="creat_plain")
def open_mapped_simple_rplus(state: State) -> str:
    return _open_mapped(state, "data/plain", "r+")


@check("open_mapped_interleaved_r", needs="creat_interleaved")
def open_mapped_interleaved_r(state: State) -> str:
    return _open_mapped(state, "data/striped", "r")


@check("open_mapped_interleaved_rplus", needs="creat_interleaved")
def open_mapped_interleaved_rplus(state: State) -> str:
    return _open_mapped(state, "data/striped", "r+")


@check("second_claimant_busy", needs="mount")
def second_claimant_busy(state: State) -> str:
    """While mounted, any other claimant of the device gets EBUSY, and mkfs -f (force) does
    not override the claim."""
    forced = one_line_error(cli("-f", "--devdax", DEVICE, prog="mkfs.famfs-py", ok=False), "busy")
    fsck = one_line_error(cli("fsck", "--devdax", DEVICE, ok=False), "busy")
    # the forced mkfs did not touch the filesystem: its files still read back
    for name in ("data/plain", "data/striped"):
        assert sha256(mnt(state, name)) == state.expected[name], f"{name} changed"
    return f"mkfs -f: {forced} | fsck: {fsck}"


@check("fsck_online", needs="mount")
def fsck_online(state: State) -> str:
    return cli("fsck", state.mountpoint).stdout.strip().splitlines()[-1]


@check("status", needs="mount")
def status(state: State) -> str:
    info = json.loads(cli("status", "--json", state.mountpoint).stdout)
    assert info["role"] == "master", info
    assert info["device"] == DEVICE, info
    assert info["device_mode"] == "devdax" and not info["emulated"], info
    assert info["health"] == "ok", info
    assert info["files"] >= len(state.expected), info
    return f"{info['files']} files, log {info['log']}"


@check("umount", needs="mount")
def umount(state: State) -> None:
    cli("umount", state.mountpoint)
    assert not is_mounted(state.mountpoint)
    assert holder_released(), "the device is still claimed after umount"


@check("fsck_offline", needs="umount")
def fsck_offline(state: State) -> str:
    return cli("fsck", "--devdax", DEVICE).stdout.strip().splitlines()[-1]


@check("remount_intact", needs="umount")
def remount_intact(state: State) -> str:
    cli("mount", "--devdax", DEVICE, state.mountpoint)
    bad = [n for n, digest in state.expected.items() if sha256(mnt(state, n)) != digest]
    assert not bad, f"changed after remount: {bad}"
    return f"{len(state.expected)} files byte-exact"


@check("flush_and_pcq", needs="remount_intact")
def flush_and_pcq(state: State) -> str:
    """On the real device: status names the flushing in force (a real device is not known
    coherent: on, with the CPU's instructions), `famfs-py flush` has the daemon write back
    and evict a file, and a short pcq run (producer and consumer at once) is intact."""
    path = mnt(state, "data/plain")
    said = cli("flush", "-v", path).stdout.strip()
    match = re.fullmatch(
        rf"famfs-py flush: flushed {re.escape(str(path))} \((\d+) cache lines\)", said
    )
    assert match, said
    lines = int(match.group(1))
    assert lines >= path.stat().st_size // 256, said  # every line of the file (64..256 bytes)
    text = cli("status", state.mountpoint).stdout
    flushing = next(line for line in text.splitlines() if line.startswith("flushing:"))
    found = re.fullmatch(
        r"flushing: +on \(flush=auto: the device dax0\.0 is not known coherent\), "
        r"(\S+)/(\S+); daemon: \d+ flushes \(\d+ lines\), \d+ invalidates \((\d+) lines\)",
        flushing,
    )
    assert found, flushing
    assert int(found.group(3)) >= lines, f"the daemon did not count the flush: {flushing}"
    queue = mnt(state, "pcq")
    cli("pcq", "--create", "--bsize", "1024", "--nbuckets", "64", queue)
    out = cli("pcq", "-pc", "-N", "300", "--seed", "5", queue).stdout
    for expected in ("pcq producer: nsent=300 nerrors=0", "pcq consumer: nreceived=300 nerrors=0"):
        assert expected in out, out
    cache_line = next(line for line in out.splitlines() if line.startswith("pcq cache: on"))
    return f"{found.group(1)}/{found.group(2)}, flushed {lines} lines; {cache_line}"
