"""What scripts written for upstream famfs rely on: its option meanings, its exit-code
classes (0, a failure 1..127; never >= 128, which a shell reads as death by a signal), the
output lines they parse, and the mount's source in /proc/mounts."""

from __future__ import annotations

import json
import subprocess

import pytest
from helpers import assert_no_traceback, mount_source, run_cli


def _fields(stdout: str, label: str) -> list[list[str]]:
    """The whitespace-separated fields of every line containing `label` (grep | awk)."""
    return [line.split() for line in stdout.splitlines() if label in line]


# -- the mount's source ----------------------------------------------------------------------------
def test_the_mount_source_is_the_device_name_on_its_host(fresh, mounts):
    mp = mounts.mount(fresh)  # an emulated device: its node lives in the emulation root
    assert mount_source(mp) == "/dev/dax0.0"
    found = subprocess.run(
        ["findmnt", "-rn", "-S", "/dev/dax0.0", "--target", str(mp)], capture_output=True
    )
    assert found.returncode == 0  # how upstream's scripts decide "mounted"
    status = json.loads(fresh.ok("status", "--json", mp).stdout)
    assert status["role"] == "master"
    fresh.ok("umount", mp)
    gone = subprocess.run(["findmnt", "-rn", "-S", "/dev/dax0.0", "--target", str(mp)])
    assert gone.returncode != 0


def test_two_hosts_each_mount_their_dax0_0(pair, mounts, tmp_path):
    master, client = pair
    mp_master = mounts.mount(master, tmp_path / "a")
    mp_client = mounts.mount(client, tmp_path / "b")
    assert mount_source(mp_master) == mount_source(mp_client) == "/dev/dax0.0"
    client.ok("umount", mp_client)  # each unmounts from its own mount point
    master.ok("status", mp_master)


def test_mount_options_mean_what_they_mean_upstream(fresh, mounts, tmp_path):
    mp = mounts.mount(fresh, tmp_path / "a", "-f", "-r", "-vvv")  # -f is --fuse, not foreground
    assert "daemon pid" in mounts.last.stdout  # it returned: the daemon runs on its own
    again = fresh.cli("mount", "-vvv", "dax0.0", mp)
    assert again.returncode == 1 and "busy" in again.stderr  # mounted already
    fresh.ok("umount", mp)
    for args, message in [
        (["-rm"], "exclude each other"),
        (["-F"], "famfs-py is a FUSE filesystem only"),
        (["--nofuse"], "famfs-py is a FUSE filesystem only"),
        (["a", "b"], "unrecognized arguments"),
    ]:
        result = fresh.cli("mount", *args, "dax0.0", mp)
        assert result.returncode == 2 and message in result.stderr, result.out
        assert_no_traceback(result)
    for bad in (["baddev", mp], ["dax0.0", tmp_path / "badmpt"]):
        result = fresh.cli("mount", *bad)
        assert result.returncode == 1, result.out
        assert_no_traceback(result)
    assert "exit codes" in fresh.ok("mount", "-?").stdout
    assert fresh.cli("mount").returncode == 2


# -- mkfs ------------------------------------------------------------------------------------------
def test_mkfs_verbose_and_kill_as_upstream(host):
    host.ok("dax", "create", "dax0.0", "--size", "4g")
    out = host.ok("mkfs", "-v", "dax0.0").stdout
    assert "log offset" in out
    assert host.cli("mkfs", "-k", "dax0.0").returncode == 2  # -k wants -f
    assert "Killed superblock" in host.ok("mkfs", "-f", "-k", "dax0.0").stdout
    again = host.ok("mkfs", "-f", "-k", "dax0.0")  # nothing left to kill: still success
    assert "nothing to kill" in again.stdout
    assert host.ok("mkfs", "--fuse", "dax0.0")  # upstream's mode selector: what famfs-py does
    nofuse = host.cli("mkfs", "-F", "-f", "dax0.0")
    assert nofuse.returncode == 2 and "famfs-py is a FUSE filesystem only" in nofuse.stderr
    assert_no_traceback(nofuse)


