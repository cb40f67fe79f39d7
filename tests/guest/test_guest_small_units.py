"""A filesystem of 4 KiB allocation units (mkfs --4k) on a real /dev/dax0.0, on the newest
Debian kernel, after its one-host checks (guest/inguest/small_units.py)."""

from __future__ import annotations

import pytest

from guest import runs
from guest.conftest import expect_check
from guest.inguest import small_units

pytestmark = pytest.mark.guest

XFAIL: dict[str, str] = {}

BOOTS = [name for name, plan in runs.SINGLE.items() if "small_units" in plan.scenarios]


@pytest.fixture(scope="module", params=BOOTS)
def boot(request, guest_boots):
    return guest_boots.get(request.param)


@pytest.mark.parametrize("name", small_units.SCENARIO.names())
def test_small_units(boot, name):
    expect_check(boot, name, XFAIL.get(name))
