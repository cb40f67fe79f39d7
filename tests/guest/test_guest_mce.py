"""A machine check (QEMU monitor `mce`, SRAO) into one page of one file while the filesystem
is served, on Debian 12's kernel: same boot as its one-host checks (guest/inguest/mce.py).
(7.x behaves the same, checked by hand: add "mce" to runs.SINGLE["sid"]; it costs a remount.)"""

from __future__ import annotations

import pytest

from guest import runs
from guest.conftest import expect_check
from guest.inguest import mce

pytestmark = pytest.mark.guest

XFAIL: dict[str, str] = {}


BOOTS = [name for name, plan in runs.SINGLE.items() if "mce" in plan.scenarios]


@pytest.fixture(scope="module", params=BOOTS)
def boot(request, guest_boots):
    return guest_boots.get(request.param)


@pytest.mark.parametrize("name", mce.SCENARIO.names())
def test_machine_check(boot, name):
    expect_check(boot, name, XFAIL.get(name))
