"""The plain form of `famfs-py creat`, the one scripts run once per file:

    famfs-py creat -s SIZE [-m MODE] [-u UID] [-g GID] FILE

run without argparse, the typed protocol or the json package, so that creating one file costs
about what Python's own start-up does (issue 25). It gives the same result, output and exit
code as the full command (famfs_py.cli.creat_cmd). Anything else — another option, an option
given twice or joined to its value, -v, a size of 0, a value it cannot parse, a settings file
that could set defaults (famfs_py.config), --help — is left to the full command, which parses
the whole command line and says what is wrong.

The request it sends is protocol.Creat's encoding, built here from plain values; a test holds
the two to the same bytes.
"""

from __future__ import annotations

import os

from famfs_py import channel, wire
from famfs_py.cli import values
from famfs_py.errors import FamfsError

TYPE_CHECKING = False  # not typing's (mypy reads this as true)
if TYPE_CHECKING:
    from collections.abc import Sequence

_OPTIONS = {
    "-s": "size",
    "--size": "size",
    "-m": "mode",
    "--mode": "mode",
    "-u": "uid",
    "--uid": "uid",
    "-g": "gid",
    "--gid": "gid",
}
_PARSE = {
    "size": values.size,
    "mode": values.mode,
    "uid": values.numeric_id,
    "gid": values.numeric_id,
}
DEFAULT_MODE = 0o644  # creat_cmd's -m default


class PlainCreat:
    """One file to create: its path as given, and the request's fields."""

    __slots__ = ("fields", "file")

    def __init__(self, file: str, fields: dict[str, int]) -> None:
        self.file = file
        self.fields = fields


def parse(argv: Sequence[str]) -> PlainCreat | None:
    """The plain form's file and fields, or None: not the plain form (creat_cmd decides)."""
    given: dict[str, str] = {}
    files: list[str] = []
    args = iter(argv)
    for arg in args:
        name = _OPTIONS.get(arg)
        if name is None:
            if arg.startswith("-"):
                return None
            files.append(arg)
            continue
        value = next(args, None)
        if value is None or name in given:
            return None
        given[name] = value
    if len(files) != 1 or "size" not in given or _settings_may_apply():
        return None
    try:
        fields = {name: _PARSE[name](text) for name, text in given.items()}
    except ValueError:
        return None
    if not fields["size"]:
        return None
    fields.setdefault("mode", DEFAULT_MODE)
    return PlainCreat(files[0], fields)


def _settings_may_apply() -> bool:
    """A settings file exists that could give creat defaults (famfs_py.config's system and
    global scopes; the local one needs --shadow-path, which is not the plain form)."""
    from famfs_py import config

    try:
        return bool(config.load(None).values)
    except FamfsError:  # a broken settings file: the full command names it
        return True


def request(relpath: str, fields: dict[str, int]) -> bytes:
    """protocol.Creat(relpath, **fields).encode(), without the protocol's import."""
    body: dict[str, object] = {"op": "creat", "path": relpath}
    for name in ("size", "mode", "uid", "gid"):
        if name in fields:
            body[name] = fields[name]
    return wire.dumps(body)


def run(plain: PlainCreat) -> int:
    """Create (or find, at that size) the file; errors raise FamfsError, as in creat_cmd."""
    where = channel.locate(plain.file)
    with channel.Channel(where.mountpoint) as chan:
        answer, fds = chan.exchange(request(where.relpath, plain.fields))
    for fd in fds:
        os.close(fd)
    wire.decode_answer(answer)  # an error answer raises what it says
    return 0
