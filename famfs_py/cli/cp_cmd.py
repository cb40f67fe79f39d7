"""`famfs-py cp`: copy files into famfs; each destination is allocated by the master's daemon
and filled straight in device memory."""

from __future__ import annotations

import argparse
import os
import stat
import sys

from famfs_py.cli.common import Parser, parse_id, parse_mode

EXIT_CODES = """
  0  everything was copied (or, with -c, compared equal)
  1  at least one source failed (each failure is reported; the others are still copied)
  2  usage error
"""


def build_parser(prog: str) -> Parser:
    parser = Parser(
        prog=prog, description="Copy files into famfs (master only).", exit_codes=EXIT_CODES
    )
    parser.add_argument("-r", "--recursive", action="store_true", help="copy directories")
    parser.add_argument(
        "-c",
        "--compare",
        action="store_true",
        help="compare sources with existing destinations; copy nothing",
    )
    parser.add_argument(
        "-m", "--mode", type=parse_mode, help="mode of new files (default: the source's)"
    )
    parser.add_argument("-u", "--uid", type=parse_id, help="owner (default: you)")
    parser.add_argument("-g", "--gid", type=parse_id, help="group (default: yours)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print each copy")
    parser.add_argument("-d", "--debug", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("sources", nargs="+", metavar="SRC")
    parser.add_argument("dest", metavar="DEST")
    return parser


class Copier:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.failures = 0
        self._channels: dict[str, object] = {}

    def fail(self, message: str) -> None:
        print(f"famfs-py cp: {message}", file=sys.stderr)
        self.failures += 1

    def channel(self, mountpoint: str):  # -> Channel
        from famfs_py import channel

        chan = self._channels.get(mountpoint)
        if chan is None:
            chan = self._channels[mountpoint] = channel.Channel(mountpoint)
        return chan

    def copy_file(self, src: str, dest: str) -> None:
        from famfs_py import channel
        from famfs_py.errors import FamfsError
        from famfs_py.mapping import MappedFile, copy_into, first_difference

        try:
            fd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            self.fail(f"{src}: {exc.strerror}")
            return
        try:
            st = os.fstat(fd)
            if st.st_size == 0:
                self.fail(f"{src}: empty files cannot be copied into famfs")
                return
            located = channel.locate(dest)
            chan = self.channel(located.mountpoint)
            if self.args.compare:
                reply, fds = chan.call_fds("map", path=located.relpath, write=False)
                with MappedFile(reply, fds[0], writable=False) as mapped:
                    if mapped.size != st.st_size:
                        self.fail(f"{dest}: {mapped.size} bytes, {src} has {st.st_size}")
                    elif (where := first_difference(mapped, fd)) is not None:
                        self.fail(f"{src} and {dest} differ at byte {where}")
                return
            mode = self.args.mode if self.args.mode is not None else stat.S_IMODE(st.st_mode)
            chan.call(
                "creat",
                path=located.relpath,
                size=st.st_size,
                mode=mode,
                uid=self.args.uid,
                gid=self.args.gid,
            )
            reply, fds = chan.call_fds("map", path=located.relpath, write=True)
            with MappedFile(reply, fds[0], writable=True) as mapped:
                copy_into(mapped, fd)
            chan.call("invalidate", path=located.relpath)
            if self.args.verbose:
                print(f"{src} -> {dest}")
        except (FamfsError, OSError, EOFError) as exc:
            self.fail(f"{src} -> {dest}: {getattr(exc, 'message', None) or exc}")
        finally:
            os.close(fd)

    def mkdir(self, dest: str) -> bool:
        from famfs_py import channel
        from famfs_py.errors import FamfsError

        try:
            located = channel.locate(dest)
            self.channel(located.mountpoint).call(
                "mkdir",
                path=located.relpath,
                mode=0o755,
                uid=self.args.uid,
                gid=self.args.gid,
                parents=True,
            )
        except FamfsError as exc:
            self.fail(f"{dest}: {exc.message}")
            return False
        return True

    def copy_tree(self, src: str, dest: str) -> None:
        if not self.args.compare and not self.mkdir(dest):
            return
        try:
            names = sorted(os.listdir(src))
        except OSError as exc:
            self.fail(f"{src}: {exc.strerror}")
            return
        for name in names:
            self.copy_any(os.path.join(src, name), os.path.join(dest, name))

    def copy_any(self, src: str, dest: str) -> None:
        if os.path.isdir(src):
            if not self.args.recursive:
                self.fail(f"{src} is a directory (use -r)")
                return
            self.copy_tree(src, dest)
        else:
            self.copy_file(src, dest)

    def close(self) -> None:
        for chan in self._channels.values():
            chan.close()  # type: ignore[attr-defined]


def run(args: argparse.Namespace) -> int:
    from famfs_py.errors import FamfsError

    copier = Copier(args)
    dest = args.dest
    dest_is_dir = os.path.isdir(dest)
    many = len(args.sources) > 1
    if many and not dest_is_dir:
        raise FamfsError(f"{dest} is not a directory (needed for several sources)")
    try:
        for src in args.sources:
            src_clean = src.rstrip("/") or "/"
            if dest_is_dir and not dest.endswith(("/.",)):
                target = os.path.join(dest, os.path.basename(src_clean))
            elif dest_is_dir:
                target = os.path.join(dest[:-2] or "/", os.path.basename(src_clean))
            else:
                target = dest
            copier.copy_any(src_clean, target)
    finally:
        copier.close()
    return 1 if copier.failures else 0
