"""The smallest pyfuse3 server that serves mmap'd files: the ceiling of any pyfuse3 design.

A baseline, not product code. Each backing file given on the command line appears in the
mount's root under its own name, served from one MAP_SHARED mapping of the file: `read`
returns a memoryview slice of the mapping (the kernel copies it out), `write` is a slice
assignment into it. With --direct-io every open answers direct_io (like famfs-py -c never),
otherwise the page cache is used and dropped at each open (like famfs-py -c auto).

With --tree N it also serves a directory `stat` of N empty-looking 4 KiB files (attributes
only), the FUSE floor for stat and open+close.

Run: python -m bench.minimal_fuse [--direct-io] [--tree N] MOUNTPOINT FILE...
"""

from __future__ import annotations

import argparse
import errno
import mmap
import os
import stat
import sys
from dataclasses import dataclass

import pyfuse3
import trio

ROOT = pyfuse3.ROOT_INODE
TREE_DIR = 1000  # inode of the `stat` directory; its files follow
TREE_NAME = b"stat"
TIMEOUT = 30.0  # entry and attribute cache timeout, as famfs-py's default


@dataclass
class Served:
    ino: int
    name: bytes
    size: int
    mapping: mmap.mmap
    view: memoryview


class MinimalOperations(pyfuse3.Operations):
    """lookup/getattr/open/read/write/readdir over a fixed set of mmap'd files."""

    def __init__(self, paths: list[str], direct_io: bool, tree: int = 0) -> None:
        super().__init__()
        self.direct_io = direct_io
        self.tree = tree  # files in the `stat` directory: inodes TREE_DIR+1 ...
        self.files: dict[int, Served] = {}
        self.by_name: dict[bytes, int] = {}
        for index, path in enumerate(paths):
            fd = os.open(path, os.O_RDWR)
            try:
                size = os.fstat(fd).st_size
                mapping = mmap.mmap(fd, size, mmap.MAP_SHARED)
            finally:
                os.close(fd)
            ino = ROOT + 1 + index
            name = os.fsencode(os.path.basename(path))
            self.files[ino] = Served(ino, name, size, mapping, memoryview(mapping))
            self.by_name[name] = ino

    def _attr(self, ino: int) -> pyfuse3.EntryAttributes:
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = ino
        attr.entry_timeout = TIMEOUT
        attr.attr_timeout = TIMEOUT
        if ino in (ROOT, TREE_DIR):
            attr.st_mode = stat.S_IFDIR | 0o755
            attr.st_nlink = 2
        elif ino > TREE_DIR:
            attr.st_mode = stat.S_IFREG | 0o644
            attr.st_nlink = 1
            attr.st_size = 4096
        else:
            attr.st_mode = stat.S_IFREG | 0o644
            attr.st_nlink = 1
            attr.st_size = self.files[ino].size
        attr.st_blksize = 1 << 21
        return attr

    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        ino = None
        if parent_inode == ROOT:
            ino = TREE_DIR if name == TREE_NAME and self.tree else self.by_name.get(name)
        elif parent_inode == TREE_DIR and name.startswith(b"f") and name[1:].isdigit():
            index = int(name[1:])
            ino = TREE_DIR + 1 + index if index < self.tree else None
        if ino is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attr(ino)

    def _known(self, inode: int) -> bool:
        return inode in (ROOT, TREE_DIR) or inode in self.files or 0 < inode - TREE_DIR <= self.tree

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        if not self._known(inode):
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attr(inode)

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        return inode

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        for ino in sorted(self.files):
            if ino <= start_id:
                continue
            if not pyfuse3.readdir_reply(token, self.files[ino].name, self._attr(ino), ino):
                return

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        if inode not in self.files and inode <= TREE_DIR:
            raise pyfuse3.FUSEError(errno.EISDIR)
        return pyfuse3.FileInfo(fh=inode, direct_io=self.direct_io, keep_cache=False)

    async def read(  # type: ignore[override]  # pyfuse3 replies from any buffer
        self, fh: int, off: int, size: int
    ) -> memoryview | bytes:
        served = self.files.get(fh)
        if served is None or off >= served.size:
            return b""
        return served.view[off : min(off + size, served.size)]

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        served = self.files.get(fh)
        if served is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        end = min(off + len(buf), served.size)
        if off >= end:
            raise pyfuse3.FUSEError(errno.EFBIG)
        served.view[off:end] = buf[: end - off]
        return end - off


async def _serve() -> None:
    async with trio.open_nursery() as nursery:

        async def on_signals() -> None:
            with trio.open_signal_receiver(2, 15) as signals:
                async for _ in signals:
                    pyfuse3.terminate()
                    return

        nursery.start_soon(on_signals)
        await pyfuse3.main()
        nursery.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.minimal_fuse", description=__doc__)
    parser.add_argument("--direct-io", action="store_true", help="answer direct_io at open")
    parser.add_argument("--tree", type=int, default=0, help="files in the `stat` directory")
    parser.add_argument("mountpoint")
    parser.add_argument("files", nargs="+")
    args = parser.parse_args(argv)
    ops = MinimalOperations(args.files, args.direct_io, args.tree)
    options = set(pyfuse3.default_options)
    options |= {"fsname=bench-minimal", "subtype=bench-minimal", "allow_other"}
    options |= {"default_permissions"}
    pyfuse3.init(ops, args.mountpoint, options)
    clean = False
    try:
        trio.run(_serve)
        clean = True
    finally:
        pyfuse3.close(unmount=clean)
    return 0


if __name__ == "__main__":
    sys.exit(main())
