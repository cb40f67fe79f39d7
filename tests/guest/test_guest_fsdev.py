"""7.x: a device bound to fsdev_dax (famfs mode, no mmap) is refused by mkfs and mount with a
line that says which mode to switch to and how (guest/inguest/fsdev.py, in the sid boot)."""

from __future__ import annotations

import pytest

from guest.conftest import expect_check
from guest.inguest import fsdev

pytestmark = pytest.mark.guest

XFAIL: dict[str, str] = {
    "fsdev.advice_works": "Debian 12's daxctl (76) takes an fsdev_dax device for devdax: "
    "`daxctl reconfigure-device --mode=devdax dax0.0` says 'dax0.0 was already in devdax "
    "mode', exits 0 and leaves it bound to fsdev_dax (the advice's sysfs route works)",
}


BOOTS = ["sid"]


@pytest.fixture(scope="module")
def sid(guest_boots):
    return guest_boots.get("sid")


@pytest.mark.parametrize("name", fsdev.SCENARIO.names())
def test_fsdev_dax(sid, name):
    expect_check(sid, name, XFAIL.get(name))
