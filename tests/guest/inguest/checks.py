"""Named checks that run inside the guest, and what they share: the CLI, hashes, deadlines.

A scenario is an ordered list of checks. Each check is reported as it ends, by name, on the
console (`check one_host.mkfs: ok (1.2 s)`) and as a JSON line in /xfer/<role>.checks.jsonl,
which the host-side test reads, so a failure names the check that failed. A check whose
`needs` failed is skipped, saying which one it needed.

This module imports only the standard library: the host-side tests import the scenarios to
learn the check names.
"""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

XFER = Path("/xfer")
BIN = Path(sys.executable).parent  # the host's venv, seen in the guest at the same path
DEVICE = "/dev/dax0.0"
HOLDER_LOCK = "/run/famfs-py/holders/dax0.0/holder.lock"  # the claim of DEVICE


@dataclass
class State:
    """What the scenarios of one boot share: the mount and what its files must hold."""

    role: str
    mountpoint: Path = Path("/mnt/famfs")
    expected: dict[str, str] = field(default_factory=dict)  # relative path -> sha256
    seeds: dict[str, int] = field(default_factory=dict)  # files still holding a seeded pattern


class Skip(Exception):
    """Raised by a check that does not apply here (reported as skipped, with the reason)."""


@dataclass
class Check:
    name: str
    run: Callable[..., str | None]
    needs: tuple[str, ...] = ()


@dataclass
class Scenario:
    """An ordered list of checks, registered with `@scenario.check(name)`."""

    name: str
    checks: list[Check] = field(default_factory=list)

    def check(self, name: str, needs: tuple[str, ...] | str = ()) -> Callable:
        needs = (needs,) if isinstance(needs, str) else needs

        def register(fn: Callable[..., str | None]) -> Callable[..., str | None]:
            self.checks.append(Check(name, fn, needs))
            return fn

        return register

    def names(self) -> list[str]:
        return [f"{self.name}.{c.name}" for c in self.checks]

    def run(self, report: Report, *args: object) -> None:
        for check in self.checks:
            missing = [n for n in check.needs if report.outcome(f"{self.name}.{n}") != "ok"]
            full = f"{self.name}.{check.name}"
            if missing:
                report.record(full, "skipped", f"needs {', '.join(missing)}", 0.0)
                continue
            start = time.monotonic()
            try:
                detail = check.run(*args)
                outcome = "ok"
            except Skip as exc:
                outcome, detail = "skipped", str(exc)
            except Exception as exc:
                outcome = "failed"
                frames = traceback.extract_tb(exc.__traceback__)[-3:]
                where = "; ".join(f"{Path(f.filename).name}:{f.lineno}" for f in frames)
                detail = f"{type(exc).__name__}: {exc} [{where}]"
            report.record(full, outcome, detail, time.monotonic() - start)


class Report:
    """Check results as they come: console lines and /xfer/<role>.checks.jsonl."""

    def __init__(self, role: str) -> None:
        self.path = XFER / f"{role}.checks.jsonl"
        self.outcomes: dict[str, str] = {}

    def outcome(self, name: str) -> str | None:
        return self.outcomes.get(name)

    def record(self, name: str, outcome: str, detail: str | None, seconds: float) -> None:
        self.outcomes[name] = outcome
        line = {"name": name, "outcome": outcome, "detail": detail, "seconds": round(seconds, 2)}
        with open(self.path, "a") as f:
            f.write(json.dumps(line) + "\n")
        text = f"check {name}: {outcome} ({seconds:.1f} s)"
        if detail:
            text += f": {detail}"
        print(text, flush=True)

    @property
    def failed(self) -> bool:
        return any(o == "failed" for o in self.outcomes.values())


# -- helpers the scenarios share ---------------------------------------------------------------
@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str

    @property
    def out(self) -> str:
        return self.stdout + self.stderr


def cli(*args: object, prog: str = "famfs-py", ok: bool = True, timeout: float = 300) -> Run:
    """Run a famfs-py command of the host's venv; with `ok`, fail unless it exits 0."""
    proc = subprocess.run(
        [str(BIN / prog), *map(str, args)], capture_output=True, text=True, timeout=timeout
    )
    result = Run(proc.returncode, proc.stdout, proc.stderr)
    if ok and proc.returncode != 0:
        raise AssertionError(
            f"{prog} {' '.join(map(str, args))}: exit {proc.returncode}: "
            f"{result.out.strip()[-600:]}"
        )
    return result


def sh(command: str, ok: bool = True, timeout: float = 120) -> Run:
    proc = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=timeout)
    result = Run(proc.returncode, proc.stdout, proc.stderr)
    if ok and proc.returncode != 0:
        raise AssertionError(f"{command}: exit {proc.returncode}: {result.out.strip()[-600:]}")
    return result


def one_line_error(result: Run, *words: str) -> str:
    """The single stderr line of a refused command (no traceback), checked for `words`."""
    assert result.returncode != 0, f"exit 0 (expected a refusal): {result.out.strip()}"
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.out, result.out
    assert len(lines) == 1, f"not one line: {result.stderr!r}"
    for word in words:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
    return lines[0]


def sha256(path: Path | str, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def wait_until(predicate: Callable[[], object], timeout: float, what: str, step: float = 0.1):
    """Poll `predicate` until it returns a true value (returned) or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(step)


def holder_released() -> bool:
    """No process holds the real device's claim (its lock file is free, or absent)."""
    try:
        fd = os.open(HOLDER_LOCK, os.O_RDONLY)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def is_mounted(mountpoint: Path | str) -> bool:
    real = os.path.realpath(mountpoint)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == real for line in f)


def pattern(seed: int, size: int) -> bytes:
    """Bytes no other seed gives (a file's expected content, cheap to make under TCG)."""
    block = hashlib.sha256(f"famfs-py guest {seed}".encode()).digest() * 128  # 4 KiB
    whole, rest = divmod(size, len(block))
    return block * whole + block[:rest]


_requests = itertools.count(1)


def request(role: str, what: str, timeout: float = 60) -> str:
    """Ask the host for something only it can do to this machine (`mce ADDRESS`: a machine
    check through the QEMU monitor) and wait for its reply in /xfer/<role>.reply.N."""
    number = next(_requests)
    reply = XFER / f"{role}.reply.{number}"
    print(f"guest-request: {role} {number} {what}", flush=True)
    wait_until(reply.exists, timeout, f"the host's reply to {what!r}")
    return reply.read_text()
