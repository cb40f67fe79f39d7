"""famfs-py as a service: the unit passes systemd-analyze; the unit's own commands, run the
way systemd runs them, speak sd_notify (READY=1 once the mount answers, STATUS=, WATCHDOG=1
from the event loop, STOPPING=1) and the journal's line format; a stale mount is cleaned by
the pre-start step; mount(8), umount(8) and fstab lines go through the mount helper.

There is no running systemd here: the tests play its part (a notify socket, the unit's
environment and capability bounding set) with real processes and real FUSE mounts.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import (
    BIN,
    assert_no_traceback,
    is_mounted,
    mount_source,
    plugin_env,
    wait_until,
)

from famfs_py import service as packaged
from famfs_py.dax import holder
from famfs_py.dax.device import device_in_root

TEMPLATE = packaged.UNIT_TEMPLATE
HELPER_LINK = Path("/sbin/mount.fuse.famfs-py")
WATCHDOG_USEC = 200_000  # pings every 0.1 s
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d")
# settings that give a service its own mount or network namespace, another user, or a device
# allow-list (systemd.exec(5)); any of them would break a FUSE daemon's mount for the host
NAMESPACING_SETTINGS = {
    "PrivateTmp",
    "PrivateDevices",
    "PrivateMounts",
    "PrivateNetwork",
    "PrivateUsers",
    "ProtectSystem",
    "ProtectHome",
    "ReadOnlyPaths",
    "ReadWritePaths",
    "InaccessiblePaths",
    "TemporaryFileSystem",
    "BindPaths",
    "BindReadOnlyPaths",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectKernelLogs",
    "ProtectControlGroups",
    "ProtectHostname",
    "ProtectClock",
    "ProtectProc",
    "ProcSubset",
    "MountAPIVFS",
    "RootDirectory",
    "RootImage",
    "DynamicUser",
    "DeviceAllow",
    "DevicePolicy",
    "User",
}


@pytest.fixture
def fresh(host):
    host.ok("dax", "create", "dax0.0", "--size", "4g")
    host.ok("mkfs", "dax0.0")
    return host


def _claimed(host) -> bool:
    return holder.holder_info(device_in_root("dax0.0", host.root)) is not None


def _wait(predicate, timeout: float = 10.0) -> bool:
    wait_until(predicate, timeout)
    return True


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


# -- the installed unit ----------------------------------------------------------------------
@pytest.fixture
def installed(tmp_path: Path) -> dict[str, Path]:
    """`famfs-py install-service` run into a scratch tree, with the famfs-py under test."""
    dirs = {name: tmp_path / "inst" / name for name in ("unit", "sbin", "udev", "conf")}
    options = [f"--{name}-dir={path}" for name, path in dirs.items()]
    result = subprocess.run(
        [BIN / "famfs-py", "install-service", *options],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    dirs["options"] = options  # type: ignore[assignment]
    return dirs


def _instance(device: Path) -> tuple[str, str]:
    """The unit instance for a device path and what %f gives back, as systemd computes them."""
    if not shutil.which("systemd-escape"):
        return str(device).strip("/").replace("/", "-"), str(device)
    instance = subprocess.run(
        ["systemd-escape", "--path", str(device)], capture_output=True, text=True, check=True
    ).stdout.strip()
    path = subprocess.run(
        ["systemd-escape", "--unescape", "--path", instance],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return instance, "/" + path.lstrip("/")


def _unit_settings(unit: Path, key: str) -> list[str]:
    return [
        line.split("=", 1)[1].strip()
        for line in unit.read_text().splitlines()
        if line.startswith(f"{key}=")
    ]


def _expand(command: str, specifiers: dict[str, str], env: dict[str, str]) -> list[str]:
    """A unit's command line as systemd expands it: %-specifiers, `${VAR}` as one word and a
    word that is just `$VAR` split on whitespace (systemd.service(5), "Command lines")."""
    for spec, value in specifiers.items():
        command = command.replace(f"%{spec}", value)
    argv: list[str] = []
    for word in shlex.split(command.lstrip("-@+!:")):
        whole = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
        if whole:
            argv += env.get(whole.group(1), "").split()
        else:
            argv.append(
                re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env.get(m[1], ""), word)
            )
    return argv


def _hardening(unit: Path) -> list[str]:
    """setpriv applying the unit's NoNewPrivileges= and CapabilityBoundingSet= (the parts of
    its hardening that a process outside systemd can take on)."""
    if not shutil.which("setpriv"):
        return []
    prefix = ["setpriv", "--inh-caps=-all"]
    if _unit_settings(unit, "NoNewPrivileges") == ["yes"]:
        prefix.append("--no-new-privs")
    caps = " ".join(_unit_settings(unit, "CapabilityBoundingSet")).split()
    if caps:
        keep = ",".join("+" + c.removeprefix("CAP_").lower() for c in caps)
        prefix.append(f"--bounding-set=-all,{keep}")
    return prefix


class NotifySocket:
    """The service manager's end of sd_notify: a datagram socket, abstract or a path."""

    def __init__(self, directory: Path, abstract: bool) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"famfs-py-test/{uuid.uuid4().hex}"
            self.sock.bind("\0" + name)
            self.address = "@" + name
        else:
            path = directory / "notify.sock"
            self.sock.bind(str(path))
            self.address = str(path)
        self.received: list[tuple[float, list[str]]] = []

    def receive(self, timeout: float) -> tuple[float, list[str]] | None:
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(4096)
        except TimeoutError:
            return None
        message = (time.monotonic(), data.decode().split("\n"))
        self.received.append(message)
        return message

    def wait_for(
        self, line_start: str, timeout: float = 20.0, proc: subprocess.Popen | None = None
    ) -> tuple[float, list[str]]:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            message = self.receive(min(left, 0.5))
            if message and any(line.startswith(line_start) for line in message[1]):
                return message
            if message is None and proc is not None and proc.poll() is not None:
                raise AssertionError(f"the daemon exited ({proc.returncode}): {self.received}")
        raise AssertionError(f"no {line_start} within {timeout}s; got {self.received}")

    def collect(self, seconds: float) -> list[tuple[float, list[str]]]:
        start = len(self.received)
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.receive(left)
        return self.received[start:]

    def lines(self) -> list[str]:
        """Every line received so far, including what is still queued on the socket."""
        while self.receive(0.05) is not None:
            pass
        return [line for _, message in self.received for line in message]

    def close(self) -> None:
        self.sock.close()


