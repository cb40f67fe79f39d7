"""Files through a real mount: upstream's images byte-exact, the data path, refused operations."""

from __future__ import annotations

import errno
import json
import mmap
import os
import subprocess
import zlib

import pytest
from helpers import MiB, manifest

from famfs_py import omf
from famfs_py.fs.namespace import FIRST_ENTRY_INO


def pattern(size: int, fileno: int) -> bytes:
    """The reference images' data: byte i is (i*7 + fileno) % 256."""
    period = bytes((i * 7 + fileno) % 256 for i in range(256))
    return (period * (size // 256 + 1))[:size]


@pytest.mark.parametrize("name", ["A", "B", "C", "D"])
def test_reference_image_mounts_and_reads_byte_exact(ref_device, mounts, name):
    host = ref_device(name)
    mp = mounts.mount(host)
    entries = manifest(name)["entries"]
    seen = set()
    for entry in entries:
        path = mp / entry["path"]
        st = os.stat(path)
        assert st.st_ino == FIRST_ENTRY_INO + entry["index"]
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (
            entry["uid"],
            entry["gid"],
            entry["mode"],
        )
        seen.add(entry["path"])
        if entry["type"] != omf.LOG_FILE:
            assert os.path.isdir(path)
            continue
        assert st.st_size == entry["size"]
        data = path.read_bytes()
        assert zlib.crc32(data) == entry["data"]["content_crc32"], entry["path"]
    # nothing more than the log holds
    found = set()
    for dirpath, dirnames, filenames in os.walk(mp):
        rel = os.path.relpath(dirpath, mp)
        if rel.startswith(".meta"):
            continue
        for n in dirnames + filenames:
            found.add(os.path.normpath(os.path.join(rel, n)))
    found.discard(".meta")
    assert found == seen


def test_ls_cmp_and_dd_agree_with_the_manifest_of_image_c(ref_device, mounts, tmp_path):
    host = ref_device("C")
    mp = mounts.mount(host)
    listing = subprocess.run(
        ["ls", "-lnR", str(mp)], capture_output=True, text=True, check=True
    ).stdout
    for entry in manifest("C")["entries"]:
        if entry["type"] != omf.LOG_FILE:
            continue
        name = os.path.basename(entry["path"])
        line = next(ln for ln in listing.splitlines() if ln.endswith(f" {name}"))
        fields = line.split()
        assert int(fields[2]) == entry["uid"] and int(fields[3]) == entry["gid"]
        assert int(fields[4]) == entry["size"]
        mode = "".join("rwx"[i % 3] if entry["mode"] & (0o400 >> i) else "-" for i in range(9))
        assert fields[0] == "-" + mode
        expected = tmp_path / f"expected-{name}"
        expected.write_bytes(pattern(entry["size"], entry["data"]["fileno"]))
        subprocess.run(["cmp", str(expected), str(mp / entry["path"])], check=True)
        # an unaligned dd read straddling interleave chunks
        skip = 3 * MiB // 4096 - 1
        out = subprocess.run(
            ["dd", f"if={mp / entry['path']}", "bs=4096", f"skip={skip}", "count=3", "status=none"],
            capture_output=True,
            check=True,
        ).stdout
        assert out == expected.read_bytes()[skip * 4096 : skip * 4096 + len(out)]


def test_image_e_mounts_its_valid_prefix_and_is_failsafe(ref_device, mounts):
    host = ref_device("E")
    mp = mounts.mount(host)
    assert os.path.isdir(mp / "a" / "b")
    assert (mp / "a" / "b" / "f1").read_bytes() == pattern(4096, 1)
    assert not (mp / "top").exists()  # the corrupt entry, where replay stops
    assert not (mp / "big").exists()  # after it: upstream's logplay stops there too
    status = json.loads(host.cli("status", "--json", mp).stdout)
    assert status["health"] == "failsafe"
    assert "log entry 3 is corrupt" in status["failsafe"]
    result = host.cli("creat", "-s", "1m", mp / "new")
    assert result.returncode == 1 and "failsafe" in result.stderr


def test_writes_stay_inside_the_file(fresh, mounts):
    mp = mounts.mount(fresh)
    fresh.ok("creat", "-s", "10000", mp / "f")
    with open(mp / "f", "r+b") as f:
        f.seek(100)
        assert f.write(b"hello") == 5
        f.flush()
        f.seek(9998)
        assert os.write(f.fileno(), b"abcdef") == 2  # short write at the end of the file
        with pytest.raises(OSError) as info:
            os.pwrite(f.fileno(), b"x", 10000)
        assert info.value.errno == errno.EFBIG
    data = (mp / "f").read_bytes()
    assert len(data) == 10000
    assert data[100:105] == b"hello" and data[9998:] == b"ab"
    # the bytes are in device memory, at the file's extent
    with open(fresh.memory(), "rb") as f:
        f.seek(10 * MiB + 100)
        assert f.read(5) == b"hello"


def test_refused_operations_fail_with_their_errno(fresh, mounts):
    mp = mounts.mount(fresh)
    fresh.ok("mkdir", mp / "d")
    fresh.ok("creat", "-s", "4096", mp / "f")
    cases = [
        (lambda: os.mkfifo(mp / "n"), errno.EPERM),  # regular files only (issue 24)
        (lambda: os.unlink(mp / "f"), errno.EPERM),
        (lambda: os.rmdir(mp / "d"), errno.EPERM),
        (lambda: os.rename(mp / "f", mp / "g"), errno.EPERM),
        (lambda: os.link(mp / "f", mp / "g"), errno.EPERM),
        (lambda: os.symlink("f", mp / "s"), errno.EPERM),
        (lambda: os.truncate(mp / "f", 0), errno.EPERM),
        (lambda: os.truncate(mp / "f", 8192), errno.EPERM),
        (lambda: os.chmod(mp / "f", 0o600), errno.EPERM),
        (lambda: os.chown(mp / "f", 1, 1), errno.EPERM),
        (lambda: open(mp / "f", "w"), errno.EPERM),  # O_TRUNC
    ]
    for action, code in cases:
        with pytest.raises(OSError) as info:
            action()
        assert info.value.errno == code, action
    # times are not stored, but touching is harmless
    os.utime(mp / "f")
    assert os.stat(mp / "f").st_size == 4096 and os.stat(mp / "f").st_mode & 0o777 == 0o644


def test_statfs_reports_capacity_and_free_space(fresh, mounts):
    mp = mounts.mount(fresh)
    before = os.statvfs(mp)
    assert before.f_blocks * before.f_frsize == 4 << 30
    assert before.f_files == omf.log_slots(omf.DEFAULT_LOG_LEN)
    fresh.ok("creat", "-s", "5m", mp / "f")
    after = os.statvfs(mp)
    assert before.f_bfree - after.f_bfree == 3  # 5 MiB rounds up to three 2 MiB units
    assert before.f_ffree - after.f_ffree == 1


def test_shared_mmap_works_in_auto_cache_mode(fresh, mounts):
    mp = mounts.mount(fresh)
    fresh.ok("creat", "-s", "8192", mp / "f")
    with open(mp / "f", "r+b") as f, mmap.mmap(f.fileno(), 8192) as m:
        m[0:4] = b"mmap"
        m.flush()
    assert (mp / "f").read_bytes()[:4] == b"mmap"


def test_lookup_counts_follow_forget(fresh, mounts):
    mp = mounts.mount(fresh)
    for i in range(20):
        fresh.ok("creat", "-s", "4096", mp / f"f{i}")
    for i in range(20):
        os.stat(mp / f"f{i}")
    busy = json.loads(fresh.ok("status", "--json", mp).stdout)["kernel_lookups"]
    assert busy >= 20
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("2\n")  # the kernel forgets dentries and inodes: FUSE sends FORGET
    quiet = json.loads(fresh.ok("status", "--json", mp).stdout)["kernel_lookups"]
    assert quiet < busy