@pytest.mark.parametrize("loglen", ["1", "1m", "11m"])
def test_mkfs_refuses_a_bad_log_length_and_keeps_the_filesystem(fresh, loglen):
    result = fresh.cli("mkfs", "-f", "--loglen", loglen, "dax0.0")
    assert result.returncode == 2 and "power of two" in result.stderr
    (log_len,) = _fields(fresh.ok("fsck", "-v", "dax0.0").stdout, "log_len")
    assert log_len[1] == str(8 << 20)


# -- fsck ------------------------------------------------------------------------------------------
def test_fsck_verbose_prints_one_log_len_line(fresh):
    fresh.ok("mkfs", "-f", "--loglen", "256m", "dax0.0")
    lines = _fields(fresh.ok("fsck", "-v", "dax0.0").stdout, "log_len")
    assert lines == [["log_len:", str(256 << 20)]]  # prepare.sh: grep log_len | awk '{print $2}'


def test_fsck_capacity_lines_carry_numbers_in_field_3(fresh, mounts):
    mp = mounts.mount(fresh)
    fresh.ok("creat", "-s", "4m", mp / "f")
    out = fresh.ok("fsck", mp).stdout
    (capacity,) = _fields(out, "Device capacity")
    (free,) = _fields(out, "Free space")
    assert int(capacity[2]) == 4 << 30  # famfs_get_capacity / test_fio: awk '{print $3}'
    report = json.loads(fresh.ok("fsck", "--json", mp).stdout)
    assert int(free[2]) == report["free_bytes"] > 0


def test_fsck_h_is_human_as_upstream_and_help_is_question_mark(fresh):
    human = fresh.ok("fsck", "-h", "dax0.0").stdout
    assert _fields(human, "Device capacity")[0][2] == "4.00G"
    assert fresh.ok("fsck", "--human", "-B", "4", "dax0.0").stdout.count("Bitmap range") == 4
    for flag in ("-?", "--help"):
        assert "exit codes" in fresh.ok("fsck", flag).stdout


def test_fsck_read_mode_flags_and_their_conflict(fresh):
    for flag in ("-m", "-r", "--mmap", "--read", "-vv", "--fuse"):
        fresh.ok("fsck", flag, "dax0.0")
    both = fresh.cli("fsck", "-rm", "dax0.0")
    assert both.returncode == 2 and "not allowed with" in both.stderr


def test_fsck_exit_codes_stay_below_128(fresh, mounts, tmp_path):
    assert fresh.cli("fsck").returncode == 2
    missing = fresh.cli("fsck", "dax7.7")
    unmounted = fresh.cli("fsck", tmp_path)  # a directory, not in a mount, not a device
    mp = mounts.mount(fresh)
    busy = fresh.cli("fsck", "dax0.0")  # mounted: check it by its mount point
    for result in (missing, unmounted, busy):
        assert result.returncode == 100, result.out
        assert_no_traceback(result)
    fresh.ok("fsck", mp)


# -- logplay, chkread, clone, mkdir ----------------------------------------------------------------
def test_logplay_accepts_upstreams_read_mode_and_client_flags(fresh, mounts):
    mp = mounts.mount(fresh)
    fresh.ok("mkdir", mp / "d")
    for flags in (["-rc"], ["-m"], ["-vr"], ["-vvv"], ["--client"], ["-n"]):
        out = fresh.ok("logplay", *flags, mp).stdout
        assert out.startswith("famfs_logplay: 1 log entries")
    assert fresh.cli("logplay", "-rm", mp).returncode == 2
    assert fresh.cli("logplay").returncode == 2


def test_chkread_s_and_l_name_the_file_they_check(fresh, mounts):
    mp = mounts.mount(fresh)
    log = fresh.ok("chkread", "-l", mp / ".meta" / ".log").stdout
    assert "log: magic 0xbadcafef00d" in log and "Read and mmap match" in log
    sb = fresh.ok("chkread", "-s", mp / ".meta" / ".superblock").stdout
    assert "primary device /dev/dax0.0" in sb
    assert fresh.cli("chkread", "-s", mp / "badfilexx").returncode == 1
    assert fresh.cli("chkread").returncode == 2
    assert "exit codes" in fresh.ok("chkread", "-?").stdout


