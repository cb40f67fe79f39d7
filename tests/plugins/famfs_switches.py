"""Test-only switches for famfs-py processes the tests start: crash points in the log append
and faults in FUSE handlers. They patch the library from outside (the library has no such
switches); sitecustomize.py in this directory installs them when their variables are set.

FAMFS_PY_TEST_CRASH_AT=STEP[:N]
    SIGKILL the process at STEP of its N-th log append (default the first), leaving device
    memory as a power cut there would: before-entry, mid-entry (half the entry written),
    after-entry (entry written, not committed), mid-header (next_seqnum bumped, next_index
    not) or after-header (committed).
FAMFS_PY_TEST_ANNOUNCE_CRASH=N
    SIGKILL the daemon at its N-th announcement of a change to the other hosts, after the
    record and the change itself are written and before the head says so (issue 23).
FAMFS_PY_TEST_DIE_AT_START=MESSAGE
    the daemon prints MESSAGE as its last words and exits before it can tell anyone whether
    the mount is ready (what a crash in startup looks like to `famfs-py mount`).
FAMFS_PY_TEST_FAULT=NAME[:sleep=SECONDS][,...]
    make FUSE handler NAME raise an unexpected exception (the daemon must answer EIO and go
    on), or with sleep=, block the event loop that long before answering (the watchdog must
    notice).
FAMFS_PY_TEST_READY_WAIT=SECONDS
    let `famfs-py mount` wait that long for its daemon to report (instead of 60 s): the guest
    tier's TCG guests on a loaded machine take longer than that to import pyfuse3 and trio.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

CRASH_ENV = "FAMFS_PY_TEST_CRASH_AT"
FAULT_ENV = "FAMFS_PY_TEST_FAULT"
DIE_ENV = "FAMFS_PY_TEST_DIE_AT_START"
ANNOUNCE_CRASH_ENV = "FAMFS_PY_TEST_ANNOUNCE_CRASH"
READY_WAIT_ENV = "FAMFS_PY_TEST_READY_WAIT"
CRASH_STEPS = ("before-entry", "mid-entry", "after-entry", "mid-header", "after-header")

log = logging.getLogger("famfs_switches")


def parse_crash(raw: str) -> tuple[str, int] | None:
    step, _, nth = raw.partition(":")
    if step not in CRASH_STEPS or not (nth or "1").isdigit():
        print(
            f"{CRASH_ENV}={raw!r} ignored: expected STEP[:N], STEP one of {CRASH_STEPS}",
            file=sys.stderr,
        )
        return None
    return step, int(nth or 1)


def parse_faults(raw: str) -> list[tuple[str, float | None]]:
    out = []
    for spec in filter(None, raw.split(",")):
        name, _, how = spec.partition(":")
        out.append((name, float(how.removeprefix("sleep=")) if how.startswith("sleep=") else None))
    return out


# -- patching a module when it is first imported ----------------------------------------------
class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs `patch(module)` right after `name` is imported, wherever the import comes from."""

    def __init__(self, name: str, patch: Callable[[Any], None]) -> None:
        self.name, self.patch = name, patch

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        loader, patch = spec.loader, self.patch

        class Patched(importlib.abc.Loader):
            def create_module(self, spec: Any) -> Any:
                return loader.create_module(spec)

            def exec_module(self, module: Any) -> None:
                loader.exec_module(module)
                patch(module)

        spec.loader = Patched()
        return spec


def _when_imported(name: str, patch: Callable[[Any], None]) -> None:
    if name in sys.modules:
        patch(sys.modules[name])
    else:
        sys.meta_path.insert(0, _AfterImport(name, patch))


