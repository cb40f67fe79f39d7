"""Mount options, declared once: each is a field of `MountOptions` whose metadata says its
command-line flags, its `-o` names, its help and whether the daemon process gets it. The
`famfs-py mount` parser, `-o` parsing (fstab, mount(8)), the daemon's argv and `--help` are
all generated from these fields.

No pyfuse3 or trio here: the command line imports this module to start fast.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import MISSING, dataclass, field, fields
from enum import StrEnum
from typing import Any

from famfs_py.dax.flush_mode import FLUSH_MODES, FlushMode


class CacheMode(StrEnum):
    """What the kernel's page cache keeps of a file between opens (`-o cache=`)."""

    AUTO = "auto"  # dropped at each open; other hosts' changes arrive (daemon/propagation)
    NEVER = "never"  # direct I/O: reads and writes go to memory, no MAP_SHARED mapping
    ALWAYS = "always"  # kept across opens; other hosts' changes arrive


CACHE_MODES = tuple(CacheMode)

# mount(8)/fstab options that are not the daemon's business
IGNORED_O_OPTIONS = frozenset(
    {
        "defaults",
        "auto",
        "noauto",
        "nofail",
        "_netdev",
        "_rnetdev",
        "user",
        "nouser",
        "users",
        "owner",
        "dev",
        "nodev",
        "suid",
        "nosuid",
        "exec",
        "noexec",
        "atime",
        "noatime",
        "relatime",
        "strictatime",
        "async",
        "sync",
        "dirsync",
        "diratime",
        "nodiratime",
        "lazytime",
        "nolazytime",
        "silent",
        "loud",
        "ro",
    }
)


def _option(
    *flags: str,
    default: Any,
    help: str,
    o: Sequence[str] | None = None,
    parse: Callable[[str], Any] | None = None,
    choices: Sequence[str] | None = None,
    metavar: str | None = None,
    daemon: bool = True,
    hidden: bool = False,
) -> Any:
    """A mount option: `flags` for the command line (none: -o only), `o` names for -o
    (default: the field's name; () for none), `daemon`: passed on to the daemon process."""
    return field(
        default=default,
        metadata={
            "flags": flags,
            "help": help,
            "o": o,
            "parse": parse,
            "choices": choices,
            "metavar": metavar,
            "daemon": daemon,
            "hidden": hidden,
        },
    )


def _positional(metavar: str) -> Any:
    return field(default="", metadata={"positional": metavar})