class Service:
    """famfs-py@<device>.service started the way systemd starts it: ExecStartPre= then
    ExecStart= from the installed unit, with its environment, NOTIFY_SOCKET, the journal as
    stderr, and its capability bounding set."""

    def __init__(self, unit: Path, host, device: Path, mountpoint: Path, tmp_path: Path) -> None:
        self.unit = unit
        self.host = host
        self.mountpoint = mountpoint
        self.instance, self.device_path = _instance(device)
        self.journal = tmp_path / f"journal-{uuid.uuid4().hex[:8]}.txt"
        self.proc: subprocess.Popen[bytes] | None = None

    def env(self, notify: NotifySocket | None, extra: dict[str, str]) -> dict[str, str]:
        env = {**plugin_env(self.host.env), "FAMFS_PY_MOUNTPOINT": str(self.mountpoint)}
        env["FAMFS_PY_OPTIONS"] = "--status-interval 0.2"
        env.pop("FAMFS_PY_DAX_ROOT")  # the instance names the device node itself
        for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM"):
            env.pop(name, None)
        if notify is not None:
            env["NOTIFY_SOCKET"] = notify.address
        return {**env, **extra}

    def commands(self, key: str, env: dict[str, str]) -> list[list[str]]:
        specifiers = {"f": self.device_path, "i": self.instance}
        return [_expand(c, specifiers, env) for c in _unit_settings(self.unit, key)]

    def pre_start(self, **extra: str) -> list[subprocess.CompletedProcess[str]]:
        env = self.env(None, extra)
        return [
            subprocess.run(
                [*_hardening(self.unit), *argv], env=env, capture_output=True, text=True, timeout=60
            )
            for argv in self.commands("ExecStartPre", env)
        ]

    def start(
        self, notify: NotifySocket | None, pre_start: bool = True, **extra: str
    ) -> subprocess.Popen[bytes]:
        if pre_start:
            for result in self.pre_start(**extra):
                assert result.returncode == 0, result.stdout + result.stderr
        env = self.env(notify, extra)
        (argv,) = self.commands("ExecStart", env)
        with open(self.journal, "ab") as journal:
            self.proc = subprocess.Popen(
                [*_hardening(self.unit), *argv],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=journal,
                stderr=journal,
            )
        return self.proc

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)

    def journal_text(self) -> str:
        return self.journal.read_text(errors="replace") if self.journal.exists() else ""

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if is_mounted(self.mountpoint):
            subprocess.run(["fusermount3", "-u", "-z", str(self.mountpoint)], capture_output=True)


