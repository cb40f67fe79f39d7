"""The holder claim (fs_dax_get / fs_put_dax / notify_failure) on real emulated devices."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from helpers import GiB

from famfs_py.dax import emulated, failure_delivery, holder
from famfs_py.dax.device import device_in_root


@pytest.fixture
def device(host):
    return emulated.create("dax0.0", GiB, host.root)


def _claim_errno(device, **kwargs) -> int:
    with pytest.raises(OSError) as info:
        holder.claim(device, "test", **kwargs)
    assert device.path in str(info.value)  # the message names the device
    return info.value.errno


class RecordingOps:
    def __init__(self, rc: int = 0) -> None:
        self.calls: list[tuple[int, int, int]] = []
        self.rc = rc

    def notify_failure(self, offset: int, length: int, flags: int) -> int:
        self.calls.append((offset, length, flags))
        return self.rc


def test_claim_missing_device_fails_with_enodev(host):
    assert _claim_errno(device_in_root("dax9.9", host.root)) == errno.ENODEV


@pytest.mark.parametrize("mode", ["disabled", "system-ram"])
def test_claim_dead_device_fails_with_enodev(host, mode):
    dev = emulated.create("dax0.0", GiB, host.root, mode="devdax")
    emulated.reconfigure(dev, mode)
    assert _claim_errno(dev) == errno.ENODEV


def test_claim_devdax_device_fails_with_eopnotsupp(host):
    dev = emulated.create("dax0.0", GiB, host.root, mode="devdax")
    assert _claim_errno(dev) == errno.EOPNOTSUPP
    # the devdax opt-in is for real devices only: emulated devices stay strict
    assert _claim_errno(dev, allow_devdax=True) == errno.EOPNOTSUPP


def test_claim_busy_device_fails_with_ebusy_within_one_process(device):
    first = holder.claim(device, "first")
    try:
        assert _claim_errno(device) == errno.EBUSY
    finally:
        first.release()
    holder.claim(device, "again").release()


def test_claim_failure_undoes_what_it_did(device):
    first = holder.claim(device, "first")
    _claim_errno(device)
    info = holder.holder_info(device)
    assert info is not None and info["holder"] == "first"  # the loser changed nothing
    first.release()
    assert holder.holder_info(device) is None


def test_release_is_safe_twice_and_after_the_device_is_gone(device):
    held = holder.claim(device, "x")
    held.release()
    held.release()
    held = holder.claim(device, "y")
    emulated.remove(device)
    held.release()
    assert not held.held


def test_release_clears_only_the_owners_claim(device):
    held = holder.claim(device, "owner")
    stale = holder.Claim(device, "impostor", os.open(os.devnull, os.O_RDONLY))
    stale.release()
    assert holder.holder_info(device)["holder"] == "owner"
    held.release()


HOLDER_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from famfs_py.dax import holder
    from famfs_py.dax.device import device_in_root
    from pathlib import Path
    class Ops:
        def notify_failure(self, offset, length, flags):
            print(f"failure {offset} {length} {flags}", flush=True)
            return 0
    dev = device_in_root("dax0.0", Path(sys.argv[1]))
    c = holder.claim(dev, "child", Ops())
    print("claimed", flush=True)
    time.sleep(600)
    """
)


def _spawn_holder(host):
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER_SCRIPT, str(host.root)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "claimed"
    return proc


def test_claim_is_exclusive_across_processes_and_released_when_the_holder_is_killed(host, device):
    proc = _spawn_holder(host)
    try:
        assert _claim_errno(device) == errno.EBUSY
        assert holder.holder_info(device)["pid"] == proc.pid
        # delivery reaches the other process and returns its callback's result
        rc = holder.notify_failure(device, 4096, 4096, failure_delivery.MF_SW_SIMULATED)
        assert rc == 0
        assert proc.stdout.readline().split() == ["failure", "4096", "4096", "32"]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    holder.claim(device, "after-kill").release()


def test_notify_failure_return_codes(host, device):
    # no holder: EOPNOTSUPP
    assert holder.notify_failure(device, 0, 4096, 0) == errno.EOPNOTSUPP
    # holder without ops: EOPNOTSUPP
    with holder.claim(device, "no-ops"):
        assert holder.notify_failure(device, 0, 4096, 0) == errno.EOPNOTSUPP
    # holder's own answer comes back
    ops = RecordingOps(rc=errno.EAGAIN)
    with holder.claim(device, "ops", ops):
        rc = holder.notify_failure(device, 8192, 4096, failure_delivery.MF_ACTION_REQUIRED)
        assert rc == errno.EAGAIN
        assert ops.calls == [(8192, 4096, failure_delivery.MF_ACTION_REQUIRED)]
    # dead device: ENXIO
    emulated.reconfigure(device, "disabled")
    assert holder.notify_failure(device, 0, 4096, 0) == errno.ENXIO
    emulated.remove(device)
    assert holder.notify_failure(device, 0, 4096, 0) == errno.ENXIO


