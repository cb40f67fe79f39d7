"""The service under a real systemd as PID 1 on a real /dev/dax0.0 (guest/inguest/service.py):
install, start (Type=notify), status line, journal priorities, a watchdog abort and restart,
a second unit on the same device, stop; then a power cycle with an fstab line mounts the
famfs at boot."""

from __future__ import annotations

import pytest

from guest.conftest import expect_check, expect_clean_boot
from guest.inguest import service

pytestmark = pytest.mark.guest

BOOTS = ["service"]
XFAIL: dict[str, str] = {}


@pytest.fixture(scope="module")
def boots(guest_boots):
    return guest_boots.get("service")


@pytest.mark.parametrize("which", ["first", "second"])
def test_boot_is_clean(boots, which):
    expect_clean_boot(boots[0] if which == "first" else boots[1])


@pytest.mark.parametrize("name", service.SERVICE.names())
def test_service(boots, name):
    expect_check(boots[0], name, XFAIL.get(name))


@pytest.mark.parametrize("name", service.AT_BOOT.names())
def test_after_power_cycle(boots, name):
    expect_check(boots[1], name, XFAIL.get(name))
