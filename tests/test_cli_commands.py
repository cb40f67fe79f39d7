"""The famfs command set end to end: creat, cp, mkdir, logplay, fsck, getmap, flush, check,
clone, chkread, as scripts written for upstream famfs use them."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from helpers import BIN, MiB, assert_no_traceback, run_cli

COMMANDS = [
    "mkfs",
    "mount",
    "umount",
    "status",
    "mkdir",
    "creat",
    "cp",
    "verify",
    "logplay",
    "fsck",
    "getmap",
    "flush",
    "check",
    "clone",
    "chkread",
    "dax",
]


@pytest.fixture
def fs(fresh, mounts):
    return fresh, mounts.mount(fresh)


def _getmap(host, path) -> dict:
    return json.loads(host.ok("getmap", "--json", path).stdout)[0]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_documents_exit_codes_and_rejects_unknown_options(command):
    result = run_cli(command, "--help")
    assert result.returncode == 0 and "exit codes" in result.stdout, result.out
    result = run_cli(command, "--no-such-option", "x")
    assert result.returncode == 2, result.out
    assert_no_traceback(result)


def test_unknown_command_exits_2():
    result = run_cli("frobnicate")
    assert result.returncode == 2 and "unknown command" in result.stderr


# -- creat ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "size,expected",
    [
        ("4096", 4096),
        ("3k", 3072),
        ("5m", 5 * MiB),
        ("1g", 1 << 30),
        ("0x200000", 2 * MiB),
        ("0x3m", 3 * MiB),
    ],
)
def test_creat_sizes(fs, size, expected):
    host, mp = fs
    host.ok("creat", "-s", size, mp / "f")
    assert os.stat(mp / "f").st_size == expected


def test_creat_rules_for_existing_and_empty_files(fs):
    host, mp = fs
    host.ok("creat", "-s", "8k", mp / "f")
    host.ok("creat", "-s", "8k", mp / "f")  # same size: a no-op success
    host.ok("creat", mp / "f")  # no size: adopts the existing file
    result = host.cli("creat", "-s", "16k", mp / "f")
    assert result.returncode == 1 and "exists with size 8192" in result.stderr
    result = host.cli("creat", "-s", "0", mp / "new")
    assert result.returncode == 1 and "cannot be empty" in result.stderr
    result = host.cli("creat", mp / "new")
    assert result.returncode == 1 and "give its size with -s" in result.stderr
    result = host.cli("creat", "-s", "4k", mp / "nodir" / "f")
    assert result.returncode == 1 and "does not exist" in result.stderr
    result = host.cli("creat", "-S", "7", "-s", "4k", mp / "g")
    assert result.returncode == 2 and "needs -r" in result.stderr
    result = host.cli("creat", "-s", "4kb", mp / "g")
    assert result.returncode == 2 and "not a size" in result.stderr


def test_creat_mode_and_owner_persist_after_remount(fs, mounts):
    host, mp = fs
    host.ok("mkdir", "-m", "0750", "-u", "1234", "-g", "4321", mp / "d")
    host.ok("creat", "-s", "4k", "-m", "0600", "-u", "1001", "-g", "1002", mp / "d" / "f")
    host.ok("umount", mp)
    mounts.mount(host, mp)
    st = os.stat(mp / "d")
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o750, 1234, 4321)
    st = os.stat(mp / "d" / "f")
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o600, 1001, 1002)


def test_creat_multi_creates_what_it_can_and_reports_the_rest(fs):
    host, mp = fs
    host.ok("creat", "-s", "4k", mp / "exists")
    result = host.cli(
        "creat",
        "-M",
        f"{mp}/a,1m",
        "-M",
        f"{mp}/exists,8k",
        "-M",
        f"{mp}/b,2m",
        "-M",
        f"{mp}/nodir/c,4k",
    )
    assert result.returncode == 2  # two failures
    assert "Create complete for 2 of 4 files with 2 errs" in result.stderr
    assert os.stat(mp / "a").st_size == MiB and os.stat(mp / "b").st_size == 2 * MiB
    result = host.cli("creat", "-M", f"{mp}/x,4k", mp / "y")
    assert result.returncode == 2


def test_creat_interleaved_follows_upstreams_rules(fs):
    host, mp = fs
    host.ok("creat", "-s", "20983865", "-N", "3", "-B", "4", "-C", "2m", mp / "stripe3")
    m = _getmap(host, mp / "stripe3")
    assert m["kind"] == "interleaved" and m["nstrips"] == 3 and m["chunk_size"] == 2 * MiB
    assert [s["length"] for s in m["strips"]] == [8 * MiB] * 3  # as image C has it
    buckets = {s["offset"] // (1 << 30) for s in m["strips"]}
    assert len(buckets) == 3  # each strip in its own bucket
    host.ok("creat", "-s", "40m", "-N", "4", "-B", "4", "-C", "4m", mp / "stripe4")
    assert [s["length"] for s in _getmap(host, mp / "stripe4")["strips"]] == [12 * MiB] * 4
    host.ok("creat", "-s", "1m", "-N", "3", "-B", "4", mp / "small")  # smaller than a chunk
    assert _getmap(host, mp / "small")["kind"] == "simple"
    for args, why in [
        (("-N", "3", "-B", "4", "-C", "3m"), "power of two"),
        (("-N", "5", "-B", "4"), "at most nbuckets"),
        (("-N", "3", "-B", "65"), "nbuckets"),
        (("-N", "17", "-B", "32"), "1..16"),
        (("-N", "3", "-B", "8"), "each bucket needs at least 1 GiB"),  # 512 MiB buckets
        (("-B", "4"), "needs both"),
    ]:
        result = host.cli("creat", "-s", "64m", *args, mp / "bad")
        assert result.returncode in (1, 2) and why in result.stderr, (args, result.stderr)
    assert not (mp / "bad").exists()
    # data through the striped file reads back exactly
    data = os.urandom(20983865)
    with open(mp / "stripe3", "r+b") as f:
        f.write(data)
    assert (mp / "stripe3").read_bytes() == data


def test_creat_reports_no_space_and_changes_nothing(fs):
    host, mp = fs
    result = host.cli("creat", "-s", "5g", mp / "huge")
    assert result.returncode == 1 and "no space" in result.stderr
    assert not (mp / "huge").exists()
    host.ok("creat", "-s", "1m", mp / "after")  # allocation still works


# -- cp ---------------------------------------------------------------------------------------
@pytest.fixture
def tree(tmp_path):
    src = tmp_path / "src"
    (src / "sub" / "deeper").mkdir(parents=True)
    for name, size in [("a", 1000), ("b", 3 * MiB + 7), ("sub/c", 5), ("sub/deeper/d", 4096)]:
        (src / name).write_bytes(os.urandom(size))
    (src / "sub" / "c").chmod(0o600)
    return src


def test_cp_destination_rules(fs, tree):
    host, mp = fs
    host.ok("mkdir", mp / "d")
    host.ok("cp", tree / "a", mp / "new")  # a new file
    host.ok("cp", tree / "a", mp / "d")  # into a directory
    host.ok("cp", tree / "b", f"{mp}/d/")  # trailing slash
    host.ok("cp", tree / "sub" / "c", f"{mp}/d/.")  # trailing /.
    for path, src in [("new", "a"), ("d/a", "a"), ("d/b", "b"), ("d/c", "sub/c")]:
        assert (mp / path).read_bytes() == (tree / src).read_bytes()
    assert os.stat(mp / "d" / "c").st_mode & 0o777 == 0o600  # the source's mode
    # a same-size destination is overwritten (restartable copy)
    (tree / "a2").write_bytes(os.urandom(1000))
    host.ok("cp", tree / "a2", mp / "new")
    assert (mp / "new").read_bytes() == (tree / "a2").read_bytes()
    # another size fails and stops
    result = host.cli("cp", tree / "b", mp / "new")
    assert result.returncode == 1 and "exists with size 1000" in result.stderr
    # several sources need a directory
    result = host.cli("cp", tree / "a", tree / "b", mp / "new")
    assert result.returncode == 1 and "not a directory" in result.stderr


def test_cp_skips_empty_sources_and_directories_without_r(fs, tree, tmp_path):
    host, mp = fs
    (tmp_path / "empty").touch()
    result = host.cli("cp", tmp_path / "empty", tree / "sub", tree / "a", tree / "b", mp)
    assert result.returncode == 1
    assert "empty file" in result.stderr and "omitting directory" in result.stderr
    assert (mp / "a").exists() and (mp / "b").exists()
    assert not (mp / "empty").exists() and not (mp / "sub").exists()


def test_cp_recursive_recreates_directories_and_compare(fs, tree):
    host, mp = fs
    host.ok("cp", "-r", tree, mp / "copy")
    subprocess.run(["diff", "-r", str(tree), str(mp / "copy")], check=True)
    host.ok("cp", "-r", "-c", tree, mp / "copy")
    with open(mp / "copy" / "b", "r+b") as f:
        f.seek(2 * MiB + 3)
        f.write(b"\x00" if (tree / "b").read_bytes()[2 * MiB + 3] else b"\x01")
    result = host.cli("cp", "-c", tree / "b", mp / "copy" / "b")
    assert result.returncode == 1 and f"differ at byte {2 * MiB + 3}" in result.stderr


@pytest.mark.parametrize("slash", ["", "/"])
def test_cp_r_into_the_mounts_root_works_like_any_directory(fs, tree, slash):
    """Upstream's issue #32: copying into the root must not fail as "exists"."""
    host, mp = fs
    host.ok("cp", "-r", tree, f"{mp}{slash}")
    subprocess.run(["diff", "-r", "-x", ".meta", str(tree), str(mp)], check=True)
    host.ok("cp", "-r", tree, f"{mp}{slash}")  # again: restartable, the files are there


