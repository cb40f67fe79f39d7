"""7.x: a device bound to fsdev_dax (famfs mode, no mmap) is refused by mkfs and mount with a
line that says which mode to switch to and how (guest/inguest/fsdev.py, in the sid boot)."""

from __future__ import annotations

import pytest

from guest import runs
from guest.conftest import expect_check
from guest.inguest import fsdev

pytestmark = pytest.mark.guest

XFAIL: dict[str, str] = {}


@pytest.fixture(scope="module")
def boot(guest_boot):
    return guest_boot(runs.SINGLE["sid"])


@pytest.mark.parametrize("name", fsdev.SCENARIO.names())
def test_fsdev_dax(boot, name):
    expect_check(boot, name, XFAIL.get(name))