@pytest.fixture
def service(installed, fresh, tmp_path) -> Iterator[Service]:
    mountpoint = tmp_path / "mnt"
    svc = Service(installed["unit"] / TEMPLATE, fresh, fresh.node(), mountpoint, tmp_path)
    yield svc
    svc.cleanup()
    journal = svc.journal_text()
    assert "Traceback" not in journal, journal


@pytest.fixture(params=["abstract", "path"])
def notify(request, tmp_path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path, abstract=request.param == "abstract")
    yield sock
    sock.close()


@pytest.fixture
def abstract_notify(tmp_path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path, abstract=True)
    yield sock
    sock.close()


def _assert_journal_format(text: str) -> None:
    lines = [line for line in text.splitlines() if line]
    assert lines, "the daemon logged nothing"
    for line in lines:
        assert re.match(r"<[0-7]>", line), f"no priority prefix: {line!r}\n{text}"
        assert not TIMESTAMP.search(line), f"a timestamp (the journal adds its own): {line!r}"


# -- the unit files --------------------------------------------------------------------------
@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_units_pass_systemd_analyze_verify(installed, tmp_path):
    unit_dir = installed["unit"]
    template = unit_dir / TEMPLATE
    for device in ("/dev/dax0.0", "/run/famfs-py/emul/dev/dax1.0"):
        instance, _ = _instance(Path(device))
        unit = unit_dir / f"famfs-py@{instance}.service"
        shutil.copy(template, unit)
        result = subprocess.run(
            ["systemd-analyze", "verify", "--man=no", str(unit)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        report = (result.stdout + result.stderr).strip()
        assert result.returncode == 0 and report == "", f"{unit.name}:\n{report}"


def test_install_puts_the_unit_helper_and_rule_in_place_and_uninstall_removes_them(installed):
    unit = (installed["unit"] / TEMPLATE).read_text()
    assert f"ExecStart={BIN}/famfs-py mount --systemd " in unit
    assert "/usr/local/bin" not in unit
    helper = installed["sbin"] / "mount.fuse.famfs-py"
    assert os.readlink(helper) == str(BIN / "mount.fuse.famfs-py")
    rule = (installed["udev"] / "90-famfs-py-dax.rules").read_text()
    assert 'GROUP="famfs", MODE="0660"' in rule  # the device to the group that may map it
    assert "FAMFS_PY_MOUNTPOINT=" in (installed["conf"] / "example.conf").read_text()
    result = subprocess.run(
        [BIN / "famfs-py", "install-service", "--uninstall", *installed["options"]],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert not (installed["unit"] / TEMPLATE).exists() and not os.path.lexists(helper)
    assert (installed["conf"] / "example.conf").exists()  # the settings stay


def test_install_service_reports_a_directory_it_cannot_write_in_one_line(tmp_path):
    if os.geteuid() == 0:
        blocked = tmp_path / "file"
        blocked.write_text("")  # a directory path that runs through a regular file
        unit_dir = blocked / "units"
    else:
        unit_dir = Path("/etc/systemd/system")
    result = subprocess.run(
        [
            BIN / "famfs-py",
            "install-service",
            f"--unit-dir={unit_dir}",
            f"--sbin-dir={tmp_path}/s",
            f"--udev-dir={tmp_path}/u",
            f"--conf-dir={tmp_path}/c",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result
    assert "cannot write" in result.stderr and "Traceback" not in result.stderr


def test_the_packaged_files_are_where_install_service_says():
    result = subprocess.run(
        [BIN / "famfs-py", "install-service", "--files"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    shown = [Path(line) for line in result.stdout.splitlines()]
    assert [p.name for p in shown] == [TEMPLATE, packaged.UDEV_RULE, packaged.EXAMPLE_CONF]
    assert all(p.is_file() for p in shown)
    assert shown[0].read_text() == packaged.path(TEMPLATE).read_text()


def test_the_unit_keeps_fuse_reachable():
    """No setting that gives the service its own mount namespace (its mount would stay
    invisible to the host), network namespace (the control socket is abstract) or device
    allow-list (/dev/fuse and the dax device must stay open to it)."""
    settings = {
        line.split("=", 1)[0]
        for line in packaged.path(TEMPLATE).read_text().splitlines()
        if "=" in line and not line.startswith("#")
    }
    assert not settings & NAMESPACING_SETTINGS
    assert {"Type", "WatchdogSec", "Restart", "ExecStartPre", "NoNewPrivileges"} <= settings


# -- sd_notify -------------------------------------------------------------------------------
def test_ready_comes_once_the_mount_answers_then_status_watchdog_and_stopping(
    service, notify, fresh
):
    proc = service.start(notify, WATCHDOG_USEC=str(WATCHDOG_USEC))
    _, ready = notify.wait_for("READY=1", proc=service.proc)
    mounted, listing = is_mounted(service.mountpoint), os.listdir(service.mountpoint)
    assert mounted and listing == [".meta"], "READY=1 came before the mount answered"
    before = [line for _, m in notify.received[:-1] for line in m]
    assert set(before) <= {"WATCHDOG=1"}, before
    assert "STATUS=mounted: master, 0 files, 0 directories, log 0/" in "\n".join(ready)
    assert ready[-1].endswith("health ok")

    fresh.ok("creat", "-s", "1m", service.mountpoint / "f")
    _, status = notify.wait_for("STATUS=mounted: master, 1 files", timeout=5)
    assert "READY=1" not in status

    pings = [t for t, m in notify.collect(1.0) if "WATCHDOG=1" in m]
    assert len(pings) >= 5, pings
    assert max(b - a for a, b in itertools.pairwise(pings)) < 0.5

    cap_bounding = Path(f"/proc/{proc.pid}/status").read_text()
    if _hardening(service.unit):  # the unit's bounding set applied: CAP_SYS_ADMIN and few more
        bounding = int(re.search(r"CapBnd:\s*([0-9a-f]+)", cap_bounding)[1], 16)
        assert bounding & (1 << 21) and not bounding & (1 << 12), hex(bounding)  # no NET_ADMIN

    assert service.stop() == 0
    assert "STOPPING=1" in notify.lines()
    assert not is_mounted(service.mountpoint)
    assert _wait(lambda: not _claimed(fresh))
    journal = service.journal_text()
    _assert_journal_format(journal)
    assert "<6>famfs_py.daemon.readiness: ready: master" in journal


def test_no_watchdog_pings_for_another_process(service, abstract_notify):
    service.start(abstract_notify, WATCHDOG_USEC=str(WATCHDOG_USEC), WATCHDOG_PID=str(os.getpid()))
    abstract_notify.wait_for("READY=1", proc=service.proc)
    later = abstract_notify.collect(0.6)
    assert all("WATCHDOG=1" not in m for _, m in abstract_notify.received), later
    assert service.stop() == 0


def test_a_blocked_event_loop_stops_the_watchdog_pings(service, abstract_notify):
    service.start(
        abstract_notify,
        WATCHDOG_USEC=str(WATCHDOG_USEC),
        FAMFS_PY_TEST_FAULT="statfs:sleep=1.5",
    )
    abstract_notify.wait_for("READY=1", proc=service.proc)
    assert any("WATCHDOG=1" in m for _, m in abstract_notify.collect(0.4))
    done: list[float] = []
    blocked_at = time.monotonic()
    caller = threading.Thread(
        target=lambda: (os.statvfs(service.mountpoint), done.append(time.monotonic()))
    )
    caller.start()
    abstract_notify.collect(2.2)
    caller.join(timeout=10)
    assert done, "statfs never returned"
    unblocked_at = done[0]
    assert unblocked_at - blocked_at >= 1.4
    pings = [t for t, m in abstract_notify.received if "WATCHDOG=1" in m]
    during = [t for t in pings if blocked_at + 0.25 < t < unblocked_at - 0.05]
    after = [t for t in pings if t > unblocked_at]
    assert during == [], f"pings while the loop was blocked: {during}"
    assert len(after) >= 3, f"the pings did not come back: {pings}"
    assert service.stop() == 0
    assert "blocks the event loop" in service.journal_text()


def test_a_failed_start_says_why_in_status_and_the_journal(installed, host, tmp_path):
    host.ok("dax", "create", "dax0.0", "--size", "4g")  # no famfs on it
    (tmp_path / "mnt").mkdir()
    svc = Service(installed["unit"] / TEMPLATE, host, host.node(), tmp_path / "mnt", tmp_path)
    notify = NotifySocket(tmp_path, abstract=True)
    try:
        proc = svc.start(notify, pre_start=False)
        assert proc.wait(timeout=30) == 1
        lines = notify.lines()
        assert "READY=1" not in lines
        failed = [line for line in lines if line.startswith("STATUS=failed: ")]
        assert failed and "no valid famfs superblock" in failed[0], lines
        journal = svc.journal_text()
        assert re.search(r"^<3>famfs-py mount: .*no valid famfs superblock", journal, re.M)
        assert not is_mounted(tmp_path / "mnt") and not _claimed(host)
        _assert_journal_format(journal)
        assert "Traceback" not in journal
    finally:
        svc.cleanup()
        notify.close()


def test_a_missing_mount_point_setting_is_a_usage_error(service, abstract_notify):
    results = service.pre_start(FAMFS_PY_MOUNTPOINT="")
    assert results[0].returncode == 2
    assert "set FAMFS_PY_MOUNTPOINT" in results[0].stderr
    proc = service.start(abstract_notify, pre_start=False, FAMFS_PY_MOUNTPOINT="")
    assert proc.wait(timeout=30) == 2
    assert "set FAMFS_PY_MOUNTPOINT" in service.journal_text()


@pytest.mark.parametrize("journal", [True, False])
def test_foreground_logs_for_the_journal_only_when_stderr_is_the_journal(fresh, tmp_path, journal):
    mp = tmp_path / "m"
    mp.mkdir()
    log = tmp_path / "stderr.txt"
    log.touch()
    st = os.stat(log) if journal else os.stat("/dev/null")
    env = {**os.environ, **fresh.env, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
    with open(log, "ab") as err:
        proc = subprocess.Popen(
            [BIN / "famfs-py", "mount", "--foreground", "dax0.0", mp], env=env, stderr=err
        )
    try:
        assert _wait(lambda: "mounted (" in log.read_text()), log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    text = log.read_text()
    if journal:
        _assert_journal_format(text)
        assert "<6>famfs-py mount: mounted (master" in text
    else:
        assert TIMESTAMP.search(text) and not re.search(r"^<\d>", text, re.M), text


# -- the pre-start step ----------------------------------------------------------------------
def test_the_pre_start_step_cleans_a_stale_mount_and_the_service_starts_again(
    service, abstract_notify, fresh
):
    first = service.start(abstract_notify)
    abstract_notify.wait_for("READY=1", proc=service.proc)
    fresh.ok("mkdir", service.mountpoint / "kept")
    first.kill()  # a crash: the mount stays, its daemon is gone
    first.wait()
    assert is_mounted(service.mountpoint)
    with pytest.raises(OSError):
        os.listdir(service.mountpoint)
    results = service.pre_start()
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    assert "cleaned up the stale mount" in results[0].stdout
    assert not is_mounted(service.mountpoint)

    service.start(abstract_notify)
    abstract_notify.wait_for("READY=1", proc=service.proc)
    assert (service.mountpoint / "kept").is_dir()
    assert service.stop() == 0


def test_the_pre_start_step_succeeds_on_nothing_and_leaves_a_live_mount_alone(
    service, fresh, mounts
):
    results = service.pre_start()
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    assert "nothing mounted" in results[0].stdout
    mp = mounts.mount(fresh, service.mountpoint)
    result = fresh.cli("umount", "--if-stale", mp)
    assert result.returncode == 1 and "not stale" in result.stderr, result.out
    assert_no_traceback(result)
    assert is_mounted(mp) and os.listdir(mp) == [".meta"]


# -- mount(8), umount(8), fstab --------------------------------------------------------------
@pytest.fixture
def helper_link() -> Iterator[Path]:
    """/sbin/mount.fuse.famfs-py -> this checkout's helper, for this test only."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("needs root and mount(8)")
    if os.path.lexists(HELPER_LINK):
        pytest.skip(f"{HELPER_LINK} is installed already; not touching it")
    os.symlink(BIN / "mount.fuse.famfs-py", HELPER_LINK)
    try:
        yield HELPER_LINK
    finally:
        HELPER_LINK.unlink(missing_ok=True)


def _daemon_pid(mounts, mp: Path, output: str) -> int:
    pid = int(output.split("daemon pid ")[1].split(",")[0])
    mounts.made.append((mp, pid))  # unmounted and killed at teardown whatever happens
    return pid


def _run(*argv: str | Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], env=env, capture_output=True, text=True, timeout=60
    )


def test_mount_t_fuse_famfs_py_and_umount(helper_link, fresh, mounts, tmp_path):
    mp = tmp_path / "mnt"
    mp.mkdir()
    env = {**os.environ, "FAMFS_PY_LOG_DIR": str(mounts.log_dir)}
    options = (
        f"root={fresh.root},system_uuid={fresh.system_uuid},cache=never,"
        "defaults,nofail,_netdev,x-systemd.automount,x-systemd.device-timeout=5"
    )
    result = _run("mount", "-t", "fuse.famfs-py", fresh.node(), mp, "-o", options, env=env)
    assert result.returncode == 0, result.stdout + result.stderr + mounts.logs()
    pid = _daemon_pid(mounts, mp, result.stdout)
    status = json.loads(fresh.ok("status", "--json", mp).stdout)
    assert status["role"] == "master" and status["cache"] == "never"
    assert status["writable_data"]  # the master's; `rw` from mount(8) asked for nothing
    with open("/proc/self/mountinfo") as f:  # the device's name, though mount(8) resolved
        assert any(f" {mp} " in line and " /dev/dax0.0 " in line for line in f)  # the node

    result = _run("umount", mp, env=env)
    assert result.returncode == 0, result.stderr
    assert not is_mounted(mp)
    assert _wait(lambda: _gone(pid)) and _wait(lambda: not _claimed(fresh))


def test_mount_t_fuse_famfs_py_refuses_unknown_options(helper_link, fresh, mounts, tmp_path):
    mp = tmp_path / "mnt"
    mp.mkdir()
    env = {**os.environ, **fresh.env, "FAMFS_PY_LOG_DIR": str(mounts.log_dir)}
    result = _run("mount", "-t", "fuse.famfs-py", fresh.node(), mp, "-o", "bogus=1", env=env)
    assert result.returncode != 0
    assert "unknown mount option -o bogus=1" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not is_mounted(mp) and not _claimed(fresh)


def test_an_fstab_line_mounts(helper_link, fresh, mounts, tmp_path):
    mp = tmp_path / "mnt"
    mp.mkdir()
    fstab = tmp_path / "fstab"
    fstab.write_text(
        "# emulated devices: the node's path, and the simulated host's identity\n"
        f"{fresh.node()} {mp} fuse.famfs-py "
        f"defaults,nofail,root={fresh.root},system_uuid={fresh.system_uuid} 0 0\n"
    )
    env = {**os.environ, "FAMFS_PY_LOG_DIR": str(mounts.log_dir)}
    result = _run("mount", "--fstab", fstab, mp, env=env)
    assert result.returncode == 0, result.stdout + result.stderr + mounts.logs()
    pid = _daemon_pid(mounts, mp, result.stdout)
    assert os.listdir(mp) == [".meta"]
    assert _run("umount", mp, env=env).returncode == 0
    assert _wait(lambda: _gone(pid))

    generator = Path("/usr/lib/systemd/system-generators/systemd-fstab-generator")
    if generator.exists() and shutil.which("systemd-analyze"):  # what systemd makes of it
        out = tmp_path / "generated"
        out.mkdir()
        gen_env = {**os.environ, "SYSTEMD_FSTAB": str(fstab), "SYSTEMD_LOG_LEVEL": "err"}
        subprocess.run([generator, out, out, out], env=gen_env, check=True, timeout=30)
        (unit,) = out.glob("*.mount")
        assert "Type=fuse.famfs-py" in unit.read_text()
        verify = _run("systemd-analyze", "verify", "--man=no", unit, env=os.environ.copy())
        assert verify.returncode == 0 and not (verify.stdout + verify.stderr).strip(), verify


def test_mount_fuse3_runs_famfs_py_when_the_helper_is_missing(fresh, mounts, tmp_path):
    """Without /sbin/mount.fuse.famfs-py, mount(8) runs mount.fuse3, which runs the program
    named by the subtype (`famfs-py`) on mount's own PATH."""
    on_path = Path("/usr/local/bin/famfs-py")
    if os.geteuid() != 0 or not shutil.which("mount.fuse3"):
        pytest.skip("needs root and mount.fuse3")
    if os.path.lexists(HELPER_LINK) or os.path.lexists(on_path):
        pytest.skip(f"{HELPER_LINK} or {on_path} is installed already; not touching them")
    mp = tmp_path / "mnt"
    mp.mkdir()
    env = {**os.environ, **fresh.env, "FAMFS_PY_LOG_DIR": str(mounts.log_dir)}
    os.symlink(BIN / "famfs-py", on_path)
    try:
        result = _run("mount", "-t", "fuse.famfs-py", fresh.node(), mp, "-o", "nofail", env=env)
    finally:
        on_path.unlink()
    assert result.returncode == 0, result.stdout + result.stderr + mounts.logs()
    pid = _daemon_pid(mounts, mp, result.stdout)
    with open("/proc/self/mountinfo") as f:  # mount.fuse3's dev,suid were not applied
        (line,) = [line for line in f if f" {mp} " in line]
    assert "nosuid" in line and "nodev" in line
    assert _run("umount", mp, env=env).returncode == 0
    assert _wait(lambda: _gone(pid))


def test_the_guest_tiers_fstab_and_service_mounts_of_dev_dax(fresh, mounts, tmp_path):
    """What the guest tier mounts on a real /dev/dax0.0 (tests/guest/inguest/service.py's
    fstab lines, the unit's `mount --systemd $FAMFS_PY_OPTIONS /dev/dax0.0`, one_host's
    `mount --devdax`), here with source /dev/dax0.0 naming the emulated host's device: the
    options parse, it mounts, and /proc/mounts shows the source as given."""
    helper = "mount.fuse.famfs-py"
    mp = tmp_path / "m"
    mp.mkdir()
    # what mount(8) hands the helper for `defaults,nofail,devdax` and `noauto,devdax`
    for fstab in ("rw,defaults,nofail,devdax", "rw,noauto,devdax"):
        checked = fresh.cli("/dev/dax0.0", mp, "-f", "-o", fstab, prog=helper)
        assert checked.returncode == 0, checked.out
        assert_no_traceback(checked)
    assert not is_mounted(mp) and not _claimed(fresh)

    env = {"FAMFS_PY_LOG_DIR": str(mounts.log_dir)}
    helped = fresh.cli("/dev/dax0.0", mp, "-o", "rw,nofail,devdax", prog=helper, env=env)
    mounts.made.append((mp, None))
    assert helped.returncode == 0, helped.out + mounts.logs()
    assert mount_source(mp) == "/dev/dax0.0"
    fresh.ok("umount", mp)
    assert not is_mounted(mp) and _wait(lambda: not _claimed(fresh))

    served = mounts.mount(fresh, tmp_path / "s", "--devdax", device="/dev/dax0.0")
    assert mount_source(served) == "/dev/dax0.0"
    pid = mounts.made[-1][1]
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # a crash; the unit's ExecStartPre then cleans up
    assert _wait(lambda: _gone(pid))
    cleaned = fresh.ok("umount", "--if-stale", served)
    assert "cleaned up the stale mount" in cleaned.stdout, cleaned.out
    assert not is_mounted(served) and not _claimed(fresh)


def test_the_helper_checks_options_without_mounting(fresh, tmp_path):
    helper = "mount.fuse.famfs-py"
    mp = tmp_path / "m"
    mp.mkdir()
    ok = fresh.cli(fresh.node(), mp, "-f", "-n", "-o", "rw,cache=never,client_rw", prog=helper)
    assert ok.returncode == 0, ok.out
    assert not is_mounted(mp) and not _claimed(fresh)
    bad = fresh.cli(fresh.node(), mp, "-f", "-o", "rw,bogus", prog=helper)
    assert bad.returncode == 2 and "unknown mount option -o bogus" in bad.stderr
    sloppy = fresh.cli(fresh.node(), mp, "-f", "-s", "-o", "bogus", prog=helper)
    assert sloppy.returncode == 0 and "ignoring unknown mount option bogus" in sloppy.stderr
    other = fresh.cli(fresh.node(), mp, "-t", "fuse.sshfs", prog=helper)
    assert other.returncode == 2 and "fuse.famfs-py only" in other.stderr
    for result in (ok, bad, sloppy, other):
        assert_no_traceback(result)
    # famfs-py knows mount.fuse3's call by the dev/suid it always appends, and nothing else
    typo = fresh.cli("mout", "dax0.0", mp)
    assert typo.returncode == 2 and "unknown command" in typo.stderr
