"""Settings for the commands, as upstream famfs's `famfs config` keeps them (its pull request
#141): git-style scopes, each a small YAML file of `section:` lines and indented `key: value`
lines, read in order so that a later scope overrides an earlier one, and the command line
overrides them all.

  system  /etc/famfs.conf          (FAMFS_PY_CONFIG_SYSTEM names another file)
  global  ~/.famfs/famfs.conf      (FAMFS_PY_CONFIG_GLOBAL names another file)
  local   <shadow path>/config     (given with --shadow-path)

Keys: interleave.nbuckets, interleave.nstrips, interleave.chunk_size (K/M/G suffixes),
core.verbose, core.threadct. An unknown key, a bad value or a line that is not
`section:`/`  key: value` is refused with the file, the line and the key named. `famfs-py cp`
and `famfs-py creat` take their defaults from here (famfs_py.cli.common.apply_config).
"""

from __future__ import annotations

import os

from famfs_py.errors import FamfsError, UsageError

SYSTEM, GLOBAL, LOCAL = "system", "global", "local"
SCOPES = (SYSTEM, GLOBAL, LOCAL)  # lowest priority first
SYSTEM_ENV = "FAMFS_PY_CONFIG_SYSTEM"  # a seam for tests and packagers: the system file
GLOBAL_ENV = "FAMFS_PY_CONFIG_GLOBAL"  # ... and this user's file
LOCAL_NAME = "config"

_SUFFIXES = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
MAX_NBUCKETS = 64  # omf.MAX_NBUCKETS (not imported: commands start fast)
MAX_NSTRIPS = 16  # omf.MAX_SIMPLE_EXTENTS


class ConfigError(UsageError):
    """A settings file or value that cannot be used (fix it and run again)."""


def _count(text: str, key: str, low: int, high: int) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise ConfigError(f"{key}: {text!r} is not a whole number") from None
    if not low <= value <= high:
        raise ConfigError(f"{key}: {value} is out of range ({low}..{high})")
    return value


def _chunk_size(text: str, key: str) -> int:
    raw = text.strip().lower()
    scale = 1
    if raw and raw[-1] in _SUFFIXES:
        raw, scale = raw[:-1], _SUFFIXES[raw[-1]]
    try:
        value = int(raw, 0) * scale
    except ValueError:
        raise ConfigError(f"{key}: {text!r} is not a size (e.g. 2M, 4K, 0x200000)") from None
    if value < 4096 or value & (value - 1):
        raise ConfigError(f"{key}: {text} must be a power of two of at least 4K")
    return value


KEYS = {  # key -> how a value is checked and turned into a number
    "interleave.nbuckets": lambda text, key: _count(text, key, 1, MAX_NBUCKETS),
    "interleave.nstrips": lambda text, key: _count(text, key, 1, MAX_NSTRIPS),
    "interleave.chunk_size": _chunk_size,
    "core.verbose": lambda text, key: _count(text, key, 0, 9),
    "core.threadct": lambda text, key: _count(text, key, 0, 256),
}


def check_key(key: str) -> None:
    if key not in KEYS:
        raise ConfigError(f"unknown key {key!r} (known: {', '.join(KEYS)})")


def check(key: str, text: str) -> int:
    """The value of `key` written as `text`; ConfigError names the key if either is bad."""
    check_key(key)
    return KEYS[key](text, key)


def path_of(scope: str, shadow_path: str | None = None) -> str:
    """The file of `scope`; the local scope needs the shadow path."""
    if scope == SYSTEM:
        return os.environ.get(SYSTEM_ENV) or "/etc/famfs.conf"
    if scope == GLOBAL:
        return os.environ.get(GLOBAL_ENV) or os.path.join(_home(), ".famfs", "famfs.conf")
    if scope == LOCAL:
        if not shadow_path:
            raise ConfigError("the local scope needs --shadow-path DIR")
        return os.path.join(shadow_path, LOCAL_NAME)
    raise ConfigError(f"unknown scope {scope!r}")


def _home() -> str:
    """This user's home: $HOME if it is theirs (a process that changed user keeps the old
    $HOME), else the password database's."""
    home = os.environ.get("HOME")
    try:
        if home and os.stat(home).st_uid == os.geteuid():
            return home
    except OSError:
        pass
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_dir
    except KeyError:
        return home or "/"


def read_file(path: str) -> dict[str, str]:
    """key -> value text of one file ({} if there is none), every key and value checked. A
    file this user may not read is left out with a warning (as git does)."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return {}
    except PermissionError as exc:
        import sys

        print(
            f"famfs-py: warning: {path}: {exc.strerror}; its settings are not used", file=sys.stderr
        )
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read ({exc})") from None
    out: dict[str, str] = {}
    section = ""
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].rstrip()
        if not text.strip():
            continue
        where = f"{path}:{number}"
        if not text[0].isspace():
            if not text.endswith(":") or " " in text:
                raise ConfigError(f"{where}: expected a section ('interleave:' or 'core:')")
            section = text[:-1]
            continue
        name, sep, value = text.strip().partition(":")
        if not sep or not section or not value.strip():
            raise ConfigError(f"{where}: expected '  key: value' under a section")
        key = f"{section}.{name.strip()}"
        try:
            check(key, value.strip())
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc.message}") from None
        out[key] = value.strip()
    return out


def write_file(path: str, values: dict[str, str]) -> None:
    """Write `values` (checked keys) as upstream's YAML, replacing the file at once."""
    sections: dict[str, list[str]] = {}
    for key in KEYS:  # the known order, for stable files
        if key in values:
            section, name = key.split(".", 1)
            sections.setdefault(section, []).append(f"  {name}: {values[key]}")
    text = "".join(f"{s}:\n" + "\n".join(lines) + "\n" for s, lines in sections.items())
    directory = os.path.dirname(path) or "."
    try:
        os.makedirs(directory, exist_ok=True)
        temporary = f"{path}.tmp.{os.getpid()}"
        with open(temporary, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(temporary, path)
    except OSError as exc:
        raise FamfsError(f"{path}: cannot be written ({exc.strerror})", exc.errno) from None


class Settings:
    """The merged settings and, for each key, the file it came from."""

    def __init__(self, shadow_path: str | None = None) -> None:
        self.values: dict[str, int] = {}
        self.origin: dict[str, str] = {}
        self.files: list[tuple[str, str, dict[str, str]]] = []  # (scope, path, values)
        for scope in SCOPES:
            if scope == LOCAL and not shadow_path:
                continue
            path = path_of(scope, shadow_path)
            found = read_file(path)
            if found:
                self.files.append((scope, path, found))
            for key, text in found.items():
                self.values[key] = check(key, text)
                self.origin[key] = path

    def get(self, key: str) -> int | None:
        check_key(key)
        return self.values.get(key)


def load(shadow_path: str | None = None) -> Settings:
    return Settings(shadow_path)