def test_a_daemon_that_dies_at_start_is_quoted_from_this_attempts_log_lines(fs, tmp_path):
    host, _ = fs
    log = tmp_path / "daemon.log"
    log.write_text("an earlier mount of another device wrote this line\n")
    mp = tmp_path / "mp"
    mp.mkdir()
    env = {"FAMFS_PY_TEST_DIE_AT_START": "the reason it died"}
    result = host.cli("mount", "--log-file", log, "dax0.0", mp, env=env)
    assert result.returncode == 1, result.out
    assert_no_traceback(result)
    assert "exited (status 9) before the mount was ready" in result.stderr
    assert "earlier mount" not in result.stderr  # another attempt's lines are not quoted
    quoted = result.stderr.split("says:\n", 1)[1].splitlines()
    assert quoted[0] == "famfs-py mount: the reason it died"  # the reason first


def test_cp_threads_modes_owners_and_interleave(fs, tree):
    host, mp = fs
    host.ok("cp", "-r", "-t", "4", "-m", "0640", "-u", "77", "-g", "88", tree, mp / "t")
    subprocess.run(["diff", "-r", str(tree), str(mp / "t")], check=True)
    st = os.stat(mp / "t" / "sub" / "c")
    assert (st.st_mode & 0o777, st.st_uid, st.st_gid) == (0o640, 77, 88)
    host.ok("cp", "-N", "2", "-B", "4", "-C", "2m", tree / "b", mp / "striped")
    assert _getmap(host, mp / "striped")["kind"] == "interleaved"
    assert (mp / "striped").read_bytes() == (tree / "b").read_bytes()


