"""One host on a real kernel /dev/dax0.0 (device_dax on an emulated NVDIMM), on Debian 12's
kernel and on the newest Debian kernel: one boot each runs every check of
guest/inguest/one_host.py; each check is one test here."""

from __future__ import annotations

import pytest

from guest import runs
from guest.conftest import expect_check, expect_clean_boot
from guest.inguest import one_host

pytestmark = pytest.mark.guest

# checks known to fail, with why (a check listed here that passes simply passes)
XFAIL: dict[str, str] = {}


@pytest.fixture(scope="module", params=sorted(runs.SINGLE))
def boot(request, guest_boots):
    return guest_boots.get(request.param)


def test_boot_is_clean(boot):
    expect_clean_boot(boot)


@pytest.mark.parametrize("name", one_host.SCENARIO.names())
def test_one_host(boot, name):
    expect_check(boot, name, XFAIL.get(name))
