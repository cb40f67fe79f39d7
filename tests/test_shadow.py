"""Upstream's shadow tree: the YAML per file (byte for byte what upstream's library wrote for
the reference images), reading it back, and shadow logplay through the CLI."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import assert_no_traceback, manifest

from famfs_py import omf
from famfs_py.fs.shadow_yaml import parse_shadow_yaml, shadow_yaml, yaml_value

IMAGES_WITH_FILES = ["B", "C", "E"]


def _log_of_image(path: Path) -> tuple[omf.Superblock, bytes]:
    with open(path, "rb") as f:
        sb = omf.Superblock.unpack(f.read(omf.SUPERBLOCK_STRUCT_SIZE))
        f.seek(sb.log_offset)
        return sb, f.read(sb.log_len)


def _entry(log: bytes, index: int) -> omf.LogEntry:
    start = omf.entry_offset(index)
    return omf.LogEntry.unpack(log[start : start + omf.LOG_ENTRY_SIZE])


@pytest.mark.parametrize("name", IMAGES_WITH_FILES)
def test_yaml_of_every_logged_file_is_what_upstream_wrote(ref_images, name):
    _sb, log = _log_of_image(ref_images(name))
    checked = 0
    for expected in manifest(name)["entries"]:
        if "shadow_yaml" not in expected:
            continue
        meta = _entry(log, expected["index"]).payload  # E's entry 3 too: its CRC is stale,
        assert isinstance(meta, omf.FileMeta)  # but upstream wrote its YAML all the same
        assert shadow_yaml(meta) == expected["shadow_yaml"]
        assert parse_shadow_yaml(expected["shadow_yaml"]) == meta
        checked += 1
    assert checked >= 3


# What libyaml 0.2.5 (upstream's emitter, default settings) writes after "  path:" for
# awkward names: plain where it can, else single quotes, else double quotes with escapes;
# long values fold at the first space past column 80 and continue at column 4.
PATH_STYLES = [
    ("dir/file 1", " dir/file 1"),
    ("-x", " -x"),
    ("- x", " '- x'"),
    ("#x", " '#x'"),
    ("a#b", " a#b"),
    ("a #b", " 'a #b'"),
    ("key: v", " 'key: v'"),
    ("a:b", " a:b"),
    ("it's", " it's"),
    (" lead", " ' lead'"),
    ("trail ", " 'trail '"),
    ("tab\tx", ' "tab\\tx"'),
    ("é", ' "\\xE9"'),
    ("x\ny", " 'x\n\n    y'"),
    ("---x", " '---x'"),
    ('"q"', " '\"q\"'"),
    ("[x]", " '[x]'"),
    ("? x", " '? x'"),
    ("@x", " '@x'"),
    ("dir/" + "word " * 15 + "end", " dir/" + "word " * 13 + "word\n    word end"),
]


@pytest.mark.parametrize("path,written", PATH_STYLES)
def test_awkward_paths_are_quoted_as_libyaml_quotes_them_and_read_back(path, written):
    assert yaml_value(path, len("  path:")) == written
    meta = omf.FileMeta(4096, 2, 0, 0, 0o644, path, omf.SimpleFmap((omf.Extent(1 << 23, 1 << 21),)))
    text = shadow_yaml(meta)
    assert text.startswith("---\nfile:\n  path:" + written + "\n  size: 4096\n")
    assert parse_shadow_yaml(text) == meta


def test_numbers_are_printed_as_upstreams_printf_prints_them():
    meta = omf.FileMeta(
        1 << 21, 0xFFFFFFFF, 0xFFFFFFFE, 4000000000, 0o4755, "f",
        omf.SimpleFmap((omf.Extent(0x400000, 0x200000, 0),)),
    )  # fmt: skip
    text = shadow_yaml(meta)
    assert "  flags: -1\n  mode: 04755\n  uid: -2\n  gid: -294967296\n" in text  # %d of a u32
    assert "    offset: 0x400000\n    length: 0x200000\n" in text
    assert parse_shadow_yaml(text) == meta


def test_a_path_that_is_not_utf8_has_no_yaml():
    bad = b"caf\xe9".decode("utf-8", "surrogateescape")
    meta = omf.FileMeta(4096, 2, 0, 0, 0o644, bad, omf.SimpleFmap((omf.Extent(1 << 23, 1 << 21),)))
    with pytest.raises(ValueError, match="not UTF-8"):
        shadow_yaml(meta)


@pytest.mark.parametrize(
    "text",
    ["", "---\nfile:\n  path: a\n", "---\nfile:\n  path: a\n  size: x\n", "just text\n"],
)
def test_a_broken_shadow_file_is_refused(text):
    with pytest.raises(ValueError):
        parse_shadow_yaml(text)


# -- shadow logplay through the CLI --------------------------------------------------------------
def _tree(root: Path) -> dict[str, str | None]:
    """Every path under root: a file's text, None for a directory."""
    out: dict[str, str | None] = {}
    for dirpath, dirs, files in os.walk(root):
        for d in dirs:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = None
        for f in files:
            out[os.path.relpath(os.path.join(dirpath, f), root)] = Path(dirpath, f).read_text()
    return out


