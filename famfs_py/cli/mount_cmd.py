"""`famfs-py mount`: start the daemon for a device and return once the mount answers.

Without --foreground the daemon is started as a separate process (its own session, output to a log
file) and this command waits for its word on a pipe: mounted, or why not. With --systemd it
stays in the foreground and tells systemd instead. The options are declared once, in
famfs_py.daemon.options; readiness is famfs_py.daemon.readiness.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from famfs_py.cli.common import Parser
from famfs_py.daemon import options
from famfs_py.daemon.options import MountOptions
from famfs_py.daemon.readiness import DaemonLog, wait_for_daemon
from famfs_py.errors import FamfsError, UsageError

EXIT_CODES = """
  0  mounted (the mount answers); with --foreground: unmounted cleanly
  1  the mount failed; nothing is left mounted and the device is not claimed
  2  usage error (unknown option, bad -o option)
"""
READY_WAIT = 60.0
LOG_DIR_ENV = "FAMFS_PY_LOG_DIR"
DEFAULT_LOG_DIR = "/var/log/famfs-py"


def build_parser(prog: str) -> Parser:
    parser = Parser(
        prog=prog,
        description="Mount the famfs on DEVICE at MOUNTPOINT. The device is claimed, its "
        "superblock and log checked and replayed; the command returns once the mount answers.",
        exit_codes=EXIT_CODES,
    )
    options.add_arguments(parser)
    return parser


def parse_options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> MountOptions:
    """The mount's options from the command line and its -o groups (bad ones: usage error)."""
    try:
        return options.from_namespace(args)
    except ValueError as exc:
        parser.error(str(exc))
        raise  # parser.error exits


def default_log_file(mountpoint: str) -> Path:
    base = Path(os.environ.get(LOG_DIR_ENV, DEFAULT_LOG_DIR))
    name = os.path.realpath(mountpoint).strip("/").replace("/", "-") or "root"
    return base / f"{name}.log"


def _setup_daemon_logging(opts: MountOptions) -> bool:
    """The daemon logs to --log-file if given; else to the journal, with `<N>` priority
    prefixes and no timestamps, when systemd runs it; else to stderr. True: the journal."""
    import logging

    from famfs_py.daemon.systemd import JournalFormatter, stderr_is_journal

    handler: logging.Handler
    journal = False
    plain = logging.Formatter(
        "%(asctime)s famfs-py[%(process)d] %(levelname)s %(name)s: %(message)s"
    )
    if opts.log_file and opts.ready_fd is None:
        path = Path(opts.log_file)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(path)
        except OSError as exc:
            raise FamfsError(
                f"cannot open the daemon log {path}: {exc.strerror} (choose one with --log-file)"
            ) from None
        handler.setFormatter(plain)
    elif opts.systemd or stderr_is_journal():
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JournalFormatter())
        journal = True
    else:
        from famfs_py.daemon.logfile import BoundedStderrLog

        handler = BoundedStderrLog()  # a background daemon's log file: bounded
        handler.setFormatter(plain)
    level = logging.DEBUG if opts.debug else logging.INFO
    logging.basicConfig(level=level, handlers=[handler], force=True)
    return journal


def run_foreground(opts: MountOptions) -> int:
    from famfs_py.daemon import readiness as ready
    from famfs_py.daemon.mount import serve

    journal = _setup_daemon_logging(opts)
    readiness: ready.Readiness
    if opts.systemd:
        import faulthandler

        faulthandler.enable()  # a watchdog SIGABRT leaves every thread's stack in the journal
        readiness = ready.SystemdReadiness(status_interval=opts.status_interval)
    elif opts.ready_fd is not None:
        readiness = ready.PipeReadiness(opts.ready_fd)
    else:
        readiness = ready.ConsoleReadiness(journal)
    return serve(opts, readiness)


def run_background(opts: MountOptions) -> int:
    log_file = Path(opts.log_file) if opts.log_file else default_log_file(opts.mountpoint)
    try:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        log_fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    except OSError as exc:
        raise FamfsError(
            f"cannot open the daemon log {log_file}: {exc.strerror} (choose one with --log-file)"
        ) from None
    daemon_log = DaemonLog(log_file, os.fstat(log_fd).st_size)  # this attempt's lines start here
    read_fd, write_fd = os.pipe()
    argv = [sys.executable, "-m", "famfs_py.cli.main", "mount", "--foreground"]
    argv += ["--ready-fd", str(write_fd)]
    env = {**os.environ, "FAMFS_PY_DAX_ROOT": opts.root} if opts.root else None
    try:
        proc = subprocess.Popen(
            argv + options.daemon_argv(opts),
            stdin=subprocess.DEVNULL,
            stdout=log_fd,
            stderr=log_fd,
            pass_fds=(write_fd,),
            start_new_session=True,
            env=env,
        )
    finally:
        os.close(write_fd)
        os.close(log_fd)
    summary = wait_for_daemon(proc, read_fd, daemon_log, READY_WAIT)
    print(
        f"famfs-py: mounted {opts.device} on {os.path.realpath(opts.mountpoint)} "
        f"({summary}); daemon pid {proc.pid}, log {log_file}"
    )
    return 0


def run(args: argparse.Namespace) -> int:
    opts = parse_options(args, build_parser("famfs-py mount"))
    if not opts.mountpoint:
        raise UsageError(
            "no mount point given (under systemd: set FAMFS_PY_MOUNTPOINT in "
            "/etc/famfs-py/<instance>.conf or a drop-in)"
        )
    if opts.stays_attached:
        return run_foreground(opts)
    return run_background(opts)