def test_flag_values_are_the_kernels():
    assert failure_delivery.MF_ACTION_REQUIRED == 2
    assert failure_delivery.MF_MUST_KILL == 4
    assert failure_delivery.MF_SW_SIMULATED == 32
    assert failure_delivery.MF_MEM_PRE_REMOVE == 128
    assert failure_delivery.WHOLE_DEVICE == 2**64 - 1


def test_alive_guard_is_a_scoped_lock(device):
    with holder.alive_guard(device):
        # reconfigure needs the lock exclusively: it waits until the guard ends
        done = threading.Event()
        worker = threading.Thread(
            target=lambda: (emulated.reconfigure(device, "devdax"), done.set())
        )
        worker.start()
        assert not done.wait(0.3)
    assert done.wait(5)
    worker.join()
    with (
        pytest.raises(OSError) as info,
        holder.alive_guard(device_in_root("dax7.7", device.emulation_root)),
    ):
        pass
    assert info.value.errno == errno.ENODEV


def test_pre_remove_reaches_the_holder_before_removal(device):
    ops = RecordingOps()
    held = holder.claim(device, "fs", ops)
    emulated.remove(device)
    assert ops.calls == [(0, failure_delivery.WHOLE_DEVICE, failure_delivery.MF_MEM_PRE_REMOVE)]
    held.release()


def test_fifty_processes_race_for_one_claim(host, device):
    script = textwrap.dedent(
        """
        import errno, sys, time
        from pathlib import Path
        from famfs_py.dax import holder
        from famfs_py.dax.device import device_in_root
        dev = device_in_root("dax0.0", Path(sys.argv[1]))
        while time.time() < float(sys.argv[2]):
            time.sleep(0.001)
        try:
            c = holder.claim(dev, "racer")
        except OSError as e:
            print("EBUSY" if e.errno == errno.EBUSY else f"other {e}", flush=True)
            sys.exit(0)
        print("WON", flush=True)
        sys.stdin.read()
        """
    )
    import time

    start = str(time.time() + 3)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(host.root), start],
            stdout=subprocess.PIPE,
            stdin=subprocess.PIPE,
            text=True,
        )
        for _ in range(50)
    ]
    try:
        answers = [p.stdout.readline().strip() for p in procs]
        assert answers.count("WON") == 1
        assert answers.count("EBUSY") == 49
        winner = procs[answers.index("WON")]
        winner.kill()
        winner.wait()
        holder.claim(device, "after").release()
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_real_devices_read_bad_blocks_from_their_nd_region(tmp_path):
    """A sysfs tree shaped like the kernel's: dax0.0 under ndbus0/region0, whose badblocks
    count 512-byte sectors from the region's start."""
    from famfs_py.dax.sysfs import DaxSysfs

    region = tmp_path / "sys" / "devices" / "ndbus0" / "region0"
    dev = region / "dax0.0"
    dev.mkdir(parents=True)
    (region / "resource").write_text("0x100000000\n")
    (region / "badblocks").write_text("4112 8\n1 1\n")  # 2 MiB + 8 KiB in, and before dax0.0
    (dev / "resource").write_text("0x100200000\n")  # dax0.0 starts 2 MiB into the region
    (dev / "size").write_text(f"{1 << 30}\n")
    devices = tmp_path / "sys" / "bus" / "dax" / "devices"
    devices.mkdir(parents=True)
    (devices / "dax0.0").symlink_to(dev)
    assert DaxSysfs(tmp_path / "sys").read_badblocks("dax0.0") == [(8192, 4096)]


def test_failure_sockets_of_dead_holders_are_swept_at_the_next_claim(device):
    """Issue 28 item 10: holder sockets of SIGKILLed daemons piled up (102 seen)."""
    import socket

    from famfs_py import rundir

    holders = Path(
        rundir.ensure_private_dir(os.path.dirname(rundir.socket_path("holders", "x", os.geteuid())))
    )
    child = os.fork()
    if child == 0:
        os._exit(0)
    os.waitpid(child, 0)  # a pid nobody has now
    dead = holders / f"dax9.9-{child}-0123456789ab.sock"
    alive = holders / f"dax9.9-{os.getpid()}-0123456789ab.sock"
    for path in (dead, alive):
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
            sock.bind(str(path))  # the file stays, as a killed holder's does
    try:
        with holder.claim(device, "test", RecordingOps()):
            assert not dead.exists()
            assert alive.exists()  # its process lives
    finally:
        dead.unlink(missing_ok=True)
        alive.unlink(missing_ok=True)
