"""The tier's boots: what each one runs, the script the guest runs, and the host's side of
what a guest asks for while it runs (machine checks through the monitor).

A boot runs scenarios of `guest.inguest` in order in one guest; the host-side tests read its
check results. Every boot is made once per pytest session, however many tests read it.
"""

from __future__ import annotations

import compileall
import os
import re
import shlex
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from guest import bootfiles
from guest.machine import DAX_OFFSET, Guest, GuestError, GuestResult, new_backing

TESTS_DIR = Path(__file__).resolve().parent.parent
# the venv that runs pytest: the guest sees the host's "/" and so the same venv at this path
PYTHON = Path(sys.executable)
BOOT_TIMEOUT = 1200.0  # TCG on a shared 2-core machine: a loaded minute is slow
REQUEST = re.compile(r"^guest-request: (\S+) (\d+) (.*)$")


@dataclass(frozen=True)
class Plan:
    """One guest boot: a kernel flavour and the scenarios it runs, in order."""

    kernel: str
    scenarios: tuple[str, ...]
    role: str = "main"
    systemd: bool = False
    system_uuid: str | None = None
    persist: bool = False  # restore /xfer/persist.tar into the root before it boots

    @property
    def key(self) -> str:
        init = "-systemd" if self.systemd else ""
        return f"{self.kernel}{init}-{'-'.join(self.scenarios)}"


# the one-guest boots: the one-host checks on each kernel, then (same boot, same mount) the
# machine check on Debian 12's, the fsdev_dax (famfs mode) refusals on 7.x
SINGLE = {
    "stable": Plan("stable", ("one_host", "mce")),
    "sid": Plan("sid", ("one_host", "fsdev", "small_units")),
}


# two hosts on one memory: guest A (master) and guest B (--rw client), each its own system UUID
MASTER_UUID = "a0a0a0a0-1111-4222-8333-000000000a0a"
CLIENT_UUID = "b0b0b0b0-1111-4222-8333-000000000b0b"
TWO_HOSTS = (
    Plan("stable", ("two_hosts:MASTER",), role="A", system_uuid=MASTER_UUID),
    Plan("stable", ("two_hosts:CLIENT",), role="B", system_uuid=CLIENT_UUID),
)


# what every famfs-py process in a guest gets: the tests' switch plugin, with which `famfs-py
# mount` waits up to 10 minutes for its daemon (it gives up after 60 s; a TCG guest on a loaded
# machine can take longer than that to import pyfuse3 and trio)
GUEST_ENV = {
    "PYTHONPATH": f"{TESTS_DIR / 'plugins'}:{TESTS_DIR}",
    "FAMFS_PY_TEST_READY_WAIT": "600",
    "OPENBLAS_NUM_THREADS": "1",
}
# systemd as PID 1: the same for every unit, and mount units as patient as the command
SYSTEMD_CONF = (
    "[Manager]\n"
    + "DefaultEnvironment="
    + " ".join(f"{k}={v}" for k, v in GUEST_ENV.items())
    + "\nDefaultTimeoutStartSec=600\n"
)


def run_script(plan: Plan) -> str:
    """The guest's command: the scenarios, with the venv's python, logs kept in /xfer."""
    env = {**GUEST_ENV, "FAMFS_PY_LOG_DIR": f"/xfer/logs-{plan.role}"}
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    command = [str(PYTHON), "-m", "guest.inguest.run", plan.role, *plan.scenarios]
    return (
        "#!/bin/sh\n# written by tests/guest/runs.py\n"
        f"export {exports}\ncd /root\nexec {shlex.join(command)}\n"
    )


def prepare(plan: Plan, workdir: Path, backing: Path) -> Guest:
    """A guest for `plan`: `workdir/xfer` is its exchange directory (command, results,
    console, daemon logs); `backing` its NVDIMM's file (made, sparse, if missing)."""
    boot = bootfiles.prepare(plan.kernel)
    xfer = workdir / "xfer"
    xfer.mkdir(parents=True, exist_ok=True)
    (xfer / f"{plan.role}.sh").write_text(run_script(plan))
    if plan.systemd:
        (xfer / "system.conf").write_text(SYSTEMD_CONF)
    if not backing.exists():
        new_backing(backing)
    return Guest(
        boot,
        backing,
        xfer,
        role=plan.role,
        system_uuid=plan.system_uuid,
        systemd=plan.systemd,
        persist=plan.persist,
        timeout=BOOT_TIMEOUT,
    )


@dataclass
class RequestServer:
    """Answers a guest's `guest-request:` console lines while it runs."""

    guest: Guest
    handled: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def start(self) -> RequestServer:
        threading.Thread(target=self._serve, daemon=True).start()
        return self

    def _serve(self) -> None:
        seen = 0
        while True:
            try:
                match, seen = self.guest.wait_line(REQUEST.pattern, BOOT_TIMEOUT, seen)
            except GuestError:
                return
            role, number, what = match.groups()
            try:
                reply = self.answer(what)
            except Exception as exc:
                reply = f"error: {exc}"
                self.errors.append(f"{what}: {exc}")
            self.handled.append(what)
            (self.guest.xfer / f"{role}.reply.{number}").write_text(reply)

    def answer(self, what: str) -> str:
        words = what.split()
        if words[0] == "mce" and len(words) == 2:
            return "ok " + self.guest.inject_mce(int(words[1], 0))
        raise GuestError(f"unknown request {what!r}")