def test_verify_verbose_verifies(fresh, mounts):
    """Upstream's verify has no -v: it prints its usage and exits 0, verifying nothing."""
    mp = mounts.mount(fresh)
    fresh.ok("creat", "-M", f"{mp}/a,2m,42", "-M", f"{mp}/b,2m,43")
    assert "Success" in fresh.ok("verify", "-v", "-m", f"{mp}/a,42", "-m", f"{mp}/b,43").stdout
    bad = fresh.cli("verify", "-v", "-m", f"{mp}/a,42", "-m", f"{mp}/b,44")
    assert bad.returncode == 1 and "Verify fail" in bad.stderr


def test_verify_quiet_says_nothing_on_success_and_cp_refuses_negative_ids(fresh, mounts, tmp_path):
    mp = mounts.mount(fresh)
    fresh.ok("creat", "-r", "-S", "3", "-s", "2m", mp / "f")
    assert fresh.ok("verify", "--quiet", "-S", "3", "-f", mp / "f").stdout == ""
    bad = fresh.cli("verify", "--quiet", "-S", "4", "-f", mp / "f")
    assert bad.returncode == 1 and "Verify fail" in bad.stderr  # failures are still said
    source = tmp_path / "src"
    source.write_bytes(b"x" * 4096)
    for flag in ("--uid=-1", "--gid=-1"):
        result = fresh.cli("cp", flag, source, mp / "g")
        assert result.returncode == 2 and "out of range for an id" in result.stderr, result.out
        assert_no_traceback(result)
    assert not (mp / "g").exists()


def test_clone_verbose_and_mkdir_p_of_the_mount_point(fresh, mounts):
    mp = mounts.mount(fresh)
    fresh.ok("creat", "-s", "2m", mp / "f")
    assert "shares the memory of" in fresh.ok("clone", "-v", mp / "f", mp / "g").stdout
    fresh.ok("mkdir", "-p", mp)  # there already: as upstream, -p succeeds
    assert fresh.cli("mkdir", mp).returncode == 1


# -- the famfs command itself ----------------------------------------------------------------------
def test_help_forms_upstream_scripts_use():
    assert run_cli("-h").returncode == 0
    assert run_cli("-h", "mount").returncode == 0
    assert run_cli("--").returncode != 0
    assert run_cli("badarg").returncode == 2


def test_pyfuse3_still_says_a_read_reply_failed_the_way_the_daemon_listens_for():
    """Poison detection on FUSE read replies hears of a failed copy only through a line
    pyfuse3 logs: the installed pyfuse3 must still log it, on the logger the daemon hooks,
    in the words the hook matches (a new pyfuse3 that words it otherwise fails here)."""
    import logging
    import re
    from pathlib import Path

    import pyfuse3

    from famfs_py.daemon.operations import (
        PYFUSE3_LOGGER,
        READ_REPLY_FAILED,
        ReplyFailureHook,
    )

    source_dir = Path(pyfuse3.__file__).parent
    handlers = source_dir / "handlers.pxi"
    assert handlers.exists(), f"pyfuse3 {pyfuse3.__version__} ships no {handlers.name}: recheck"
    text = handlers.read_text()
    start = text.index("cdef void fuse_read (")
    body = text[start : text.index("\ncdef ", start + 1)]
    said = re.findall(r"log\.error\('([^']*)'", body)
    assert any(message.startswith(READ_REPLY_FAILED) for message in said), said
    logger_line = f'log = logging.getLogger("{PYFUSE3_LOGGER}")'
    assert logger_line in (source_dir / "__init__.pyx").read_text()

    class Told:
        count = 0

        def read_reply_failed(self) -> None:
            self.count += 1

    told = Told()
    hook = ReplyFailureHook(told)  # type: ignore[arg-type]
    for message in said:
        hook.emit(
            logging.LogRecord(PYFUSE3_LOGGER, logging.ERROR, str(handlers), 0, message, (), None)
        )
    assert told.count == 1  # the read reply's failure, and no other
