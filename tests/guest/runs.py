"""The tier's boots: what each one runs, the script the guest runs, and the host's side of
what a guest asks for while it runs (machine checks through the monitor).

A boot runs scenarios of `guest.inguest` in order in one guest; the host-side tests read its
check results. Every boot is made once per pytest session, however many tests read it.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from guest import bootfiles
from guest.machine import Guest, GuestError, GuestResult, new_backing

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

    @property
    def key(self) -> str:
        init = "-systemd" if self.systemd else ""
        return f"{self.kernel}{init}-{'-'.join(self.scenarios)}"


# the one-guest boots: the one-host checks on each kernel, then (same boot, same mount) the
# machine check, and on 7.x the fsdev_dax (famfs mode) refusals
SINGLE = {
    "stable": Plan("stable", ("one_host", "mce")),
    "sid": Plan("sid", ("one_host", "fsdev", "mce")),
}


def run_script(plan: Plan, extra_env: dict[str, str] | None = None) -> str:
    """The guest's command: the scenarios, with the venv's python, logs kept in /xfer."""
    env = {
        "PYTHONPATH": str(TESTS_DIR),
        "FAMFS_PY_LOG_DIR": f"/xfer/logs-{plan.role}",
        "OPENBLAS_NUM_THREADS": "1",
        **(extra_env or {}),
    }
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    command = [str(PYTHON), "-m", "guest.inguest.run", plan.role, *plan.scenarios]
    return (
        "#!/bin/sh\n# written by tests/guest/runs.py\n"
        f"export {exports}\ncd /root\nexec {shlex.join(command)}\n"
    )


def prepare(
    plan: Plan, workdir: Path, backing: Path, extra_env: dict[str, str] | None = None
) -> Guest:
    """A guest for `plan`: `workdir/xfer` is its exchange directory (command, results,
    console, daemon logs); `backing` its NVDIMM's file (made, sparse, if missing)."""
    boot = bootfiles.prepare(plan.kernel)
    xfer = workdir / "xfer"
    xfer.mkdir(parents=True, exist_ok=True)
    (xfer / f"{plan.role}.sh").write_text(run_script(plan, extra_env))
    if not backing.exists():
        new_backing(backing)
    return Guest(
        boot,
        backing,
        xfer,
        role=plan.role,
        system_uuid=plan.system_uuid,
        systemd=plan.systemd,
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


def backing_path(name: str) -> Path:
    """A backing file in RAM (/dev/shm), named for this process; the caller removes it."""
    return Path("/dev/shm") / f"famfs-py-guest-{os.getpid()}-{name}.img"


def boot(plan: Plan, workdir: Path, extra_env: dict[str, str] | None = None) -> GuestResult:
    """Boot `plan` once on a fresh backing file, serve its requests, return its results."""
    backing = backing_path(plan.key)
    backing.unlink(missing_ok=True)
    try:
        with prepare(plan, workdir, backing, extra_env) as guest:
            guest.start()
            server = RequestServer(guest).start()
            result = guest.wait()
            result.request_errors = server.errors
            return result
    finally:
        backing.unlink(missing_ok=True)