def _number(kind: Callable[[str], Any], what: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if value < 0:
            raise argparse.ArgumentTypeError(f"{text!r}: must not be negative")
        return value

    return parse


@dataclass
class MountOptions:
    """Everything `famfs-py mount` can be told, and so everything the daemon runs with."""

    device: str = _positional("DEVICE")
    mountpoint: str = _positional("MOUNTPOINT")
    # -- how to run ---------------------------------------------------------------------------
    foreground: bool = _option(
        "--foreground", default=False, help="stay attached (log to stderr)", o=(), daemon=False,
    )  # fmt: skip
    systemd: bool = _option(
        "--systemd", default=False, o=(), daemon=False,
        help="run under systemd: foreground, sd_notify, journal logging",
    )  # fmt: skip
    log_file: str | None = _option(
        "--log-file", default=None, daemon=False,
        help="daemon log (default /var/log/famfs-py/<mount>.log; with --foreground: stderr, or "
        "the journal under systemd)",
    )  # fmt: skip
    ready_fd: int | None = _option(
        "--ready-fd", default=None, parse=int, o=(), daemon=False, hidden=True,
        help="(internal) the pipe to report readiness on",
    )  # fmt: skip
    # -- what to mount ------------------------------------------------------------------------
    root: str | None = _option(
        "--root", default=None, metavar="DIR",
        help="emulation root of emulated devices (default: $FAMFS_PY_DAX_ROOT, else real "
        "devices under /sys, then /run/famfs-py/emul)",
    )  # fmt: skip
    system_uuid: str | None = _option(
        "--system-uuid", default=None, metavar="UUID", o=("system_uuid", "system-uuid"),
        help="act as the host with this system UUID (default: $FAMFS_PY_SYSTEM_UUID, else "
        "/opt/famfs/system_uuid)",
    )  # fmt: skip
    devdax: bool = _option("--devdax", default=False, help="accept a real device in devdax mode")
    rw: bool = _option(
        "--rw", default=False, o=("rw", "client_rw"), help="writable file data on a client"
    )
    # -- how to serve -------------------------------------------------------------------------
    cache: str = _option(
        "-c", "--cache", default=CacheMode.AUTO, choices=CACHE_MODES,
        help="page cache policy; other hosts' changes reach it within ~10-50 ms in auto and "
        "always: auto (default) drops a file's pages at each open, always keeps them across "
        "opens, never is direct I/O: every read and write goes to memory, no page-cache copy, "
        "and no MAP_SHARED mapping through the mount (mmap fails with ENODEV; use "
        "famfs_py.open_mapped)",
    )  # fmt: skip
    flush: str = _option(
        "--flush", default=FlushMode.AUTO, choices=FLUSH_MODES,
        help="CPU cache flushing where data crosses hosts (log, writes; mapped files and "
        "commands that write follow the mount): auto (default) flushes unless the device is "
        "known coherent, on, off (memory known coherent between the hosts)",
    )  # fmt: skip
    timeout: float = _option(
        "-t", "--timeout", default=30.0, parse=_number(float, "a number of seconds"),
        help="attribute and entry cache timeout in seconds (default 30)",
    )  # fmt: skip
    commit_delay: float = _option(
        "--commit-delay", default=1.0, parse=_number(float, "a number of seconds"),
        help="master: seconds after a file created through the mount is last closed (a "
        "directory: last changed, nothing beneath it open) before it is logged and other "
        "hosts see it; fsync logs at once (default 1)",
    )  # fmt: skip
    readahead: int = _option(
        "--readahead", default=4096, parse=_number(int, "a number of KiB"), metavar="KB",
        help="kernel readahead for the mount in KiB (default 4096; 0 keeps the kernel's)",
    )  # fmt: skip
    allow_other: bool = _option(
        "--allow-other", default=False,
        help="let users other than the mounting one use the mount (FUSE allow_other; the "
        "default when root mounts, as upstream); file modes and owners from the log are "
        "enforced for them",
    )  # fmt: skip
    nouseraccess: bool = _option(
        "-u", "--nouseraccess", default=False,
        help="other users have no access, also when root mounts (upstream: no allow_other)",
    )  # fmt: skip
    nodefaultperm: bool = _option(
        "-p", "--nodefaultperm", default=False, help="do not let the kernel check file permissions"
    )
    read: bool = _option(
        "-r", "--read", default=False, o=(), help="accepted (upstream; not with -m)"
    )
    mmap: bool = _option(
        "-m", "--mmap", default=False, o=(), help="accepted (upstream; not with -r)"
    )
    fuse: bool = _option(
        "-f", "--fuse", default=False, o=(), daemon=False,
        help="accepted (upstream's mode selector): famfs-py is a FUSE filesystem",
    )  # fmt: skip
    nofuse: bool = _option(
        "-F", "--nofuse", default=False, o=(), daemon=False,
        help="refused: upstream's famfs v1 kernel module is not famfs-py's",
    )  # fmt: skip
    verbose: bool = _option("-v", "--verbose", default=False, o=(), help="more logging (-vvv)")
    debug: bool = _option("-d", "--debug", default=False, help="debug logging")
    follow_interval: float = _option(
        "--follow-interval", default=0.2, parse=_number(float, "a number of seconds"), o=(),
        hidden=True, help="seconds between looks at the log (every host: for other writers)",
    )  # fmt: skip
    changes_interval: float = _option(
        "--changes-interval", default=0.01, parse=_number(float, "a number of seconds"), o=(),
        hidden=True, help="seconds between looks at the other hosts' change announcements "
        "(0: do not look)",
    )  # fmt: skip
    watch_interval: float = _option(
        "--watch-interval", default=0.5, parse=_number(float, "a number of seconds"), o=(),
        hidden=True, help="seconds between looks at the device's health",
    )  # fmt: skip
    status_interval: float = _option(
        "--status-interval", default=2.0, parse=_number(float, "a number of seconds"), o=(),
        hidden=True, help="seconds between STATUS= refreshes under systemd",
    )  # fmt: skip

    # -- derived ------------------------------------------------------------------------------
    @property
    def others_allowed(self) -> bool:
        """As upstream: a mount made by root lets other users in (the log's modes and owners
        enforced for them) unless -u; another user's mount only with --allow-other (FUSE
        then wants user_allow_other in /etc/fuse.conf)."""
        return (self.allow_other or os.geteuid() == 0) and not self.nouseraccess

    def check(self) -> None:
        """Combinations upstream refuses, and what famfs-py cannot do: ValueError."""
        if self.nofuse:
            raise ValueError(
                "-F/--nofuse selects upstream's famfs v1 kernel module, which famfs-py does "
                "not use: famfs-py is a FUSE filesystem only (drop -F)"
            )
        if self.read and self.mmap:
            raise ValueError("-r/--read and -m/--mmap exclude each other (as upstream)")

    @property
    def default_permissions(self) -> bool:
        return not self.nodefaultperm

    @property
    def stays_attached(self) -> bool:
        return self.foreground or self.systemd or self.ready_fd is not None


def _options() -> list[Any]:
    return [f for f in fields(MountOptions) if "flags" in f.metadata]


def _o_names(spec: Any) -> tuple[str, ...]:
    names = spec.metadata["o"]
    return (spec.name,) if names is None else tuple(names)


O_NAMES: dict[str, Any] = {name: spec for spec in _options() for name in _o_names(spec)}


def o_help() -> str:
    names = ", ".join(
        name + ("=" if spec.type != "bool" else "")
        for spec in _options()
        if not spec.metadata["hidden"]
        for name in _o_names(spec)
    )
    return (
        f"comma-separated mount options ({names}); fstab and mount(8) options such as "
        "defaults, nofail, _netdev, x-systemd.* are ignored"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Every mount option as a command-line argument, and -o."""
    for spec in fields(MountOptions):
        meta = spec.metadata
        if "positional" in meta:
            parser.add_argument(spec.name, metavar=meta["positional"])
            continue
        if not meta["flags"]:
            continue
        help_text = argparse.SUPPRESS if meta["hidden"] else meta["help"]
        if spec.type == "bool":
            parser.add_argument(*meta["flags"], dest=spec.name, action="store_true", help=help_text)
        else:
            parser.add_argument(
                *meta["flags"],
                dest=spec.name,
                type=meta["parse"],
                choices=meta["choices"],
                default=spec.default,
                metavar=meta["metavar"],
                help=help_text,
            )
    parser.add_argument(
        "-o", dest="options", action="append", default=[], metavar="OPTS", help=o_help()
    )


def is_ignored(item: str) -> bool:
    return item in IGNORED_O_OPTIONS or item.startswith(("x-", "comment="))


def is_known(item: str) -> bool:
    return is_ignored(item) or item.partition("=")[0] in O_NAMES


def apply_o_options(opts: MountOptions, groups: Iterable[str]) -> None:
    """Fold fstab-style -o option groups into `opts`; ValueError names a bad one."""
    for group in groups:
        for item in (i.strip() for i in group.split(",")):
            if not item or is_ignored(item):
                continue
            name, has_value, value = item.partition("=")
            spec = O_NAMES.get(name)
            if spec is None:
                raise ValueError(f"unknown mount option -o {item}")
            takes_value = spec.type != "bool"
            if takes_value != bool(has_value):
                raise ValueError(
                    f"mount option -o {item}: "
                    + ("needs a value" if takes_value else "takes no value")
                )
            setattr(opts, spec.name, _o_value(spec, item, value) if takes_value else True)


def _o_value(spec: Any, item: str, value: str) -> Any:
    choices = spec.metadata["choices"]
    if choices and value not in choices:
        raise ValueError(f"mount option -o {item}: {spec.name} is one of {', '.join(choices)}")
    parse = spec.metadata["parse"]
    try:
        return parse(value) if parse else value
    except (argparse.ArgumentTypeError, ValueError) as exc:
        raise ValueError(f"mount option -o {item}: {exc}") from None


def from_namespace(args: argparse.Namespace) -> MountOptions:
    """The options argparse collected (then -o applied: ValueError names a bad one)."""
    opts = MountOptions(**{f.name: getattr(args, f.name) for f in fields(MountOptions)})
    apply_o_options(opts, getattr(args, "options", []))
    opts.check()
    if opts.root:
        opts.root = os.path.abspath(opts.root)
    return opts


def daemon_argv(opts: MountOptions) -> list[str]:
    """The options again, as the daemon process's command-line arguments."""
    argv: list[str] = []
    for spec in _options():
        meta = spec.metadata
        value = getattr(opts, spec.name)
        if not meta["daemon"] or not meta["flags"] or value == _default(spec):
            continue
        flag = meta["flags"][-1]
        argv += [flag] if spec.type == "bool" else [flag, str(value)]
    return [*argv, opts.device, os.path.abspath(opts.mountpoint)]


def _default(spec: Any) -> Any:
    return None if spec.default is MISSING else spec.default
