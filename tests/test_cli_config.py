"""`famfs-py config` (upstream's pull request #141): scopes, verbs, refusals, and cp and creat
taking their defaults from the settings. The files live in each test's directory (the
FAMFS_PY_CONFIG_SYSTEM / FAMFS_PY_CONFIG_GLOBAL seams), never in /etc or ~."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import Host, assert_no_traceback


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    return {
        "system": tmp_path / "etc" / "famfs.conf",
        "global": tmp_path / "home" / ".famfs" / "famfs.conf",
        "shadow": shadow,
    }


def _env(files: dict[str, Path]) -> dict[str, str]:
    return {
        "FAMFS_PY_CONFIG_SYSTEM": str(files["system"]),
        "FAMFS_PY_CONFIG_GLOBAL": str(files["global"]),
    }


def _config(host: Host, files, *args, expect: int = 0):
    result = host.cli("config", *args, env=_env(files))
    assert_no_traceback(result)
    assert result.returncode == expect, result.out
    return result


def test_scopes_override_in_order_and_list_shows_where(host, files):
    shadow = str(files["shadow"])
    _config(host, files, "--system", "--set", "interleave.nbuckets", "4")
    _config(host, files, "--system", "--set", "core.threadct", "8")
    _config(host, files, "--global", "--set", "interleave.nbuckets", "8")
    _config(host, files, "--global", "--set", "interleave.chunk_size", "2M")
    _config(host, files, "--local", "--shadow-path", shadow, "--set", "interleave.nstrips", "12")
    assert files["system"].read_text() == "interleave:\n  nbuckets: 4\ncore:\n  threadct: 8\n"
    assert (files["shadow"] / "config").read_text() == "interleave:\n  nstrips: 12\n"
    assert _config(host, files, "--get", "interleave.nbuckets").stdout == "8\n"
    assert _config(host, files, "--get", "interleave.chunk_size").stdout == "2097152\n"
    assert _config(host, files, "--get", "core.threadct").stdout == "8\n"
    _config(host, files, "--get", "interleave.nstrips", expect=1)  # no shadow path: not read
    got = _config(host, files, "--get", "interleave.nstrips", "--shadow-path", shadow)
    assert got.stdout == "12\n"
    listed = _config(host, files, "--list", "--show-origin", "--shadow-path", shadow).stdout
    assert listed.splitlines() == [
        f"# {files['system']} (system)",
        "interleave.nbuckets=4",
        "core.threadct=8",
        f"# {files['global']} (global)",
        "interleave.nbuckets=8",
        "interleave.chunk_size=2097152",
        f"# {files['shadow'] / 'config'} (local)",
        "interleave.nstrips=12",
    ]
    assert "#" not in _config(host, files, "--list").stdout
    _config(host, files, "--global", "--unset", "interleave.nbuckets")
    assert _config(host, files, "--get", "interleave.nbuckets").stdout == "4\n"
    _config(host, files, "--global", "--unset", "interleave.nbuckets")  # gone already: fine


@pytest.mark.parametrize(
    "args,message",
    [
        (["--global", "--set", "interleave.bogus", "1"], "interleave.bogus"),
        (["--global", "--set", "nbuckets", "1"], "unknown key 'nbuckets'"),
        (["--global", "--set", "interleave.nbuckets", "65"], "interleave.nbuckets: 65"),
        (["--global", "--set", "interleave.nbuckets", "many"], "interleave.nbuckets"),
        (["--global", "--set", "interleave.chunk_size", "3M"], "interleave.chunk_size"),
        (["--global", "--set", "core.threadct", "-1"], "core.threadct"),
        (["--global", "--unset", "core.nothing"], "core.nothing"),
        (["--get", "core.nothing"], "core.nothing"),
        (["--set", "core.verbose", "1"], "need --system, --global or --local"),
        (["--local", "--set", "core.verbose", "1"], "--shadow-path"),
        ([], "one of the arguments"),
    ],
)
def test_bad_keys_and_values_are_refused_naming_the_key(host, files, args, message):
    result = _config(host, files, *args, expect=2)
    assert message in result.stderr
    assert not files["global"].exists()  # nothing written


def test_a_broken_settings_file_is_named_with_its_line(host, files, mounts):
    files["global"].parent.mkdir(parents=True)
    files["global"].write_text("interleave:\n  nbuckets: 8\n  chunk_size: 5K\n")
    result = _config(host, files, "--list", expect=2)
    assert f"{files['global']}:3: interleave.chunk_size" in result.stderr
    files["global"].write_text("nbuckets = 8\n")
    assert f"{files['global']}:1" in _config(host, files, "--list", expect=2).stderr
    host.ok("dax", "create", "dax0.0", "--size", "4g")
    host.ok("mkfs", "dax0.0")
    mp = mounts.mount(host)
    refused = host.cli("creat", "-s", "4k", mp / "f", env=_env(files))
    assert refused.returncode == 2 and str(files["global"]) in refused.stderr
    assert not (mp / "f").exists()


def _strips(host: Host, path: Path) -> list:
    return json.loads(host.ok("getmap", "--json", path).stdout)


def test_cp_and_creat_take_their_defaults_from_the_settings(host, files, mounts, tmp_path):
    host.ok("dax", "create", "dax0.0", "--size", "8g")
    host.ok("mkfs", "dax0.0")
    mp = mounts.mount(host)
    env = _env(files)
    _config(host, files, "--global", "--set", "interleave.nbuckets", "4")
    host.ok("creat", "-s", "16m", mp / "half", env=env)  # nbuckets alone: not interleaved
    assert "nstrips" not in json.dumps(_strips(host, mp / "half"))
    _config(host, files, "--system", "--set", "interleave.nstrips", "2")
    _config(host, files, "--global", "--set", "interleave.chunk_size", "2m")
    host.ok("creat", "-s", "16m", mp / "striped", env=env)
    assert '"nstrips": 2' in json.dumps(_strips(host, mp / "striped"))
    host.ok("creat", "-N", "3", "-s", "16m", mp / "three", env=env)  # the command line wins
    assert '"nstrips": 3' in json.dumps(_strips(host, mp / "three"))
    src = tmp_path / "big"
    src.write_bytes(os.urandom(8 << 20))
    host.ok("cp", src, mp / "copied", env=env)
    assert '"nstrips": 2' in json.dumps(_strips(host, mp / "copied"))
    assert (mp / "copied").read_bytes() == src.read_bytes()
    (files["shadow"] / "config").write_text("core:\n  verbose: 1\n")
    copied = host.ok("cp", "--shadow-path", files["shadow"], src, mp / "again", env=env)
    assert "copied" in copied.stdout  # core.verbose from the local file
