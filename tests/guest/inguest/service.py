"""The service under a real systemd (PID 1 in this guest), on a real /dev/dax0.0, checked the
way an operator would: install, start, status, journal, a watchdog abort and restart, stop,
a second unit on the same device; then (SERVICE, first boot) an fstab line and the installed
files are kept for a power cycle, after which (AT_BOOT, second boot) systemd mounts the
famfs at boot.

The stall: the tests' switch plugin (tests/plugins, put on the daemon's PYTHONPATH by a unit
drop-in with FAMFS_PY_TEST_FAULT=statfs:sleep=N) blocks the daemon's event loop in the next
statfs; the drop-in is removed and the unit restarted once the watchdog has done its work.
"""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
import threading
import time
from pathlib import Path

from guest.inguest.checks import (
    DEVICE,
    XFER,
    Scenario,
    State,
    cli,
    holder_released,
    is_mounted,
    pattern,
    sh,
    sha256,
    wait_until,
)

SERVICE = Scenario("service")
AT_BOOT = Scenario("at_boot")
REPO = Path(__file__).resolve().parents[3]
PLUGINS = REPO / "tests" / "plugins"  # the test-only switches (famfs_switches)
UNIT = "famfs-py@dev-dax0.0.service"
CONF = Path("/etc/famfs-py/dev-dax0.0.conf")
DROP_IN = Path(f"/etc/systemd/system/{UNIT}.d/test.conf")
WATCHDOG_SEC = 20  # well above a loaded TCG guest's hiccups
FSTAB_LINE = "/dev/dax0.0 /mnt/famfs fuse.famfs-py defaults,nofail,devdax 0 0\n"
SECOND = Path("/mnt/second")
SECOND_UNIT = "mnt-second.mount"
# what the power cycle keeps: what install-service installed (and the famfs group it made),
# the fstab line, the hashes
PERSISTED = (
    "etc/systemd/system/famfs-py@.service",
    "usr/sbin/mount.fuse.famfs-py",
    "etc/udev/rules.d/90-famfs-py-dax.rules",
    "etc/famfs-py",
    "etc/fstab",
    "etc/group",
    "etc/gshadow",
)


def write_drop_in(stall: bool) -> None:
    """The test's drop-in: a short watchdog, a start as patient as a TCG guest on a loaded
    machine needs (the unit's 120 s may not do), and, with `stall`, the statfs stall."""
    text = f"[Service]\nWatchdogSec={WATCHDOG_SEC}\nRestartSec=1\nTimeoutStartSec=600\n"
    if stall:
        text += f"Environment=PYTHONPATH={PLUGINS} FAMFS_PY_TEST_FAULT=statfs:sleep=600\n"
    DROP_IN.parent.mkdir(parents=True, exist_ok=True)
    DROP_IN.write_text(text)


def systemctl(*args: str, ok: bool = True, timeout: float = 300):
    return sh("systemctl " + " ".join(args), ok=ok, timeout=timeout)


def prop(unit: str, name: str) -> str:
    return systemctl("show", "-p", name, "--value", unit).stdout.strip()


def journal(unit: str, *args: str) -> list[dict]:
    out = sh(f"journalctl --no-pager -o json -u {unit} " + " ".join(args)).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def messages(entries: list[dict]) -> list[str]:
    return [str(e.get("MESSAGE", "")) for e in entries]


def served(state: State) -> bool:
    bad = [n for n, d in state.expected.items() if sha256(state.mountpoint / n) != d]
    assert not bad, f"differ: {bad}"
    return True


