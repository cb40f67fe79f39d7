"""A machine check while the filesystem is served: the host injects a software-recoverable,
action-optional (SRAO) memory error through the QEMU monitor into one page of one file.

What the kernel does with it on devdax (measured in the lab; checked here): the nfit driver
adds the page to the region's badblocks (kept until reboot), memory_failure() unmaps the page
from every process and sends SIGBUS (BUS_MCEERR_AO) to processes that asked for early kills;
other processes get nothing, and their next access simply maps the page again (device_dax
does not check for poison). famfs-py learns of it from badblocks: that file's reads fail with
EIO, every other file stays byte-exact, the daemon keeps serving, status says degraded, and
a remount still knows (badblocks outlive the mount).

Runs after one_host, on its mount.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from guest.inguest.checks import (
    DEVICE,
    Scenario,
    State,
    cli,
    is_mounted,
    request,
    sha256,
    wait_until,
)

SCENARIO = Scenario("mce")
check = SCENARIO.check
MiB = 1 << 20
PAGE = 4096
VICTIM = "mce/victim"
BYSTANDER = "mce/bystander"
VICTIM_PAGE = 2 * MiB + 3 * PAGE  # file offset of the page hit
DAX = Path("/sys/bus/dax/devices/dax0.0")
REGION_BADBLOCKS = Path("/sys/bus/nd/devices/region0/badblocks")
BUS_MCEERR_AO = 5

# a process mapping the victim through open_mapped, touching the page, then either waiting
# for the early-kill SIGBUS (blocked, taken with sigtimedwait) or, told to, touching again
MAPPER = r"""
import ctypes, json, signal, sys
early, path, offset, dev_offset = sys.argv[1] == "early", sys.argv[2], *map(int, sys.argv[3:])
if early:
    PR_MCE_KILL, PR_MCE_KILL_SET, PR_MCE_KILL_EARLY = 33, 1, 1
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_MCE_KILL, PR_MCE_KILL_SET, PR_MCE_KILL_EARLY, 0, 0) == 0
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGBUS})  # before any thread starts
from famfs_py import open_mapped
view = open_mapped(path, "r")
before = view[offset : offset + 16].hex()
address = None
for line in open("/proc/self/maps"):  # where the page is mapped: the kernel's word for it
    span, _, start, _, _, *name = line.split()
    low, high = (int(x, 16) for x in span.split("-"))
    if name == ["/dev/dax0.0"] and int(start, 16) <= dev_offset < int(start, 16) + high - low:
        address = low + dev_offset - int(start, 16)
print(json.dumps({"mapped": address, "bytes": before}), flush=True)
if early:
    info = signal.sigtimedwait({signal.SIGBUS}, 300)
    out = {"signal": None} if info is None else {
        "signal": info.si_signo, "code": info.si_code, "addr": info.si_band}
else:
    sys.stdin.readline()
    out = {"touched": view[offset : offset + 16].hex()}