def test_cp_r_of_a_thousand_small_files(fs, tmp_path):
    host, mp = fs
    src = tmp_path / "many"
    for d in range(10):
        (src / f"d{d}").mkdir(parents=True)
        for f in range(100):
            (src / f"d{d}" / f"f{f}").write_bytes(os.urandom(64 + d * 100 + f))
    host.ok("cp", "-r", src, mp / "many")
    subprocess.run(["diff", "-r", str(src), str(mp / "many")], check=True)
    status = json.loads(host.ok("status", "--json", mp).stdout)
    assert status["files"] == 1000 and status["directories"] == 11


# -- mkdir ------------------------------------------------------------------------------------
def test_mkdir_paths_are_resolved_and_may_not_leave_the_mount(fs):
    host, mp = fs
    host.ok("mkdir", "-p", f"{mp}/a//b/./c/../d")
    assert (mp / "a" / "b" / "d").is_dir() and not (mp / "a" / "b" / "c").exists()
    result = host.cli("mkdir", mp / "a")
    assert result.returncode == 1 and "already exists" in result.stderr
    host.ok("mkdir", "-p", mp / "a")  # -p: fine
    result = host.cli("mkdir", mp / "x" / "y")
    assert result.returncode == 1 and "does not exist" in result.stderr
    result = host.cli("mkdir", "-p", f"{mp}/a/../../outside")
    assert result.returncode == 1 and "not in a famfs-py mount" in result.stderr
    host.ok("creat", "-s", "4k", mp / "file")
    result = host.cli("mkdir", "-p", mp / "file" / "sub")
    assert result.returncode == 1