@SERVICE.check("install")
def install(state: State) -> str:
    before = prop("dev-dax0.0.device", "ActiveState")
    assert before != "active", "dev-dax0.0.device exists before the rule is installed"
    started = time.monotonic()
    out = sh(f"{REPO}/.venv/bin/famfs-py install-service").stdout.strip()
    installed = time.monotonic() - started
    for path in (
        "/etc/systemd/system/famfs-py@.service",
        "/sbin/mount.fuse.famfs-py",
        "/etc/udev/rules.d/90-famfs-py-dax.rules",
    ):
        assert os.path.lexists(path), f"{path} is missing"
    # the stall used by watchdog_restart: armed from the first start on, fired by a statfs
    write_drop_in(stall=True)
    systemctl("daemon-reload")
    sh("udevadm settle --timeout=60")
    wait_until(
        lambda: prop("dev-dax0.0.device", "ActiveState") == "active",
        60,
        "dev-dax0.0.device to be active",
    )
    unit_after = time.monotonic() - started
    last = out.splitlines()[-1]
    return f"install-service {installed:.0f} s, device unit {unit_after:.0f} s: {last}"


@SERVICE.check("start_returns_when_mounted", needs="install")
def start(state: State) -> str:
    cli("--devdax", DEVICE, prog="mkfs.famfs-py")
    CONF.write_text(f"FAMFS_PY_MOUNTPOINT={state.mountpoint}\nFAMFS_PY_OPTIONS=--devdax\n")
    started = time.monotonic()
    systemctl("start", UNIT)
    seconds = time.monotonic() - started
    # Type=notify: the start returned, so the mount answers now, not later
    assert is_mounted(state.mountpoint), "systemctl start returned before the mount"
    os.stat(state.mountpoint)  # not statfs: that is the stall (see watchdog_restart)
    info = json.loads(cli("status", "--json", state.mountpoint).stdout)
    assert info["role"] == "master" and info["health"] == "ok", info
    cli("creat", "-s", "3m", "-r", "-S", "5", state.mountpoint / "seeded")
    cli("creat", "-s", "2m", state.mountpoint / "written")
    with open(state.mountpoint / "written", "r+b") as f:  # famfs files never shrink: no O_TRUNC
        f.write(pattern(6, 2 << 20))
    for name in ("seeded", "written"):
        state.expected[name] = sha256(state.mountpoint / name)
    return f"systemctl start returned after {seconds:.1f} s with the mount answering"


@SERVICE.check("status_line", needs="start_returns_when_mounted")
def status_line(state: State) -> str:
    def line() -> str | None:
        text = systemctl("status", "--no-pager", UNIT, ok=False).stdout
        for row in text.splitlines():
            if "Status:" in row and "2 files" in row:
                return row.strip()
        return None

    found = wait_until(line, 30, "systemctl status to show the STATUS line with 2 files", 1)
    assert 'Status: "mounted: master, 2 files' in found and "health ok" in found, found
    return found


@SERVICE.check("journal_priorities", needs="start_returns_when_mounted")
def journal_priorities(state: State) -> str:
    entries = journal(UNIT)
    by_text = {}
    for entry in entries:
        by_text.setdefault(str(entry.get("MESSAGE")), entry.get("PRIORITY"))
    warning = [m for m in by_text if "is in devdax mode" in m]
    claimed = [m for m in by_text if "claimed /dev/dax0.0" in m]
    assert warning and by_text[warning[0]] == "4", f"devdax warning: {warning} {by_text}"
    assert claimed and by_text[claimed[0]] == "6", f"claim line: {claimed}"
    filtered = messages(journal(UNIT, "-p", "warning"))
    assert any("is in devdax mode" in m for m in filtered), filtered
    assert not any("claimed /dev/dax0.0" in m for m in filtered), filtered
    return f"{len(entries)} journal lines; {warning[0]!r} at priority 4"


@SERVICE.check("watchdog_restart", needs="start_returns_when_mounted")
def watchdog_restart(state: State) -> str:
    first = prop(UNIT, "MainPID")
    restarts = int(prop(UNIT, "NRestarts") or 0)
    # the next statfs blocks the daemon's event loop: no more watchdog pings
    stuck = threading.Thread(target=lambda: _statvfs(state.mountpoint), daemon=True)
    stuck.start()
    wait_until(
        lambda: int(prop(UNIT, "NRestarts") or 0) > restarts and prop(UNIT, "MainPID") != first,
        WATCHDOG_SEC + 240,
        "systemd to restart the stalled daemon",
        step=1,
    )
    wait_until(lambda: prop(UNIT, "ActiveState") == "active", 240, "the restarted unit", 1)
    served(state)
    lines = messages(journal(UNIT))
    assert any("Watchdog timeout" in m for m in lines), "no watchdog timeout in the journal"
    cleaned = [m for m in lines if "cleaned up the stale mount" in m]
    assert cleaned, "the restart did not clean up the stale mount first"
    assert any("statfs blocks the event loop" in m for m in lines), "the stall never happened"
    second = prop(UNIT, "MainPID")
    write_drop_in(stall=False)  # disarm: the checks that follow get a daemon without it
    systemctl("daemon-reload")
    systemctl("restart", UNIT)
    return f"{cleaned[-1]}; daemon {first} -> {second}"


