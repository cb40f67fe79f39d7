"""`famfs-py mount`: start the daemon for a device and return once the mount answers.

Without -f the daemon is started as a separate process (its own session, output to a log
file) and this command waits for its word on a pipe: mounted, or why not. With --systemd it
stays in the foreground and tells systemd instead (famfs_py.daemon.systemd).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

from famfs_py.cli.common import Parser, add_root_option, add_system_uuid_option
from famfs_py.errors import FamfsError

EXIT_CODES = """
  0  mounted (the mount answers); with -f: unmounted cleanly
  1  the mount failed; nothing is left mounted and the device is not claimed
  2  usage error (unknown option, bad -o option)
"""
READY_WAIT = 60.0
LOG_DIR_ENV = "FAMFS_PY_LOG_DIR"
DEFAULT_LOG_DIR = "/var/log/famfs-py"

# -o options: name -> (argparse dest, takes a value)
O_OPTIONS: dict[str, tuple[str, bool]] = {
    "cache": ("cache", True),
    "timeout": ("timeout", True),
    "rw": ("rw", False),
    "client_rw": ("rw", False),  # what mount(8) users write: it always passes rw itself
    "devdax": ("devdax", False),
    "debug": ("debug", False),
    "nouseraccess": ("nouseraccess", False),
    "allow_other": ("allow_other", False),
    "nodefaultperm": ("nodefaultperm", False),
    "system_uuid": ("system_uuid", True),
    "system-uuid": ("system_uuid", True),
    "root": ("root", True),
    "log_file": ("log_file", True),
    "readahead": ("readahead", True),
}
# mount(8)/fstab options that are not the daemon's business
O_IGNORED = {
    "defaults",
    "auto",
    "noauto",
    "nofail",
    "_netdev",
    "user",
    "nouser",
    "users",
    "owner",
    "comment",
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
    "_rnetdev",
}


def build_parser(prog: str) -> Parser:
    parser = Parser(
        prog=prog,
        description="Mount the famfs on DEVICE at MOUNTPOINT. The device is claimed, its "
        "superblock and log checked and replayed; the command returns once the mount answers.",
        exit_codes=EXIT_CODES,
    )
    parser.add_argument(
        "-f", "--foreground", action="store_true", help="stay attached (log to stderr)"
    )
    parser.add_argument(
        "--systemd",
        action="store_true",
        help="run under systemd: foreground, sd_notify, journal logging",
    )
    parser.add_argument(
        "-c",
        "--cache",
        choices=["auto", "never", "always"],
        default="auto",
        help="page cache policy (default auto: dropped at each open)",
    )
    parser.add_argument(
        "-t",
        "--timeout",
        type=float,
        default=30.0,
        help="attribute and entry cache timeout in seconds (default 30)",
    )
    parser.add_argument(
        "-o",
        dest="options",
        action="append",
        default=[],
        metavar="OPTS",
        help="comma-separated mount options (cache=, timeout=, rw or client_rw, devdax, "
        "allow_other, nouseraccess, nodefaultperm, system_uuid=, root=, log_file=); fstab "
        "and mount(8) options such as defaults, nofail, _netdev, x-systemd.* are ignored",
    )
    parser.add_argument("--rw", action="store_true", help="writable file data on a client")
    parser.add_argument("--devdax", action="store_true", help="accept a real device in devdax mode")
    parser.add_argument(
        "--allow-other",
        action="store_true",
        help="let users other than the mounting one use the mount (FUSE allow_other); file "
        "modes and owners from the log are enforced for them",
    )
    parser.add_argument(
        "-u",
        "--nouseraccess",
        action="store_true",
        help="accepted (upstream): other users have no access unless --allow-other",
    )
    parser.add_argument(
        "-p",
        "--nodefaultperm",
        action="store_true",
        help="do not let the kernel check file permissions",
    )
    parser.add_argument("-r", "--read", action="store_true", help="accepted (upstream)")
    parser.add_argument("-m", "--mmap", action="store_true", help="accepted (upstream)")
    parser.add_argument("-v", "--verbose", action="store_true", help="more logging")
    parser.add_argument("-d", "--debug", action="store_true", help="debug logging")
    parser.add_argument(
        "--log-file",
        help="daemon log (default /var/log/famfs-py/<mount>.log; with -f: stderr, or the "
        "journal under systemd)",
    )
    parser.add_argument("--follow-interval", type=float, default=0.2, help=argparse.SUPPRESS)
    parser.add_argument("--watch-interval", type=float, default=0.5, help=argparse.SUPPRESS)
    parser.add_argument(
        "--readahead",
        type=int,
        default=4096,
        metavar="KB",
        help="kernel readahead for the mount in KiB (default 4096; 0 keeps the kernel's)",
    )
    parser.add_argument("--status-interval", type=float, default=2.0, help=argparse.SUPPRESS)
    parser.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    add_root_option(parser)
    add_system_uuid_option(parser)
    parser.add_argument("device", metavar="DEVICE")
    parser.add_argument("mountpoint", metavar="MOUNTPOINT")
    return parser


def _ignored_o_option(item: str) -> bool:
    # ro: data is read-only unless rw/the master; nothing to do
    return item in O_IGNORED or item == "ro" or item.startswith(("x-", "comment="))


def known_o_option(item: str) -> bool:
    return _ignored_o_option(item) or item.partition("=")[0] in O_OPTIONS


def apply_o_options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Fold fstab-style -o options into args; unknown ones are a usage error."""
    for group in args.options:
        for item in group.split(","):
            item = item.strip()
            if not item or _ignored_o_option(item):
                continue
            name, has_value, value = item.partition("=")
            spec = O_OPTIONS.get(name)
            if spec is None:
                parser.error(f"unknown mount option -o {item}")
            dest, takes_value = spec
            if takes_value != bool(has_value):
                parser.error(
                    f"mount option -o {item}: "
                    + ("needs a value" if takes_value else "takes no value")
                )
            if dest == "readahead":
                if not value.isdigit():
                    parser.error(f"mount option -o {item}: readahead is a number of KiB")
                args.readahead = int(value)
            elif dest == "timeout":
                try:
                    setattr(args, dest, float(value))
                except ValueError:
                    parser.error(f"mount option -o {item}: not a number")
            elif dest == "cache":
                if value not in ("auto", "never", "always"):
                    parser.error(f"mount option -o {item}: cache is auto, never or always")
                args.cache = value
            else:
                setattr(args, dest, value if takes_value else True)


