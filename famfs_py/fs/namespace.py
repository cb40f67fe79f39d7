"""The namespace a log describes: directories and files with stable inode numbers.

A logged object's inode number is FIRST_ENTRY_INO + its log index, so numbers are stable for
a mount and across remounts. `.meta/.superblock` and `.meta/.log` are read-only files over
the raw superblock region and log.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field

from famfs_py import omf
from famfs_py.errors import NamespaceError
from famfs_py.fs.fmap import FileMap

ROOT_INO = 1
META_INO = 2
SUPERBLOCK_INO = 3
LOG_INO = 4
FIRST_ENTRY_INO = 16
META_DIR = ".meta"


class Inode:
    """A file or directory. A file replayed from the log keeps its entry's payload bytes
    and decodes them (`meta`, `filemap`) on first use: replay builds hundreds of thousands
    of inodes at mount, most of which are never opened."""

    __slots__ = (
        "_extents",
        "_filemap",
        "_meta",
        "_payload",
        "children",
        "entry_index",
        "gid",
        "ino",
        "is_dir",
        "meta_fmap",
        "mode",
        "name",
        "parent",
        "read_only",
        "size",
        "uid",
    )

    def __init__(
        self,
        ino: int,
        name: str,
        parent: int,
        is_dir: bool,
        mode: int,  # permission bits only
        uid: int,
        gid: int,
        size: int = 0,
        filemap: FileMap | None = None,
        meta: omf.FileMeta | None = None,  # the logged file (None: directories, .meta files)
        children: dict[str, int] | None = None,
        entry_index: int | None = None,
        read_only: bool = False,  # .meta files: never writable
        meta_fmap: omf.Fmap | None = None,  # .meta files: the raw region they show
        payload: bytes | None = None,  # a logged file's payload bytes, decoded into `meta`
        extents: tuple[int, ...] | None = None,  # its extents, flattened (offset, length, ...)
    ) -> None:
        self.ino = ino
        self.name = name
        self.parent = parent
        self.is_dir = is_dir
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.size = size
        self.children = children
        self.entry_index = entry_index
        self.read_only = read_only
        self.meta_fmap = meta_fmap
        self._filemap = filemap
        self._meta = meta
        self._payload = payload
        self._extents = extents

    def __repr__(self) -> str:
        kind = "dir" if self.is_dir else "file"
        return f"Inode({self.ino}, {self.name!r}, parent={self.parent}, {kind})"

    @property
    def meta(self) -> omf.FileMeta | None:
        """The logged file (None for directories, .meta files and files not logged yet)."""
        if self._meta is None and self._payload is not None:
            self._meta = omf.FileMeta.unpack(self._payload)
        return self._meta

    @meta.setter
    def meta(self, meta: omf.FileMeta | None) -> None:
        self._meta, self._payload, self._extents = meta, None, None

    @property
    def allocated(self) -> int:
        """Bytes of device memory a logged file holds (its extents' lengths): from the
        extents replay found, without decoding the entry (a cold stat asks for it)."""
        if self._extents is not None:
            return sum(self._extents[1::2])
        meta = self.meta
        return 0 if meta is None else sum(e.length for e in omf.fmap_extents(meta.fmap))

    @property
    def filemap(self) -> FileMap | None:
        if self._filemap is None and self._payload is not None:
            meta = self.meta
            assert meta is not None
            self._filemap = FileMap(meta.fmap, meta.size)
        return self._filemap

    @filemap.setter
    def filemap(self, filemap: FileMap | None) -> None:
        self._filemap = filemap

    @property
    def logged_file(self) -> bool:
        """Whether this is a file with a log entry (checked without decoding it)."""
        return self._meta is not None or self._payload is not None

    @property
    def fmap(self) -> omf.Fmap | None:
        """The device ranges of a file (logged or .meta); None for directories."""
        meta = self.meta
        return meta.fmap if meta is not None else self.meta_fmap

    @property
    def st_mode(self) -> int:
        return (stat.S_IFDIR if self.is_dir else stat.S_IFREG) | self.mode

    @property
    def nlink(self) -> int:
        return 2 if self.is_dir else 1


@dataclass
class Namespace:
    inodes: dict[int, Inode] = field(default_factory=dict)
    files: int = 0
    dirs: int = 0

    @classmethod
    def new(cls, sb: omf.Superblock) -> Namespace:
        ns = cls()
        ns.inodes[ROOT_INO] = Inode(ROOT_INO, "", ROOT_INO, True, 0o755, 0, 0, children={})
        # .meta is private (0700) as upstream's is: its log lists the names, owners and
        # extents of files in directories others may not search; it belongs to whoever
        # serves the mount (root for the service)
        uid, gid = os.geteuid(), os.getegid()
        ns._attach(Inode(META_INO, META_DIR, ROOT_INO, True, 0o700, uid, gid, children={}))
        region = omf.SimpleFmap((omf.Extent(0, omf.SUPERBLOCK_SIZE),))
        log = omf.SimpleFmap((omf.Extent(sb.log_offset, sb.log_len),))
        for ino, name, fmap, size in (
            (SUPERBLOCK_INO, ".superblock", region, omf.SUPERBLOCK_SIZE),
            (LOG_INO, ".log", log, sb.log_len),
        ):
            ns._attach(
                Inode(
                    ino,
                    name,
                    META_INO,
                    False,
                    0o444,
                    uid,
                    gid,
                    size=size,
                    filemap=FileMap(fmap, size),
                    read_only=True,
                    meta_fmap=fmap,
                )
            )
        return ns

    def _attach(self, inode: Inode) -> None:
        parent = self.inodes[inode.parent]
        assert parent.children is not None
        parent.children[inode.name] = inode.ino
        self.inodes[inode.ino] = inode

    def lookup(self, parent_ino: int, name: str) -> Inode | None:
        parent = self.inodes.get(parent_ino)
        if parent is None or parent.children is None:
            return None
        ino = parent.children.get(name)
        return None if ino is None else self.inodes[ino]

    def resolve(self, relpath: str) -> Inode | None:
        """The inode at a path relative to the root ("" is the root)."""
        inode: Inode | None = self.inodes[ROOT_INO]
        for part in relpath.split("/"):
            if not part or part == ".":
                continue
            if inode is None:
                return None
            inode = self.lookup(inode.ino, part)
        return inode

    def path_of(self, ino: int) -> str:
        parts = []
        while ino != ROOT_INO:
            inode = self.inodes[ino]
            parts.append(inode.name)
            ino = inode.parent
        return "/".join(reversed(parts))

    def _parent_for(self, relpath: str) -> tuple[Inode, str]:
        head, _, name = relpath.rpartition("/")
        if not head and name == META_DIR:
            raise NamespaceError(f"{relpath}: {META_DIR} is reserved", errno.EPERM)
        parent = self.resolve(head)
        if parent is None:
            raise NamespaceError(
                f"{relpath}: parent directory {head!r} does not exist", errno.ENOENT
            )
        if not parent.is_dir:
            raise NamespaceError(f"{relpath}: parent {head!r} is a file", errno.ENOTDIR)
        if parent.ino == META_INO:
            raise NamespaceError(f"{relpath}: {META_DIR} is reserved", errno.EPERM)
        assert parent.children is not None
        if name in parent.children:
            raise NamespaceError(f"{relpath}: already exists", errno.EEXIST)
        return parent, name

    def check_new(self, relpath: str) -> None:
        """Raise NamespaceError unless `relpath` could be created now."""
        problem = omf.path_problem(relpath)
        if problem:
            code = errno.ENAMETOOLONG if "longer" in problem else errno.EINVAL
            raise NamespaceError(f"{relpath}: {problem}", code)
        self._parent_for(relpath)

    def add(
        self, index: int, payload: omf.FileMeta | omf.MkdirMeta, *, path_checked: bool = False
    ) -> Inode:
        """Apply logged entry `index`; NamespaceError says why it cannot be applied.
        `path_checked`: the caller already applied omf.path_problem (replay does)."""
        problem = None if path_checked else omf.path_problem(payload.relpath)
        if problem:
            raise NamespaceError(f"{payload.relpath!r}: {problem}")
        parent, name = self._parent_for(payload.relpath)
        ino = FIRST_ENTRY_INO + index
        if isinstance(payload, omf.MkdirMeta):
            inode = Inode(
                ino,
                name,
                parent.ino,
                True,
                payload.mode & 0o7777,
                payload.uid,
                payload.gid,
                children={},
                entry_index=index,
            )
            self.dirs += 1
        else:
            inode = Inode(
                ino,
                name,
                parent.ino,
                False,
                payload.mode & 0o7777,
                payload.uid,
                payload.gid,
                size=payload.size,
                filemap=FileMap(payload.fmap, payload.size),
                meta=payload,
                entry_index=index,
            )
            self.files += 1
        self._attach(inode)
        return inode

    def add_run(
        self,
        clean: list[omf.CleanEntry | None],
        lo: int,
        hi: int,
        first_index: int,
        parents: dict[str, Inode],
        added: list[Inode],
        refused: list[tuple[int, str]],
    ) -> tuple[int, int, int]:
        """Apply the logged entries clean[lo:hi] (entry first_index + i is clean[i]), all
        decoded and checked (famfs_py.omf._replay): a file (its payload bytes, decoded on
        first use) or a directory (payload None) at head/name. New inodes go to `added`,
        (index, reason) to `refused` for the entries `add` would refuse. `parents` remembers
        directories by path for the caller's pass (one replay: nothing is removed meanwhile).
        Returns how many files and directories it added, and the files' total size."""
        inodes = self.inodes
        files = dirs = sizes = 0
        index = first_index + lo
        for item in clean[lo:hi]:
            head, name, mode, uid, gid, size, payload, extents = item  # type: ignore[misc]
            parent = parents.get(head)
            if parent is None or name in parent.children or (not head and name == META_DIR):  # type: ignore[operator]
                try:
                    parent, name = self._parent_for(f"{head}/{name}" if head else name)
                except NamespaceError as exc:
                    refused.append((index, str(exc)))
                    index += 1
                    continue
                parents[head] = parent
            ino = FIRST_ENTRY_INO + index
            if payload is None:
                inode = Inode(
                    ino, name, parent.ino, True, mode & 0o7777, uid, gid, 0, None, None, {}, index
                )
                dirs += 1
            else:
                inode = Inode(
                    ino,
                    name,
                    parent.ino,
                    False,
                    mode & 0o7777,
                    uid,
                    gid,
                    size,
                    None,
                    None,
                    None,
                    index,
                    False,
                    None,
                    payload,
                    extents,
                )
                files += 1
                sizes += size
            parent.children[name] = ino  # type: ignore[index]
            inodes[ino] = inode
            added.append(inode)
            index += 1
        self.files += files
        self.dirs += dirs
        return files, dirs, sizes

    # -- files created through the mount, logged once complete (famfs_py.fs.pending) --------
    def attach_unlogged(self, inode: Inode) -> None:
        """Show a file that is not in the log yet under its parent (this host only)."""
        self._attach(inode)

    def detach(self, inode: Inode) -> None:
        parent = self.inodes[inode.parent]
        assert parent.children is not None
        if parent.children.get(inode.name) == inode.ino:
            del parent.children[inode.name]
        self.inodes.pop(inode.ino, None)

    def move(self, inode: Inode, parent: Inode, name: str) -> None:
        self.detach(inode)
        inode.parent, inode.name = parent.ino, name
        self._attach(inode)

    def now_logged(self, inode: Inode, index: int, payload: omf.FileMeta | omf.MkdirMeta) -> None:
        """An unlogged file or directory got its log entry: it keeps its inode number on
        this mount."""
        inode.entry_index = index
        if isinstance(payload, omf.MkdirMeta):
            self.dirs += 1
            return
        inode.meta = payload
        inode.size = payload.size
        inode.filemap = FileMap(payload.fmap, payload.size)
        self.files += 1

    def logged_files(self) -> list[Inode]:
        return [i for i in self.inodes.values() if i.logged_file]
