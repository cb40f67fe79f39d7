"""One QEMU guest of the tier: an emulated NVDIMM backed by a host file, the host's "/" shared
read-only over 9p, an exchange directory shared read-write, and a QMP monitor.

The guest runs `<xfer>/<role>.sh` (written by the test) and powers off; its exit status comes
back in `<xfer>/<role>.rc`, its console through a pipe (kept in memory, in a log file, and
watched for lines a test waits on), its check results in `<xfer>/<role>.checks.jsonl`.
TCG only: KVM is unusable on this host (a nested PVM guest; QEMU aborts with -cpu host).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from guest.kernel import Kernel

REGION_ALIGN = 16 << 20  # an NVDIMM region must be a multiple of 16 MiB
# device byte 0 of /dev/dax0.0 in the backing file (namespace in devdax mode, --map=mem: the
# first 2 MiB hold the kernel's pfn/dax info block)
DAX_OFFSET = 0x200000
# a device of at least 4 GiB (mkfs refuses less) on a 16 MiB multiple: 4 GiB + 14 MiB of dax
BACKING_SIZE = 4112 << 20
STATUS_NO_REPORT = 125
STATUS_TIMEOUT = 124

# a software-recoverable action-optional (SRAO) memory error, as a patrol scrubber reports it:
# MCi_STATUS = VAL|UC|EN|MISCV|ADDRV|S, MCACOD 0xc0; MCG_STATUS = MCIP|RIPV;
# MCi_MISC = physical address mode, LSB 12 (one 4 KiB page)
MCE_SRAO = (0xBD000000000000C0, 0x5, 0x8C)


@dataclass(frozen=True)
class BootFiles:
    kernel: Kernel
    initramfs: Path

    @property
    def vmlinuz(self) -> Path:
        return self.kernel.vmlinuz


class GuestError(RuntimeError):
    pass


@dataclass
class GuestResult:
    role: str
    status: int
    console: str
    checks: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    console_log: Path | None = None
    request_errors: list[str] = field(default_factory=list)
    cpu_seconds: float = 0.0  # QEMU's CPU time (user + system): the cost, whatever the load

    def check(self, name: str) -> dict | None:
        for item in self.checks:
            if item["name"] == name:
                return item
        return None


def new_backing(path: Path, size: int = BACKING_SIZE) -> Path:
    """A sparse backing file for a fresh NVDIMM."""
    if size % REGION_ALIGN:
        raise ValueError(f"backing size {size} is not a multiple of 16 MiB")
    with open(path, "wb") as f:
        f.truncate(size)
    return path


class Guest:
    """A booted guest. `start()`, then `wait()`; `inject_mce()` while it runs."""

    def __init__(
        self,
        boot: BootFiles,
        backing: Path,
        xfer: Path,
        *,
        role: str = "main",
        system_uuid: str | None = None,
        systemd: bool = False,
        persist: bool = False,
        memory_gib: int = 1,
        timeout: float = 600.0,
        extra_append: tuple[str, ...] = (),
    ) -> None:
        self.boot = boot
        self.backing = backing
        self.xfer = xfer
        self.role = role
        self.system_uuid = system_uuid
        self.systemd = systemd
        self.persist = persist
        self.memory_gib = memory_gib
        self.timeout = timeout
        self.extra_append = extra_append
        self.console_log = xfer / f"{role}.console"
        self._lines: list[str] = []
        self._cond = threading.Condition()
        self._proc: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None
        self._sockdir = Path(tempfile.mkdtemp(prefix="famfs-guest-", dir="/run"))
        self.qmp_path = self._sockdir / "qmp"
        self._started = 0.0
        self.cpu_seconds = 0.0

    # -- the QEMU command -------------------------------------------------------------------
    def command(self) -> list[str]:
        size = self.backing.stat().st_size
        if size % REGION_ALIGN:
            raise GuestError(f"{self.backing}: {size} bytes, not a multiple of 16 MiB")
        # mitigations=off: page-table isolation and friends cost TCG dearly (each kernel
        # entry flushes its TLB); measured 1.6x faster Python start-up and imports
        append = ["console=ttyS0", "quiet", "panic=-1", "mitigations=off"]
        append.append(f"guest.role={self.role}")
        if self.system_uuid:
            append.append(f"guest.uuid={self.system_uuid}")
        if self.systemd:
            append += ["guest.init=systemd", "systemd.show_status=false"]
        if self.persist:
            append.append("guest.persist")
        append.extend(self.extra_append)
        max_mem = (self.memory_gib << 30) + size + (1 << 30)
        return [
            shutil.which("qemu-system-x86_64") or "qemu-system-x86_64",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
            "-serial",
            "stdio",
            "-machine",
            "pc,nvdimm=on,accel=tcg",
            # an Intel CPU model: the guest's AMD machine-check code panics on injected
            # uncorrected errors
            "-cpu",
            "max,vendor=GenuineIntel",
            "-smp",
            "1",
            "-m",
            f"{self.memory_gib}G,slots=2,maxmem={max_mem}",
            "-object",
            f"memory-backend-file,id=nvmem,share=on,mem-path={self.backing},size={size},align=2M",
            "-device",
            "nvdimm,id=nvdimm0,memdev=nvmem",
            "-virtfs",
            "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
            "-virtfs",
            f"local,path={self.xfer},mount_tag=xfer,security_model=none",
            "-qmp",
            f"unix:{self.qmp_path},server=on,wait=off",
            "-kernel",
            str(self.boot.vmlinuz),
            "-initrd",
            str(self.boot.initramfs),
            "-append",
            " ".join(append),
        ]

    # -- running ----------------------------------------------------------------------------
    def start(self) -> Guest:
        if not (self.xfer / f"{self.role}.sh").exists():
            raise GuestError(f"no command {self.xfer / self.role}.sh for the guest")
        for suffix in ("rc", "checks.jsonl"):
            (self.xfer / f"{self.role}.{suffix}").unlink(missing_ok=True)
        self._started = time.monotonic()
        self._proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read_console, daemon=True)
        self._reader.start()
        return self

    def _read_console(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        with open(self.console_log, "w", errors="replace") as log:
            for raw in self._proc.stdout:
                line = raw.decode(errors="replace").rstrip("\r\n")
                log.write(line + "\n")
                log.flush()
                with self._cond:
                    self._lines.append(line)
                    self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def console(self) -> str:
        with self._cond:
            return "\n".join(self._lines)

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def wait_for(self, pattern: str, timeout: float, start: int = 0) -> re.Match[str]:
        """The first console line from index `start` on matching `pattern`; GuestError if
        the guest ends or `timeout` passes first."""
        return self.wait_line(pattern, timeout, start)[0]

    def wait_line(self, pattern: str, timeout: float, start: int = 0) -> tuple[re.Match[str], int]:
        """Like `wait_for`, also returning the index of the line after the match."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        index = start
        with self._cond:
            while True:
                while index < len(self._lines):
                    match = regex.search(self._lines[index])
                    index += 1
                    if match:
                        return match, index
                ended = self._reader is not None and not self._reader.is_alive()
                left = deadline - time.monotonic()
                if ended or left <= 0:
                    what = "ended" if ended else f"did not print it within {timeout:.0f} s"
                    raise GuestError(f"guest {self.role} {what}: waited for /{pattern}/")
                self._cond.wait(left)

    def line_count(self) -> int:
        with self._cond:
            return len(self._lines)

    def wait(self) -> GuestResult:
        """Wait for the guest to power off (killing it at its timeout) and collect results."""
        assert self._proc is not None
        left = self.timeout - (time.monotonic() - self._started)
        pidfd = os.pidfd_open(self._proc.pid)
        try:
            ended, _, _ = select.select([pidfd], [], [], max(left, 0))
        finally:
            os.close(pidfd)
        timed_out = not ended
        if timed_out:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
        _, wait_status, usage = os.wait4(self._proc.pid, 0)
        self._proc.returncode = os.waitstatus_to_exitcode(wait_status)
        self.cpu_seconds = usage.ru_utime + usage.ru_stime
        if self._reader is not None:
            self._reader.join(timeout=10)
        status = self._status(timed_out)
        shutil.rmtree(self._sockdir, ignore_errors=True)
        return GuestResult(
            self.role,
            status,
            self.console,
            read_checks(self.xfer / f"{self.role}.checks.jsonl"),
            time.monotonic() - self._started,
            self.console_log,
            cpu_seconds=self.cpu_seconds,
        )

    def _status(self, timed_out: bool) -> int:
        if timed_out:
            return STATUS_TIMEOUT
        with contextlib.suppress(OSError, ValueError):
            return int((self.xfer / f"{self.role}.rc").read_text())
        found = re.findall(r"^guest-init: exit status (\d+)", self.console, re.M)
        return int(found[-1]) if found else STATUS_NO_REPORT

    def kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()

    # -- the monitor ------------------------------------------------------------------------
    def hmp(self, command: str, timeout: float = 20.0) -> str:
        """Run a human-monitor command through QMP; returns its output."""
        deadline = time.monotonic() + timeout
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(self.qmp_path))
            stream = sock.makefile("rwb")

            def send(message: dict) -> dict:
                stream.write(json.dumps(message).encode() + b"\n")
                stream.flush()
                while time.monotonic() < deadline:
                    reply = json.loads(stream.readline())
                    if "return" in reply or "error" in reply:
                        return reply
                raise GuestError(f"no QMP reply to {message}")

            json.loads(stream.readline())  # the greeting
            send({"execute": "qmp_capabilities"})
            reply = send(
                {"execute": "human-monitor-command", "arguments": {"command-line": command}}
            )
        if "error" in reply:
            raise GuestError(f"monitor command {command!r}: {reply['error']}")
        return str(reply["return"])

    def inject_mce(self, phys: int) -> str:
        """An SRAO machine check on every CPU (bank 9) for the page at guest physical
        address `phys`: the guest's memory-failure handling runs for it."""
        status, mcg, misc = MCE_SRAO
        return self.hmp(f"mce -b 0 9 {status:#x} {mcg:#x} {phys:#x} {misc:#x}")

    def __enter__(self) -> Guest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
        shutil.rmtree(self._sockdir, ignore_errors=True)


def read_checks(path: Path) -> list[dict]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            out.append(json.loads(line))
    return out
