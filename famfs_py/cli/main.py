"""`famfs-py`: dispatch to one command module, imported only when that command runs.

Every user error is one line on stderr and a documented exit code; never a traceback.
"""

from __future__ import annotations

import sys

from famfs_py.cli.run import PROG, run_command, run_plain

TYPE_CHECKING = False  # not typing's: commands start fast (mypy reads this as true)
if TYPE_CHECKING:
    from collections.abc import Sequence

# command -> (module under famfs_py.cli, one-line summary)
COMMANDS: dict[str, tuple[str, str]] = {
    "mkfs": ("mkfs_cmd", "make a famfs filesystem on a dax device"),
    "mount": ("mount_cmd", "mount a famfs device (starts the daemon)"),
    "umount": ("umount_cmd", "unmount and wait for the daemon to exit"),
    "status": ("status_cmd", "show a mount's role, log, capacity and health"),
    "mkdir": ("mkdir_cmd", "create a directory (master only)"),
    "creat": ("creat_cmd", "create and allocate a file (master only)"),
    "cp": ("cp_cmd", "copy files into famfs (master only)"),
    "verify": ("verify_cmd", "verify a file against its seeded pattern"),
    "logplay": ("logplay_cmd", "replay the log into a mount now"),
    "fsck": ("fsck_cmd", "check a famfs device or mount"),
    "getmap": ("getmap_cmd", "print a file's extents"),
    "flush": ("flush_cmd", "flush files' data to memory"),
    "check": ("check_cmd", "check that a mount's files are intact"),
    "clone": ("clone_cmd", "cross-link a file (testing fsck)"),
    "chkread": ("chkread_cmd", "read files back and report errors"),
    "pcq": ("pcq_cmd", "producer/consumer queue over shared memory (upstream's pcq)"),
    "config": ("config_cmd", "show or change the settings cp and creat take defaults from"),
    "dax": ("dax_cmd", "create, list, reconfigure and remove (emulated) dax devices"),
    "install-service": ("install_service_cmd", "install the systemd unit, udev rule, mount helper"),
}
# command -> module of its plain form: the common command line, run without argparse
# (anything else falls through to the command's module above)
PLAIN_FORMS: dict[str, str] = {"creat": "creat_plain"}


def _usage() -> str:
    lines = [f"usage: {PROG} COMMAND [options] ...", "", "commands:"]
    for name, (_module, summary) in COMMANDS.items():
        lines.append(f"  {name:<15} {summary}")
    lines += [
        "",
        f"'{PROG} COMMAND --help' describes a command and its exit codes.",
        "exit codes: 0 success; 2 usage error; otherwise as each command documents.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "-?"):
        (sys.stdout if argv else sys.stderr).write(_usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        from famfs_py import __version__

        print(f"{PROG} {__version__}")
        return 0
    name = argv[0]
    entry = COMMANDS.get(name)
    if entry is None:
        from famfs_py.cli import mount_helper  # only for mount(8)'s call: commands start fast

        if mount_helper.called_by_mount_fuse(argv):  # mount(8) -> mount.fuse3 -> famfs-py
            return mount_helper.main(argv, prog=PROG)
        sys.stderr.write(f"{PROG}: unknown command {name!r}\n\n{_usage()}")
        return 2
    if name in PLAIN_FORMS:
        code = run_plain(f"{PROG} {name}", PLAIN_FORMS[name], argv[1:])
        if code is not None:
            return code
    return run_command(f"{PROG} {name}", entry[0], argv[1:])


if __name__ == "__main__":
    sys.exit(main())