# -- crash points -----------------------------------------------------------------------------
def _die(step: str) -> None:
    print(f"{CRASH_ENV}: killed at {step}", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def install_crash(step: str, nth: int) -> None:
    """The log writes through `Log.writes_class` (famfs_py.fs.log.LogWrites): its `entry`
    and `commit` are the two writes of an append; the N-th entry write, or the commit that
    follows it, is where the process dies as a power cut there would leave memory."""

    def patch(module: Any) -> None:
        appends = [0]

        class CrashingWrites(module.LogWrites):  # type: ignore[misc,name-defined]
            planned = False

            def entry(self, offset: int, raw: bytes) -> None:
                appends[0] += 1
                self.planned = appends[0] == nth
                if self.planned and step == "before-entry":
                    _die(step)
                if self.planned and step == "mid-entry":
                    self.mem.write(offset, raw[: len(raw) // 2])
                    _die(step)
                super().entry(offset, raw)
                if self.planned and step == "after-entry":
                    _die(step)

            def commit(self, offset: int, counters: bytes) -> None:
                if self.planned and step == "mid-header":
                    self.mem.write(offset, counters[:8])  # next_seqnum bumped, next_index not
                    _die(step)
                super().commit(offset, counters)
                if self.planned and step == "after-header":
                    _die(step)

        module.Log.writes_class = CrashingWrites

    _when_imported("famfs_py.fs.log", patch)


def install_announce_crash(nth: int) -> None:
    def patch(module: Any) -> None:
        original = module.Announcer.publish
        published = [0]

        def publish(self: Any) -> None:
            published[0] += 1
            if published[0] == nth:
                print(f"{ANNOUNCE_CRASH_ENV}: killed before the head", file=sys.stderr, flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
            original(self)

        module.Announcer.publish = publish

    _when_imported("famfs_py.fs.changes", patch)


# -- faults in FUSE handlers ------------------------------------------------------------------
def install_faults(faults: list[tuple[str, float | None]]) -> None:
    def patch(module: Any) -> None:
        cls = module.FamfsOperations
        for name, seconds in faults:
            handler = getattr(cls, name)
            if seconds is None:

                async def broken(*args: Any, _name: str = name) -> Any:
                    raise RuntimeError(f"{FAULT_ENV}: fault injected into {_name}")

                broken.__name__ = name
                setattr(cls, name, module.guarded(broken))
            else:

                async def stalled(
                    *args: Any, _handler: Any = handler, _s: float = seconds, _n: str = name
                ) -> Any:
                    log.warning("%s: %s blocks the event loop for %gs", FAULT_ENV, _n, _s)
                    time.sleep(_s)
                    return await _handler(*args)

                stalled.__name__ = name
                setattr(cls, name, stalled)

    _when_imported("famfs_py.daemon.operations", patch)


def install_death(message: str) -> None:
    def patch(module: Any) -> None:
        def run(self: Any) -> int:
            print(f"famfs-py mount: {message}", file=sys.stderr, flush=True)
            os._exit(9)

        module.Daemon.run = run

    _when_imported("famfs_py.daemon.mount", patch)


# -- the mount command's patience -------------------------------------------------------------
def install_ready_wait(seconds: float) -> None:
    def patch(module: Any) -> None:
        module.READY_WAIT = seconds

    _when_imported("famfs_py.cli.mount_cmd", patch)


def install_from_environment() -> None:
    crash = os.environ.get(CRASH_ENV)
    if crash:
        plan = parse_crash(crash)
        if plan is not None:
            install_crash(*plan)
    announce_crash = os.environ.get(ANNOUNCE_CRASH_ENV, "")
    if announce_crash.isdigit():
        install_announce_crash(int(announce_crash))
    faults = os.environ.get(FAULT_ENV)
    if faults:
        install_faults(parse_faults(faults))
    death = os.environ.get(DIE_ENV)
    if death:
        install_death(death)
    ready_wait = os.environ.get(READY_WAIT_ENV)
    if ready_wait:
        install_ready_wait(float(ready_wait))


def chain_sitecustomize(this_file: str) -> None:
    """Run the next sitecustomize on sys.path (Debian's python has one)."""
    here = os.path.dirname(os.path.abspath(this_file))
    others = [p for p in sys.path if os.path.abspath(p or ".") != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", others)
    if spec is not None and spec.loader is not None:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