def precompile() -> None:
    """Byte-compile what the guest imports from this checkout: the guest's root is read-only
    to it, and compiling there costs seconds per process under TCG."""
    for directory in (
        TESTS_DIR.parent / "famfs_py",
        TESTS_DIR.parent / "mkfs",
        TESTS_DIR / "guest",
    ):
        compileall.compile_dir(directory, quiet=1)


def backing_path(name: str) -> Path:
    """A backing file in RAM (/dev/shm), named for this process; the caller removes it."""
    return Path("/dev/shm") / f"famfs-py-guest-{os.getpid()}-{name}.img"


def boot(plan: Plan, workdir: Path) -> GuestResult:
    """Boot `plan` once on a fresh backing file, serve its requests, return its results."""
    return boot_in_turn((plan,), workdir)[0]


def boot_pair(plans: tuple[Plan, Plan], workdir: Path, backing: Path) -> list[GuestResult]:
    """Boot two guests on one backing file, sharing one exchange directory. The second
    starts once the first runs its command: by then the first boot has written the NVDIMM's
    devdax info block, which the second must find. `backing` is kept (the caller checks
    and removes it)."""
    first, second = (prepare(plan, workdir, backing) for plan in plans)
    with first, second:
        first.start()
        try:
            first.wait_for(rf"^guest-init: running /xfer/{first.role}\.sh", BOOT_TIMEOUT)
        except GuestError:
            pass  # it ended early: its result says why; the second still runs
        second.start()
        return [first.wait(), second.wait()]


@dataclass
class PairResult:
    master: GuestResult
    client: GuestResult
    image: Path | None  # the device's bytes after both guests ended (None: not copied)
    xfer: Path


def boot_two_hosts(workdir: Path) -> PairResult:
    backing = backing_path("two-hosts")
    backing.unlink(missing_ok=True)
    try:
        master, client = boot_pair(TWO_HOSTS, workdir, backing)
        image = copy_device_bytes(backing, backing_path("two-hosts-device"))
    finally:
        backing.unlink(missing_ok=True)
    return PairResult(master, client, image, workdir / "xfer")


# the service under systemd as PID 1; then a power cycle (the same memory, the root rebuilt
# but for what the first boot kept in /xfer/persist.tar: the installed files, an fstab line)
SERVICE = (
    Plan("stable", ("service:SERVICE",), role="first", systemd=True),
    Plan("stable", ("service:AT_BOOT",), role="second", systemd=True, persist=True),
)


def boot_in_turn(plans: tuple[Plan, ...], workdir: Path) -> list[GuestResult]:
    """Boot `plans` one after the other on one backing file and one exchange directory."""
    backing = backing_path(plans[0].key)
    backing.unlink(missing_ok=True)
    results = []
    try:
        for plan in plans:
            with prepare(plan, workdir, backing) as guest:
                guest.start()
                server = RequestServer(guest).start()
                result = guest.wait()
                result.request_errors = server.errors
                results.append(result)
    finally:
        backing.unlink(missing_ok=True)
    return results


# every boot of the tier by name: what the tests ask the session for
BOOTS: dict[str, Callable[[Path], object]] = {
    "stable": lambda workdir: boot(SINGLE["stable"], workdir),
    "sid": lambda workdir: boot(SINGLE["sid"], workdir),
    "two-hosts": boot_two_hosts,
    "service": lambda workdir: boot_in_turn(SERVICE, workdir),
}


def remove_leftovers() -> None:
    """Backing files this process made and did not remove (an interrupted run)."""
    for path in Path("/dev/shm").glob(f"famfs-py-guest-{os.getpid()}-*.img"):
        path.unlink(missing_ok=True)


def copy_device_bytes(backing: Path, out: Path, offset: int = DAX_OFFSET) -> Path:
    """The device's bytes, [offset, end) of the backing file, as a file of their own (holes
    kept): a host opens that as an emulated device (famfs-py has no backing offset)."""
    with open(backing, "rb") as src, open(out, "wb") as dst:
        size = os.fstat(src.fileno()).st_size
        dst.truncate(size - offset)
        position = offset
        while position < size:
            try:
                start = os.lseek(src.fileno(), position, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(src.fileno(), start, os.SEEK_HOLE)
            while start < end:
                done = os.copy_file_range(
                    src.fileno(), dst.fileno(), end - start, start, start - offset
                )
                if done <= 0:
                    raise OSError(f"copy_file_range stopped at {start:#x} of {backing}")
                start += done
            position = end
    return out
