"""Fixtures of the guest tier: each boot is made once per session, on first use."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from guest import runs
from guest.machine import STATUS_NO_REPORT, STATUS_TIMEOUT, GuestResult

KERNEL_TROUBLE = re.compile(r"(BUG:|Oops|general protection fault|Kernel panic|Call Trace)")


@pytest.fixture(scope="session")
def guest_boot(tmp_path_factory) -> Callable[[runs.Plan], GuestResult]:
    made: dict[str, GuestResult] = {}

    def get(plan: runs.Plan) -> GuestResult:
        if plan.key not in made:
            made[plan.key] = runs.boot(plan, tmp_path_factory.mktemp(plan.key))
        return made[plan.key]

    return get


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