# -- logplay, fsck, getmap, clone, flush, check, chkread --------------------------------------
def test_logplay_dry_run_and_verbose(fs):
    host, mp = fs
    host.ok("mkdir", mp / "d")
    out = host.ok("logplay", "-n", "-v", mp).stdout
    assert out.startswith("famfs_logplay: 1 log entries; 0 new files; 0 new directories")


def test_fsck_through_the_mount_with_buckets_and_clone_collisions(fs):
    host, mp = fs
    host.ok("creat", "-s", "3m", mp / "f")
    report = json.loads(host.ok("fsck", "--json", "-B", "4", mp).stdout)
    assert report["files"] == 1 and report["collisions"] == 0
    assert len(report["buckets"]) == 4 and report["buckets"][1]["free_fragments"] == 1
    host.ok("clone", mp / "f", mp / "g")
    assert (mp / "g").read_bytes() == (mp / "f").read_bytes()
    result = host.cli("fsck", mp)
    assert result.returncode == 2  # f's two allocation units, claimed twice
    assert "collisions" in result.stdout
    # by device, while mounted: refused
    result = host.cli("fsck", "dax0.0")
    assert result.returncode == 128 and "busy" in result.stderr


def test_getmap_exit_codes(fs, tmp_path):
    host, mp = fs
    host.ok("creat", "-s", "5m", mp / "f")
    host.ok("mkdir", mp / "d")
    result = host.ok("getmap", mp / "f")
    assert "extents: 1" in result.stdout and f"famfs_getmap: good file {mp}/f" in result.stdout
    quiet = host.ok("getmap", "-q", mp / "f").stdout
    assert "extents" not in quiet
    assert host.cli("getmap", mp / "d").returncode == 2
    (tmp_path / "plain").write_text("x")
    assert host.cli("getmap", tmp_path / "plain").returncode == 1
    assert host.cli("getmap", mp / "missing").returncode == 1
    result = host.cli("getmap", "-c", "--json", mp / "missing", mp / "f")
    assert result.returncode == 1 and json.loads(result.stdout)[0]["size"] == 5 * MiB


def test_flush_check_and_chkread(fs):
    host, mp = fs
    host.ok("creat", "-s", "2m", mp / "f")
    host.ok("mkdir", mp / "d")
    host.ok("flush", mp / "f")
    assert host.cli("flush", mp / "f", mp / "d", mp / "missing").returncode == 2
    out = host.ok("check", mp).stdout
    assert "famfs_check: 3 files, 2 directories, 0 errors" in out  # f and the .meta files
    with open(mp / "f", "r+b") as f:
        f.write(os.urandom(2 * MiB))
    assert "Read and mmap match" in host.ok("chkread", mp / "f").stdout
    assert "Read and mmap match" in host.ok("chkread", "-l", mp / "f").stdout


