"""Fixtures of the guest tier. Every boot the selected tests need is started in the
background when the first of them asks (at most $FAMFS_PY_GUEST_JOBS at once, default 2:
a TCG guest keeps one host core busy), each made once per session; a test waits only for
its own boot."""

from __future__ import annotations

import os
import re
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from guest import runs
from guest.machine import STATUS_NO_REPORT, STATUS_TIMEOUT, GuestResult

KERNEL_TROUBLE = re.compile(r"(BUG:|Oops|general protection fault|Kernel panic|Call Trace)")
JOBS_ENV = "FAMFS_PY_GUEST_JOBS"
KEEP_ENV = "FAMFS_PY_GUEST_KEEP"  # a directory for the boots' exchange directories


def _boots_of(item: pytest.Item) -> list[str]:
    """The boots a test reads: its `boot` fixture's parameter, else its module's BOOTS."""
    callspec = getattr(item, "callspec", None)
    if callspec is not None and "boot" in callspec.params:
        return [callspec.params["boot"]]
    return list(getattr(item.module, "BOOTS", ()))


@pytest.hookimpl(trylast=True)  # after -k/-m deselection: only the boots still wanted
def pytest_collection_modifyitems(session, config, items) -> None:
    wanted: list[str] = []
    for item in items:
        for name in _boots_of(item):
            if name not in wanted:
                wanted.append(name)
    config._famfs_guest_boots = wanted  # type: ignore[attr-defined]


class Boots:
    """The session's boots, run in a pool in the order the tests need them."""

    def __init__(self, wanted: list[str], tmp_path_factory, config) -> None:
        self.wanted = wanted
        self.config = config
        self.tmp = tmp_path_factory
        self.jobs = int(os.environ.get(JOBS_ENV, "2"))
        self.pool = ThreadPoolExecutor(max_workers=self.jobs)
        self.futures: dict[str, Future] = {}

    def _start(self, name: str) -> Future:
        if name not in self.futures:
            keep = os.environ.get(KEEP_ENV)
            if keep:  # somewhere other pytest runs do not clean up
                workdir = Path(tempfile.mkdtemp(prefix=f"guest-{name}-", dir=keep))
            else:
                workdir = self.tmp.mktemp(f"guest-{name}")
            self.futures[name] = self.pool.submit(self._boot, name, workdir)
        return self.futures[name]

    def _boot(self, name: str, workdir) -> object:
        started = time.monotonic()
        results = runs.BOOTS[name](workdir)
        _record_timing(self.config, name, results, time.monotonic() - started)
        return results

    def get(self, name: str):
        for other in self.wanted:  # the first request starts every wanted boot
            self._start(other)
        return self._start(name).result()

    def close(self) -> None:
        for future in self.futures.values():
            future.cancel()
        self.pool.shutdown(wait=True)
        runs.remove_leftovers()


@pytest.fixture(scope="session")
def guest_boots(request, tmp_path_factory):
    runs.precompile()
    started = time.monotonic()
    boots = Boots(
        getattr(request.config, "_famfs_guest_boots", []), tmp_path_factory, request.config
    )
    yield boots
    boots.close()
    if boots.futures:
        lines = request.config.__dict__.setdefault("_famfs_guest_timing", [])
        seconds = time.monotonic() - started
        lines.append(f"all boots: {seconds:.0f} s wall ({boots.jobs} at a time)")


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """What each boot cost: wall time and QEMU's CPU time, and the tier's wall time."""
    boots = getattr(config, "_famfs_guest_timing", None)
    if not boots:
        return
    terminalreporter.write_sep("-", "guest tier")
    for line in boots:
        terminalreporter.write_line(line)


def _record_timing(config, name: str, results: object, seconds: float) -> None:
    lines = config.__dict__.setdefault("_famfs_guest_timing", [])
    if isinstance(results, runs.PairResult):
        results = [results.master, results.client]
    if isinstance(results, GuestResult):
        results = [results]
    parts = [
        f"{r.role}: {r.seconds:.0f} s wall, {r.cpu_seconds:.0f} s CPU, exit {r.status}"
        for r in results  # type: ignore[union-attr]
    ]
    lines.append(f"boot {name}: {seconds:.0f} s ({'; '.join(parts)})")


def _where(result: GuestResult) -> str:
    return f"(guest {result.role} exit {result.status}; console {result.console_log})"


def expect_check(result: GuestResult, name: str, xfail: str | None = None) -> None:
    """Pass, fail, skip or xfail as the guest's check `name` did."""
    item = result.check(name)
    if item is None:
        tail = "\n".join(result.console.splitlines()[-25:])
        pytest.fail(f"{name} was not reported {_where(result)}; console ends:\n{tail}")
    if item["outcome"] == "skipped":
        pytest.skip(f"{name}: {item['detail']}")
    if item["outcome"] != "ok":
        if xfail:
            pytest.xfail(f"{xfail}: {item['detail']}")
        pytest.fail(f"{name}: {item['detail']} {_where(result)}", pytrace=False)


def expect_clean_boot(result: GuestResult) -> None:
    """The guest ran its command to the end and its kernel had no oops."""
    assert result.status not in (STATUS_TIMEOUT, STATUS_NO_REPORT), _where(result)
    assert not result.request_errors, result.request_errors
    trouble = [line for line in result.console.splitlines() if KERNEL_TROUBLE.search(line)]
    assert not trouble, f"kernel trouble {_where(result)}: {trouble[:10]}"