def default_log_file(mountpoint: str) -> Path:
    base = Path(os.environ.get(LOG_DIR_ENV, DEFAULT_LOG_DIR))
    name = os.path.realpath(mountpoint).strip("/").replace("/", "-") or "root"
    return base / f"{name}.log"


class PipeReadiness:
    """Tells the waiting `famfs-py mount` parent how the mount went, once."""

    def __init__(self, fd: int) -> None:
        self.fd: int | None = fd

    def _send(self, message: dict) -> None:
        if self.fd is None:
            return
        try:
            os.write(self.fd, (json.dumps(message) + "\n").encode())
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None

    def ready(self, summary: str) -> None:
        self._send({"ok": True, "summary": summary})

    def failed(self, message: str, exit_code: int) -> None:
        print(f"famfs-py mount: {message}", file=sys.stderr, flush=True)
        self._send({"ok": False, "message": message, "exit_code": exit_code})

    def stopping(self) -> None:
        pass


class ConsoleReadiness:
    """Tells the person at the terminal (or the journal, with priority prefixes)."""

    def __init__(self, journal: bool = False) -> None:
        self.info, self.error = ("<6>", "<3>") if journal else ("", "")

    def ready(self, summary: str) -> None:
        print(f"{self.info}famfs-py mount: mounted ({summary})", file=sys.stderr, flush=True)

    def failed(self, message: str, exit_code: int) -> None:
        print(f"{self.error}famfs-py mount: {message}", file=sys.stderr, flush=True)

    def stopping(self) -> None:
        pass


def _setup_daemon_logging(args: argparse.Namespace) -> bool:
    """The daemon logs to --log-file if given; else to the journal, with `<N>` priority
    prefixes and no timestamps, when systemd runs it; else to stderr. True: the journal."""
    import logging

    from famfs_py.daemon.systemd import JournalFormatter, stderr_is_journal

    handler: logging.Handler
    journal = False
    plain = logging.Formatter(
        "%(asctime)s famfs-py[%(process)d] %(levelname)s %(name)s: %(message)s"
    )
    if args.log_file and args.ready_fd is None:
        path = Path(args.log_file)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(path)
        except OSError as exc:
            raise FamfsError(
                f"cannot open the daemon log {path}: {exc.strerror} (choose one with --log-file)"
            ) from None
        handler.setFormatter(plain)
    elif args.systemd or stderr_is_journal():
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JournalFormatter())
        journal = True
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(plain)
    level = logging.DEBUG if args.debug else logging.INFO
    logging.basicConfig(level=level, handlers=[handler], force=True)
    return journal