# -- the seeded pattern: creat -r and verify ---------------------------------------------------
def test_creat_r_writes_upstreams_pattern_and_verify_checks_it(fs, mounts):
    from test_pattern import Oracle

    host, mp = fs
    host.ok("creat", "-s", "3m", "-r", "-S", "0x1d", mp / "f")
    data = (mp / "f").read_bytes()
    assert data[:4096] == Oracle(0x1D).stream(4096)  # computed from the definition
    out = host.ok("verify", "-S", "29", "-f", mp / "f").stdout
    assert f"Success: verified {3 * MiB} bytes in file {mp}/f" in out
    result = host.cli("verify", "-S", "30", "-f", mp / "f")
    assert result.returncode == 1 and "Verify fail" in result.stderr
    # a byte changed in the middle is found where it is
    with open(mp / "f", "r+b") as f:
        f.seek(MiB + 5)
        f.write(bytes([data[MiB + 5] ^ 0xFF]))
    result = host.cli("verify", "-S", "29", "-f", mp / "f")
    assert f"at offset {MiB + 5} of {3 * MiB} bytes" in result.stderr
    # re-randomizing an existing file restores it; the data survives a remount
    host.ok("creat", "-r", "-S", "29", mp / "f")
    host.ok("umount", mp)
    mounts.mount(host, mp)
    host.ok("verify", "-S", "29", "-f", mp / "f")


def test_creat_multi_randomizes_in_threads_and_verify_multi(fs):
    host, mp = fs
    entries = [(f"{mp}/m{i}", (i + 1) * 1000003, 100 + i) for i in range(6)]
    args = [a for name, size, seed in entries for a in ("-M", f"{name},{size},{seed}")]
    host.ok("creat", "-t", "3", *args)
    args = [a for name, _, seed in entries for a in ("-m", f"{name},{seed}")]
    out = host.ok("verify", "-t", "2", *args).stdout
    assert "Verify complete for 6 files with 0 errs" in out
    wrong = [a for name, _, seed in entries for a in ("-m", f"{name},{seed + 1}")]
    assert host.cli("verify", *wrong).returncode == 6


def test_interleaved_files_hold_the_pattern_in_file_order(fs):
    from test_pattern import Oracle

    host, mp = fs
    host.ok("creat", "-s", "9m", "-N", "3", "-B", "4", "-r", "-S", "7", mp / "s")
    assert (mp / "s").read_bytes()[: 3 * MiB] == Oracle(7).stream(3 * MiB)
    host.ok("verify", "-S", "7", "-f", mp / "s")


@pytest.mark.parametrize(
    "args,why",
    [
        (("creat", "-s", "4k", "-r", "-S", "0x100000000"), "zero low 32 bits"),
        (("creat", "-s", "4k", "-S", "5"), "needs -r"),
        (("verify", "-S", "0", "-f"), "seed 0"),
        (("verify", "-f"), "-S SEED"),
    ],
)
def test_seed_rules(fs, args, why):
    host, mp = fs
    result = host.cli(*args, mp / "x")
    assert result.returncode == 2 and why in result.stderr, result.stderr


def test_creat_r_without_a_seed_leaves_the_data(fs):
    host, mp = fs
    host.ok("creat", "-s", "4k", "-r", mp / "f")
    assert (mp / "f").read_bytes() == bytes(4096)


def test_cp_shows_a_progress_bar_on_a_terminal_for_large_copies(fs, tmp_path):
    host, mp = fs
    big = tmp_path / "big"
    big.write_bytes(os.urandom(80 * MiB))
    command = f"{BIN / 'famfs-py'} cp {big} {mp / 'big'}"
    result = subprocess.run(
        ["script", "-qec", command, "/dev/null"],
        capture_output=True,
        text=True,
        env={**os.environ, **host.env},
        timeout=60,
    )
    assert result.returncode == 0, result.stdout
    assert "100%" in result.stdout and "MiB/s" in result.stdout
    quiet = host.ok("cp", big, mp / "big")  # not a terminal: no bar
    assert "%" not in quiet.stderr
