"""`famfs-py install-service`: put the packaged unit template, udev rule, example settings
and the mount(8) helper link in place (or take them away again with --uninstall)."""

from __future__ import annotations

import argparse
import grp
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from famfs_py import service
from famfs_py.cli.common import Parser
from famfs_py.errors import FamfsError

EXIT_CODES = """
  0  installed (or removed)
  1  a file could not be written or removed (the message says which; run as root)
  2  usage error
"""
TOOLS = ("famfs-py", "mount.fuse.famfs-py")
HELPER = "mount.fuse.famfs-py"
SYSTEM_UNIT_DIR = Path("/etc/systemd/system")
SYSTEM_UDEV_DIR = Path("/etc/udev/rules.d")


def build_parser(prog: str) -> Parser:
    parser = Parser(
        prog=prog,
        description="Install famfs-py as a service: the unit template famfs-py@.service "
        "(running this famfs-py), the helper mount(8) runs for `-t fuse.famfs-py` and fstab "
        "lines (a symlink in /sbin), a udev rule that gives dax devices systemd device units, "
        "and /etc/famfs-py/example.conf. Then systemd and udev reload, if systemd runs. "
        "The files come from the installed package (--files shows where).",
        exit_codes=EXIT_CODES,
    )
    parser.add_argument(
        "--uninstall",
        action="store_true",
        help="remove the unit, the rule and the helper link (keeps the settings directory)",
    )
    parser.add_argument(
        "--files", action="store_true", help="print where the packaged files are, and exit"
    )
    parser.add_argument(
        "--bin-dir",
        type=Path,
        help="where famfs-py and mount.fuse.famfs-py are (default: this famfs-py's directory)",
    )
    parser.add_argument("--unit-dir", type=Path, default=SYSTEM_UNIT_DIR)
    parser.add_argument("--sbin-dir", type=Path, default=Path("/sbin"))
    parser.add_argument("--udev-dir", type=Path, default=SYSTEM_UDEV_DIR)
    parser.add_argument("--conf-dir", type=Path, default=Path("/etc/famfs-py"))
    parser.add_argument(
        "--group",
        default="famfs",
        help="the group the udev rule gives dax devices to, mode 0660 (default famfs; created "
        "when installing into the system's udev directory): its members may map files' memory",
    )
    return parser


def _bin_dir(chosen: Path | None) -> Path:
    """The directory of this famfs-py's console scripts."""
    candidates = [chosen] if chosen else []
    if not chosen:
        argv0 = Path(sys.argv[0])
        if argv0.name == "famfs-py":
            candidates.append(argv0.absolute().parent)
        candidates += [Path(sysconfig.get_path("scripts")), Path(sys.executable).parent]
    for candidate in candidates:
        if all(os.access(candidate / tool, os.X_OK) for tool in TOOLS):
            return candidate.absolute()
    where = chosen or candidates[0]
    raise FamfsError(
        f"{where} does not hold {' and '.join(TOOLS)} (install famfs-py, or give --bin-dir)"
    )


def _ensure_group(name: str) -> None:
    try:
        grp.getgrnam(name)
    except KeyError:
        subprocess.run(["groupadd", "--system", name], check=True)
        print(f"famfs-py: created group {name} (add users who may map files: usermod -aG)")


def _systemd_runs(unit_dir: Path) -> bool:
    return Path("/run/systemd/system").is_dir() and unit_dir == SYSTEM_UNIT_DIR


def _reload(unit_dir: Path) -> None:
    if not _systemd_runs(unit_dir):
        return
    subprocess.run(["systemctl", "daemon-reload"], check=False)
    if shutil.which("udevadm"):
        subprocess.run(["udevadm", "control", "--reload"], check=False)
        # dax devices already present get their device units now, not at the next boot
        subprocess.run(["udevadm", "trigger", "--action=add", "--subsystem-match=dax"], check=False)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _install(args: argparse.Namespace) -> None:
    bin_dir = _bin_dir(args.bin_dir)
    unit = args.unit_dir / service.UNIT_TEMPLATE
    template = service.path(service.UNIT_TEMPLATE).read_text()
    _write(
        unit, template.replace(f"{service.UNIT_PLACEHOLDER_BIN}/famfs-py", f"{bin_dir}/famfs-py")
    )
    args.sbin_dir.mkdir(parents=True, exist_ok=True)
    helper = args.sbin_dir / HELPER
    tmp = helper.with_name(f".{HELPER}.tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(bin_dir / HELPER, tmp)
    os.replace(tmp, helper)
    rule = args.udev_dir / service.UDEV_RULE
    _write(rule, service.path(service.UDEV_RULE).read_text().replace("@GROUP@", args.group))
    if args.udev_dir == SYSTEM_UDEV_DIR:
        _ensure_group(args.group)
    conf = args.conf_dir / service.EXAMPLE_CONF
    _write(conf, service.path(service.EXAMPLE_CONF).read_text())
    _reload(args.unit_dir)
    print(f"famfs-py: installed {unit}, {helper}, {rule} and {conf} (famfs-py in {bin_dir})")


def _uninstall(args: argparse.Namespace) -> None:
    (args.unit_dir / service.UNIT_TEMPLATE).unlink(missing_ok=True)
    (args.udev_dir / service.UDEV_RULE).unlink(missing_ok=True)
    helper = args.sbin_dir / HELPER
    try:
        ours = Path(os.readlink(helper)).parent == _bin_dir(args.bin_dir)
    except OSError:
        ours = False
    if ours:
        helper.unlink()
    _reload(args.unit_dir)
    kept = "" if ours or not os.path.lexists(helper) else f"; {helper} is another's, kept"
    print(
        f"famfs-py: removed the unit, the udev rule and the mount helper "
        f"(kept {args.conf_dir}{kept})"
    )


def run(args: argparse.Namespace) -> int:
    if args.files:
        for name in (service.UNIT_TEMPLATE, service.UDEV_RULE, service.EXAMPLE_CONF):
            print(service.path(name))
        return 0
    try:
        _uninstall(args) if args.uninstall else _install(args)
    except OSError as exc:
        raise FamfsError(
            f"cannot write {exc.filename}: {exc.strerror} (run as root, or choose the "
            "directories with --unit-dir/--sbin-dir/--udev-dir/--conf-dir)",
            exc.errno,
        ) from None
    return 0