def run_foreground(args: argparse.Namespace) -> int:
    from famfs_py.daemon.mount import MountOptions, Readiness, serve

    journal = _setup_daemon_logging(args)
    readiness: Readiness
    if args.systemd:
        import faulthandler

        from famfs_py.daemon.systemd import SystemdReadiness

        faulthandler.enable()  # a watchdog SIGABRT leaves every thread's stack in the journal
        readiness = SystemdReadiness(status_interval=args.status_interval)
    elif args.ready_fd is not None:
        readiness = PipeReadiness(args.ready_fd)
    else:
        readiness = ConsoleReadiness(journal)
    opts = MountOptions(
        device=args.device,
        mountpoint=args.mountpoint,
        root=args.root,
        system_uuid=args.system_uuid,
        cache=args.cache,
        timeout=args.timeout,
        allow_other=args.allow_other and not args.nouseraccess,
        default_permissions=not args.nodefaultperm,
        rw=args.rw,
        devdax=args.devdax,
        debug=args.debug,
        follow_interval=args.follow_interval,
        watch_interval=args.watch_interval,
        readahead_kb=args.readahead,
    )
    return serve(opts, readiness)


def _daemon_argv(args: argparse.Namespace, ready_fd: int) -> list[str]:
    argv = [sys.executable, "-m", "famfs_py.cli.main", "mount", "-f", "--ready-fd", str(ready_fd)]
    argv += ["-c", args.cache, "-t", str(args.timeout)]
    argv += ["--follow-interval", str(args.follow_interval)]
    argv += ["--watch-interval", str(args.watch_interval), "--readahead", str(args.readahead)]
    for flag in ("rw", "devdax", "nouseraccess", "nodefaultperm", "debug", "allow_other"):
        if getattr(args, flag):
            argv.append(f"--{flag.replace('_', '-')}")
    if args.root:
        argv += ["--root", os.path.abspath(args.root)]
    if args.system_uuid:
        argv += ["--system-uuid", args.system_uuid]
    return [*argv, args.device, os.path.abspath(args.mountpoint)]


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def run_background(args: argparse.Namespace) -> int:
    log_file = Path(args.log_file) if args.log_file else default_log_file(args.mountpoint)
    try:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        log_fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    except OSError as exc:
        raise FamfsError(
            f"cannot open the daemon log {log_file}: {exc.strerror} (choose one with --log-file)"
        ) from None
    read_fd, write_fd = os.pipe()
    try:
        proc = subprocess.Popen(
            _daemon_argv(args, write_fd),
            stdin=subprocess.DEVNULL,
            stdout=log_fd,
            stderr=log_fd,
            pass_fds=(write_fd,),
            start_new_session=True,
            env={**os.environ, "FAMFS_PY_DAX_ROOT": os.path.abspath(args.root)}
            if args.root
            else None,
        )
    finally:
        os.close(write_fd)
        os.close(log_fd)
    buffer = b""
    deadline = time.monotonic() + READY_WAIT
    try:
        while b"\n" not in buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                proc.terminate()
                raise FamfsError(
                    f"the daemon did not report within {READY_WAIT:.0f}s (see {log_file})"
                )
            readable, _, _ = select.select([read_fd], [], [], left)
            if not readable:
                continue
            chunk = os.read(read_fd, 4096)
            if not chunk:
                break
            buffer += chunk
    finally:
        os.close(read_fd)
    if not buffer:
        code = proc.wait(timeout=10)
        tail = _tail(log_file)
        raise FamfsError(
            f"the daemon exited (status {code}) before the mount was ready; "
            f"see {log_file}" + (f":\n{tail}" if tail else "")
        )
    message = json.loads(buffer.splitlines()[0])
    if not message.get("ok"):
        proc.wait(timeout=30)  # failures leave nothing behind: wait for the claim release
        raise FamfsError(str(message.get("message")), int(message.get("exit_code") or 1))
    print(
        f"famfs-py: mounted {args.device} on {os.path.realpath(args.mountpoint)} "
        f"({message.get('summary')}); daemon pid {proc.pid}, log {log_file}"
    )
    return 0


def run(args: argparse.Namespace) -> int:
    parser = build_parser("famfs-py mount")
    apply_o_options(args, parser)
    if not args.mountpoint:
        raise FamfsError(
            "no mount point given (under systemd: set FAMFS_PY_MOUNTPOINT in "
            "/etc/famfs-py/<instance>.conf or a drop-in)",
            2,
        )
    if args.foreground or args.systemd or args.ready_fd is not None:
        return run_foreground(args)
    return run_background(args)