def _statvfs(path: Path) -> None:
    try:
        os.statvfs(path)
    except OSError:
        pass  # ENOTCONN once the daemon is killed


@SERVICE.check("second_unit_fails_cleanly", needs="start_returns_when_mounted")
def second_unit(state: State) -> str:
    if prop(UNIT, "ActiveState") != "active":
        systemctl("start", UNIT)
    SECOND.mkdir(parents=True, exist_ok=True)
    with open("/etc/fstab", "a") as f:
        f.write(f"/dev/dax0.0 {SECOND} fuse.famfs-py noauto,devdax 0 0\n")
    systemctl("daemon-reload")
    result = systemctl("start", SECOND_UNIT, ok=False)
    assert result.returncode != 0, "a second mount of the device started"
    assert not is_mounted(SECOND), "half-mounted"
    lines = messages(journal(SECOND_UNIT))
    busy = [m for m in lines if "busy" in m]
    assert busy, f"no EBUSY in the journal of {SECOND_UNIT}: {lines[-5:]}"
    assert prop(UNIT, "ActiveState") == "active" and served(state)
    _drop_fstab_line(str(SECOND))
    systemctl("daemon-reload")
    return busy[0]


def _drop_fstab_line(mountpoint: str) -> None:
    lines = Path("/etc/fstab").read_text().splitlines(keepends=True)
    Path("/etc/fstab").write_text("".join(x for x in lines if f" {mountpoint} " not in x))


@SERVICE.check("stop_unmounts_and_releases", needs="start_returns_when_mounted")
def stop(state: State) -> str:
    systemctl("stop", UNIT)
    assert not is_mounted(state.mountpoint), "still mounted after stop"
    assert holder_released(), "the device is still claimed after stop"
    result = prop(UNIT, "ActiveState")
    assert result == "inactive", f"ActiveState {result}"
    return f"inactive, Result={prop(UNIT, 'Result')}"


@SERVICE.check("keep_for_power_cycle", needs="install")
def keep_for_power_cycle(state: State) -> str:
    with open("/etc/fstab", "a") as f:
        f.write(FSTAB_LINE)
    (XFER / "expected.json").write_text(json.dumps(state.expected))
    with tarfile.open(XFER / "persist.tar", "w") as tar:
        for name in PERSISTED:
            tar.add(f"/{name}", arcname=name)
    return f"fstab: {FSTAB_LINE.strip()}"


@AT_BOOT.check("mounted_at_boot")
def mounted_at_boot(state: State) -> str:
    expected = json.loads((XFER / "expected.json").read_text())
    state.expected.update(expected)
    wait_until(lambda: is_mounted(state.mountpoint), 180, "the fstab mount", step=1)
    unit = "mnt-famfs.mount"
    assert prop(unit, "ActiveState") == "active", prop(unit, "ActiveState")
    assert prop("dev-dax0.0.device", "ActiveState") == "active"
    served(state)
    since = subprocess.run(
        ["systemctl", "show", "-p", "ActiveEnterTimestampMonotonic", "--value", unit],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return f"{unit} active (at {int(since or 0) / 1e6:.1f} s of boot), files byte-exact"


@AT_BOOT.check("umount", needs="mounted_at_boot")
def at_boot_umount(state: State) -> None:
    sh(f"umount {state.mountpoint}")
    wait_until(holder_released, 60, "the claim's release after umount")
    assert not is_mounted(state.mountpoint)
