"""The plain form of `famfs-py creat` (famfs_py.cli.creat_plain) and the control channel's wire
(famfs_py.wire): the plain form gives what the full command gives, sends the protocol's own
request, leaves every other command line to the full command, and imports none of the heavy
modules (issue 25: one creat within 2× Python's start-up; the time is the bench's to measure,
what is imported is this test's)."""

from __future__ import annotations

import json
import os
import stat
import subprocess

import pytest
from helpers import BIN, NO_SETTINGS, assert_no_traceback

from famfs_py import protocol, wire
from famfs_py.cli import creat_cmd, creat_plain

# what the plain form must not import: each costs a command milliseconds on a slow machine
HEAVY = {
    "argparse",
    "json",
    "re",
    "typing",
    "dataclasses",
    "pathlib",
    "enum",
    "socket",
    "famfs_py.protocol",
    "famfs_py.replies",
    "famfs_py.omf",
}


@pytest.fixture
def fs(fresh, mounts):
    return fresh, mounts.mount(fresh)


def _imported_by_the_program(stderr: str) -> set[str]:
    """Modules `-X importtime` reports after the interpreter's site set-up finished."""
    names: list[str] = []
    for line in stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            names.append(line.rsplit("|", 1)[1].strip())
    if "site" in names:
        names = names[names.index("site") + 1 :]
    return set(names)


def _creat_importtime(host, *args) -> subprocess.CompletedProcess[str]:
    """famfs-py creat as a user runs it: no test switches on PYTHONPATH, no settings files."""
    env = {**os.environ, **NO_SETTINGS, **host.env, "PYTHONPROFILEIMPORTTIME": "1"}
    env.pop("PYTHONPATH", None)
    return subprocess.run(
        [str(BIN / "famfs-py"), "creat", *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_plain_creat_creates_the_file_without_importing_heavy_modules(fs):
    host, mp = fs
    result = _creat_importtime(host, "-s", "8k", "-m", "0600", "-u", "1001", mp / "f")
    assert result.returncode == 0, result.stderr
    imported = _imported_by_the_program(result.stderr)
    # importtime does not list what importlib.import_module loads (the command modules),
    # only what they import: the channel's import shows it reported at all
    assert "famfs_py.channel" in imported
    assert not imported & HEAVY, sorted(imported & HEAVY)
    st = os.stat(mp / "f")
    assert (st.st_size, stat.S_IMODE(st.st_mode), st.st_uid) == (8192, 0o600, 1001)


def test_the_plain_form_fails_as_the_full_command_does(fs):
    host, mp = fs
    host.ok("creat", "-s", "8k", mp / "f")
    host.ok("creat", "-s", "8k", mp / "f")  # the same size: a no-op success
    result = host.cli("creat", "-s", "16k", mp / "f")
    assert result.returncode == 1 and "exists with size 8192, not 16384" in result.stderr
    result = host.cli("creat", "-s", "4k", mp / "nodir" / "f")
    assert result.returncode == 1 and result.stderr.startswith("famfs-py creat: "), result.out
    result = host.cli("creat", "-s", "4k", "/tmp/not-famfs-py")
    assert result.returncode == 1 and "not in a famfs-py mount" in result.stderr
    assert_no_traceback(result)


def test_a_command_line_the_plain_form_does_not_take_runs_in_full(fs):
    host, mp = fs
    result = _creat_importtime(host, "-v", "-s", "4k", mp / "f")
    assert result.returncode == 0, result.stderr
    assert "created, 4096 bytes" in result.stdout
    assert "argparse" in _imported_by_the_program(result.stderr)
    result = host.cli("creat", "-s", "4kb", mp / "g")  # argparse says what is wrong
    assert result.returncode == 2 and "'4kb' is not a size" in result.stderr, result.out


def test_settings_files_send_creat_to_the_full_command(fs, tmp_path):
    host, mp = fs
    settings = tmp_path / "famfs.conf"
    settings.write_text("core:\n  verbose: 1\n")
    result = host.cli("creat", "-s", "4k", mp / "f", env={"FAMFS_PY_CONFIG_GLOBAL": str(settings)})
    assert result.returncode == 0 and "created, 4096 bytes" in result.stdout, result.out


@pytest.mark.parametrize(
    "argv",
    [
        ["-s4k", "f"],  # joined to its value
        ["-s", "4k"],  # no file
        ["-s", "4k", "a", "b"],
        ["-s", "4k", "-s", "8k", "f"],  # given twice
        ["-v", "-s", "4k", "f"],
        ["-s", "0", "f"],
        ["-s", "4kb", "f"],
        ["-m", "0999", "-s", "4k", "f"],
        ["-u", "-1", "-s", "4k", "f"],
        ["-s", "4k", "--", "f"],
        ["-s", "4k", "-", "f"],
        ["--help"],
        ["f"],  # no size: adopt an existing file's
        ["-r", "-S", "7", "-s", "4k", "f"],
        ["-M", "a,4k"],
        ["-N", "2", "-B", "4", "-s", "4k", "f"],
    ],
)
def test_the_plain_form_leaves_other_command_lines_to_the_full_command(argv):
    assert creat_plain.parse(argv) is None


@pytest.mark.parametrize(
    "argv",
    [
        ["-s", "4k", "f"],
        ["--size", "0x200000", "f"],
        ["f", "-m", "600", "-s", "3m"],
        ["-u", "7", "-g", "8", "--mode", "0444", "-s", "4096", "dir/f"],
    ],
)
def test_the_plain_form_reads_a_command_line_as_argparse_does_and_sends_the_protocols_request(
    argv, monkeypatch
):
    monkeypatch.setenv("FAMFS_PY_CONFIG_SYSTEM", NO_SETTINGS["FAMFS_PY_CONFIG_SYSTEM"])
    monkeypatch.setenv("FAMFS_PY_CONFIG_GLOBAL", NO_SETTINGS["FAMFS_PY_CONFIG_GLOBAL"])
    plain = creat_plain.parse(argv)
    assert plain is not None
    args = creat_cmd.build_parser("famfs-py creat").parse_args(argv)
    assert plain.file == args.file
    expected = protocol.Creat(args.file, args.size, args.mode, args.uid, args.gid).encode()
    assert creat_plain.request(plain.file, plain.fields) == expected


# -- the wire --------------------------------------------------------------------------------
MESSAGES = [
    {"op": "creat", "path": 'a/\u00e9"\\\n\t', "size": 1 << 62, "mode": 0o644, "uid": None},
    {"ok": True, "list": [1, -2, {"a": True, "b": False, "c": None}], "float": 1.5},
    {"ok": False, "errno": 2, "error": "x \u2603 \U0001f600"},
    [],
    {},
]


@pytest.mark.parametrize("message", MESSAGES)
def test_the_wire_writes_and_reads_what_json_does(message):
    assert wire.dumps(message) == json.dumps(message).encode()
    assert wire.loads(json.dumps(message).encode()) == message
    assert wire.loads(b" \n" + json.dumps(message, indent=2).encode() + b"\n") == message


@pytest.mark.parametrize(
    "data", [b"", b"{", b"nope", b'{"a": 1} x', b"NaN", b"[Infinity]", b"\xff\xfe", b'{"a": }']
)
def test_the_wire_refuses_what_is_not_a_message(data):
    with pytest.raises(ValueError):
        wire.loads(data)


def test_the_wire_refuses_deep_nesting_as_an_error_not_a_crash():
    with pytest.raises(RecursionError):
        wire.loads(b"[" * 100_000)
    with pytest.raises(TypeError):
        wire.dumps({"a": object()})
