"""A machine check (QEMU monitor `mce`, SRAO) into one page of one file while the filesystem
is served, on both kernels: same boot as the one-host checks (guest/inguest/mce.py)."""

from __future__ import annotations

import pytest

from guest import runs
from guest.conftest import expect_check
from guest.inguest import mce

pytestmark = pytest.mark.guest

XFAIL: dict[str, str] = {}


@pytest.fixture(scope="module", params=sorted(runs.SINGLE))
def boot(request, guest_boots):
    return guest_boots.get(request.param)


@pytest.mark.parametrize("name", mce.SCENARIO.names())
def test_machine_check(boot, name):
    expect_check(boot, name, XFAIL.get(name))