print(json.dumps(out), flush=True)
"""


def path(state: State, relpath: str) -> Path:
    return state.mountpoint / relpath


def status_json(state: State) -> tuple[int, dict]:
    result = cli("status", "--json", state.mountpoint, ok=False)
    return result.returncode, json.loads(result.stdout) if result.stdout.strip() else {}


def read_errno(file: Path, offset: int = 0, length: int | None = None) -> int | None:
    """The errno reading `file` (or a range of it) through FUSE fails with; None: it reads."""
    try:
        with open(file, "rb", buffering=0) as f:
            if length is None:
                while f.read(MiB):
                    pass
            else:
                os.pread(f.fileno(), length, offset)
    except OSError as exc:
        return exc.errno
    return None


def mapper(kind: str, file: Path, offset: int) -> tuple[subprocess.Popen, dict]:
    proc = subprocess.Popen(
        [sys.executable, "-c", MAPPER, kind, str(file), str(offset), str(hit.offset)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait()
        raise AssertionError(f"the {kind} mapper ended before mapping (exit {proc.returncode})")
    return proc, json.loads(line)


class Injection:
    """What the checks after the injection look at."""

    offset = 0  # device offset of the page hit
    phys = 0
    early: tuple[subprocess.Popen, dict] | None = None
    late: tuple[subprocess.Popen, dict] | None = None


hit = Injection()


@check("setup")
def setup(state: State) -> str:
    if not is_mounted(state.mountpoint):
        cli("mount", "--devdax", DEVICE, state.mountpoint)
    cli("mkdir", "-p", path(state, "mce"))
    cli("creat", "-M", f"{path(state, VICTIM)},8m", "-M", f"{path(state, BYSTANDER)},4m")
    for name, byte in ((VICTIM, b"v"), (BYSTANDER, b"b")):
        with open(path(state, name), "r+b") as f:
            f.write(byte * (os.fstat(f.fileno()).st_size))
    state.expected[BYSTANDER] = sha256(path(state, BYSTANDER))
    getmap = json.loads(cli("getmap", "--json", path(state, VICTIM)).stdout)[0]
    extent = getmap["extents"][0]
    assert extent["length"] > VICTIM_PAGE, getmap
    hit.offset = extent["offset"] + VICTIM_PAGE
    hit.phys = int((DAX / "resource").read_text(), 0) + hit.offset
    return f"victim page at device offset {hit.offset:#x}, physical {hit.phys:#x}"


@check("inject", needs="setup")
def inject(state: State) -> str:
    hit.early = mapper("early", path(state, VICTIM), VICTIM_PAGE)
    hit.late = mapper("late", path(state, VICTIM), VICTIM_PAGE)
    reply = request(state.role, f"mce {hit.phys:#x}")
    assert reply.startswith("ok"), reply
    region = int(Path("/sys/bus/nd/devices/region0/resource").read_text(), 0)
    sector = (hit.phys - region) // 512

    def recorded() -> bool:
        for line in REGION_BADBLOCKS.read_text().splitlines():
            first, count = (int(x) for x in line.split()[:2])
            if first <= sector < first + count:
                return True
        return False

    wait_until(recorded, 60, f"sector {sector} in {REGION_BADBLOCKS}")
    return f"region0/badblocks: {REGION_BADBLOCKS.read_text().strip()}"


@check("early_kill_sigbus", needs="inject")
def early_kill_sigbus(state: State) -> str:
    assert hit.early is not None
    proc, mapped = hit.early
    out, _ = proc.communicate(timeout=120)
    info = json.loads(out.strip().splitlines()[-1])
    assert info["signal"] == 7, f"no SIGBUS: {info}"
    assert info["code"] == BUS_MCEERR_AO, f"si_code {info['code']}, not BUS_MCEERR_AO: {info}"
    addr, page = info["addr"], mapped["mapped"]
    where = "unknown"
    if page is not None:
        where = f"{page:#x}"
        if addr == page - page % (2 * MiB):
            where += ": si_addr is the start of its 2 MiB mapping"
        elif addr == page:
            where += ": si_addr is the page"
    return f"SIGBUS BUS_MCEERR_AO, si_addr {addr:#x}; the page is mapped at {where}"


@check("late_toucher", needs="inject")
def late_toucher(state: State) -> str:
    assert hit.late is not None
    proc, mapped = hit.late
    out, _ = proc.communicate("touch\n", timeout=120)
    if proc.returncode == -7:
        return "SIGBUS on touching the page again"
    assert proc.returncode == 0, f"exit {proc.returncode}: {out}"
    info = json.loads(out.strip().splitlines()[-1])
    same = info["touched"] == mapped["bytes"]
    return (
        "no signal: a process that did not ask for early kills touched the page again and "
        f"read {'the same bytes' if same else 'different bytes'} (device_dax maps it again)"
    )


@check("status_degraded", needs="inject")
def status_degraded(state: State) -> str:
    def degraded() -> tuple[int, dict] | None:
        code, info = status_json(state)
        return (code, info) if info.get("health", "ok") != "ok" else None

    code, info = wait_until(degraded, 60, "status to report the poisoned range", step=1)
    assert code == 3, f"status exit {code}"
    assert info["health"].startswith("degraded"), info["health"]
    files = [f for bad in info["poisoned"] for f in bad["files"]]
    assert any(f.endswith(VICTIM) for f in files), info["poisoned"]
    return f"{info['health']}: {info['poisoned']}"


@check("victim_eio", needs="status_degraded")
def victim_eio(state: State) -> str:
    whole = read_errno(path(state, VICTIM))
    page = read_errno(path(state, VICTIM), VICTIM_PAGE, PAGE)
    assert whole == errno.EIO, f"reading the whole victim: {whole}"
    assert page == errno.EIO, f"reading the poisoned page: {page}"
    elsewhere = read_errno(path(state, VICTIM), 6 * MiB, PAGE)
    return "EIO; a page of the same file 4 MiB away " + (
        "reads" if elsewhere is None else f"fails with {errno.errorcode[elsewhere]}"
    )


@check("open_mapped_refused", needs="status_degraded")
def open_mapped_refused(state: State) -> None:
    from famfs_py import open_mapped

    try:
        open_mapped(path(state, VICTIM), "r").close()
    except OSError as exc:
        assert exc.errno == errno.EIO, exc
    else:
        raise AssertionError("open_mapped of the poisoned file succeeded")


@check("others_intact", needs="status_degraded")
def others_intact(state: State) -> str:
    bad = [n for n, d in state.expected.items() if sha256(path(state, n)) != d]
    assert not bad, f"changed: {bad}"
    return f"{len(state.expected)} other files byte-exact"


@check("daemon_serves", needs="status_degraded")
def daemon_serves(state: State) -> None:
    fresh = path(state, "mce/after")
    cli("creat", "-s", "2m", fresh)
    data = os.urandom(4096)
    with open(fresh, "r+b") as f:
        f.write(data)
    with open(fresh, "rb") as f:
        assert f.read(4096) == data
    state.expected["mce/after"] = sha256(fresh)


@check("remount_knows", needs="status_degraded")
def remount_knows(state: State) -> str:
    cli("umount", state.mountpoint)
    started = time.monotonic()
    cli("mount", "--devdax", DEVICE, state.mountpoint)
    code, info = status_json(state)
    assert code == 3 and info["health"].startswith("degraded"), (code, info.get("health"))
    assert read_errno(path(state, VICTIM)) == errno.EIO, "the victim reads after a remount"
    bad = [n for n, d in state.expected.items() if sha256(path(state, n)) != d]
    assert not bad, f"changed: {bad}"
    return f"remounted in {time.monotonic() - started:.0f} s: {info['health']}"