@pytest.mark.parametrize("name", ["B", "C"])
def test_shadow_logplay_from_a_device_writes_upstreams_tree(ref_device, tmp_path, name):
    host = ref_device(name)
    (tmp_path / "sh" / "root").mkdir(parents=True)
    result = host.ok("logplay", "--shadow", tmp_path / "sh", "--daxdev", "dax0.0")
    entries = manifest(name)["entries"]
    files = [e for e in entries if e["type_name"] == "FAMFS_LOG_FILE"]
    dirs = [e for e in entries if e["type_name"] == "FAMFS_LOG_MKDIR"]
    assert (
        f"famfs_logplay(shadow): {len(entries)} log entries; {len(files)} new files; "
        f"{len(dirs)} new directories" in result.stdout
    )
    tree = _tree(tmp_path / "sh" / "root")
    assert tree == {
        **{e["path"]: None for e in dirs},
        **{e["path"]: e["shadow_yaml"] for e in files},
    }
    for d in dirs:  # mkdir with the logged mode (and owner: both ids are set here)
        st = os.stat(tmp_path / "sh" / "root" / d["path"])
        assert (st.st_uid, st.st_gid) == (d["uid"], d["gid"])
        assert st.st_mode & 0o777 == d["mode"] & ~_umask() & 0o777

    # again: everything exists; with the test, every file reads back as its entry
    again = host.ok("logplay", "--shadow", tmp_path / "sh", "--shadowtest", "-d", "dax0.0", "-v")
    assert f"shadow yaml checked for {len(files)} files" in again.stdout
    assert "there were 0 yaml errors detected" in again.stdout
    assert f"Existed: {len(files)} files, {len(dirs)} directories" in again.stdout


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_stale_shadow_file_is_rewritten_from_the_log(ref_device, tmp_path):
    """A shadow tree left by an earlier filesystem: the log decides (upstream leaves the
    stale file, and its --shadowtest then fails on every rerun)."""
    host = ref_device("B")
    root = tmp_path / "sh" / "root"
    root.mkdir(parents=True)
    host.ok("logplay", "--shadow", root, "--daxdev", "dax0.0")  # a path ending in /root
    top, big = root / "top", root / "big"
    right = top.read_text()
    top.write_text(right.replace("size: 3145728", "size: 3145729"))  # the same file, changed
    result = host.ok("logplay", "--shadow", root, "--daxdev", "dax0.0")
    assert "Replaced: 1 stale shadow files" in result.stdout
    assert top.read_text() == right

    top.write_text(big.read_text())  # another file's YAML, under this file's name
    result = host.ok("logplay", "--shadow", root, "--shadowtest", "-v", "--daxdev", "dax0.0")
    assert "top: stale shadow file replaced" in result.stdout
    assert "Replaced: 1 stale shadow files" in result.stdout
    assert "there were 0 yaml errors detected" in result.stdout
    assert top.read_text() == right
    assert sorted(p.name for p in root.iterdir()) == ["a", "big", "top"]  # no temporary left

    again = host.ok("logplay", "--shadow", root, "--shadowtest", "--daxdev", "dax0.0")
    assert "Replaced:" not in again.stdout and "0 yaml errors" in again.stdout


