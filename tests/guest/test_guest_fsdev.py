"""7.x: a device bound to fsdev_dax (famfs mode, no mmap) is refused by mkfs and mount with a
line that says which mode to switch to and how (guest/inguest/fsdev.py, in the sid boot)."""

from __future__ import annotations

import pytest

from guest.conftest import expect_check
from guest.inguest import fsdev

pytestmark = pytest.mark.guest

XFAIL: dict[str, str] = {}


BOOTS = ["sid"]


@pytest.fixture(scope="module")
def sid(guest_boots):
    return guest_boots.get("sid")


@pytest.mark.parametrize("name", fsdev.SCENARIO.names())
def test_fsdev_dax(sid, name):
    expect_check(sid, name, XFAIL.get(name))