def test_something_else_where_a_shadow_file_belongs_is_an_error(ref_device, tmp_path):
    host = ref_device("B")
    root = tmp_path / "sh" / "root"
    root.mkdir(parents=True)
    (root / "top").write_text("not yaml at all\n")
    result = host.cli("logplay", "--shadow", root, "--daxdev", "dax0.0")
    assert result.returncode == 1, result.out
    assert "not a shadow file" in result.stderr
    assert (root / "top").read_text() == "not yaml at all\n"  # left alone
    assert_no_traceback(result)


def test_shadow_logplay_stops_at_a_corrupt_entry(ref_device, tmp_path):
    host = ref_device("E")  # entry 3 (top) fails its CRC
    (tmp_path / "sh" / "root").mkdir(parents=True)
    result = host.cli("logplay", "--shadow", tmp_path / "sh", "--daxdev", "dax0.0")
    assert result.returncode == 1, result.out
    assert "invalid log entry at index 3" in result.stderr
    assert sorted(_tree(tmp_path / "sh" / "root")) == ["a", "a/b", "a/b/f1"]


def test_shadow_logplay_from_a_mount_and_with_upstreams_short_flags(fresh, mounts, tmp_path):
    mp = mounts.mount(fresh)
    fresh.ok("mkdir", mp / "d")
    fresh.ok("creat", "-s", "3m", mp / "d" / "f")
    for n, (flag, tested) in enumerate([("--shadow", False), ("-S", False), ("-Ss", True)]):
        shadow_path = tmp_path / f"sh{n}"
        (shadow_path / "root").mkdir(parents=True)
        # --shadow SHADOW MOUNTPOINT; -S takes no value upstream: the first path is the shadow
        result = fresh.ok("logplay", flag, shadow_path, mp)
        assert "2 log entries; 1 new files; 1 new directories" in result.stdout
        text = (shadow_path / "root" / "d" / "f").read_text()
        assert parse_shadow_yaml(text).relpath == "d/f"
        assert ("shadow yaml checked for 1 files" in result.stdout) == tested
    result = fresh.ok("logplay", "-sS", tmp_path / "sh0", mp)  # exists now; checked
    assert "Existed: " not in result.stdout and "checked for 1 files" in result.stdout


@pytest.mark.parametrize(
    "args,code,message",
    [
        (["--daxdev", "dax0.0", "{shadow}"], 2, "--daxdev is only used with a shadow"),
        (["--shadow", "{shadow}", "--shadow", "{shadow}", "-d", "dax0.0"], 2, "given twice"),
        (["--shadow", "-d", "/dev/bogodax"], 2, "expected one argument"),
        (["--shadow", "{shadow}/frob", "--daxdev", "dax0.0"], 1, "does not exist"),
        (["--shadow", "{file}", "--daxdev", "dax0.0"], 1, "is not a directory"),
        (["--shadow", "{noroot}", "--daxdev", "dax0.0"], 1, "has no root/ directory"),
        (["--shadowtest", "{tmp}"], 2, "--shadowtest checks a shadow tree"),
        (["-rm", "{tmp}"], 2, "not allowed with argument"),
        ([], 2, "give a mount point"),
    ],
)
def test_logplay_refusals(fresh, tmp_path, args, code, message):
    (tmp_path / "shadow" / "root").mkdir(parents=True)
    (tmp_path / "noroot").mkdir()
    (tmp_path / "file").write_text("x")
    names = {
        "shadow": tmp_path / "shadow",
        "file": tmp_path / "file",
        "noroot": tmp_path / "noroot",
        "tmp": tmp_path,
    }
    result = fresh.cli("logplay", *(a.format(**names) for a in args))
    assert result.returncode == code, result.out
    assert message in result.stderr
    assert_no_traceback(result)
    assert _tree(tmp_path / "shadow" / "root") == {}


def test_shadow_logplay_of_a_mounted_device_points_at_the_mount(fresh, mounts, tmp_path):
    mounts.mount(fresh)
    (tmp_path / "sh" / "root").mkdir(parents=True)
    result = fresh.cli("logplay", "--shadow", tmp_path / "sh", "--daxdev", "dax0.0")
    assert result.returncode == 1 and "play the shadow from the mount instead" in result.stderr
