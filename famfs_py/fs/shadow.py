"""Upstream's shadow tree: a directory per logged directory and a YAML file per logged file.

Upstream famfs's FUSE daemon serves files from a *shadow tree* that `famfs logplay --shadow`
writes from the log: under SHADOW/root, `mkdir` for every directory entry (mode, and uid/gid
when both are non-zero) and, for every file entry, the YAML document of famfs_py.fs.shadow_yaml.
This module plays a log into such a tree. No FUSE here: the log comes in as bytes, from a
device or a mount's .meta/.log.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from famfs_py import omf
from famfs_py.fs.shadow_yaml import parse_shadow_yaml, shadow_yaml

ROOT = "root"  # the shadow tree's root directory inside a shadow path


# -- playing a log into a shadow tree -----------------------------------------------------------
@dataclass
class ShadowStats:
    """Upstream's famfs_log_stats for a shadow logplay."""

    entries: int = 0
    files_logged: int = 0
    dirs_logged: int = 0
    files_created: int = 0
    dirs_created: int = 0
    files_existed: int = 0
    files_replaced: int = 0  # existing shadow files that described another file
    dirs_existed: int = 0
    file_errors: int = 0
    dir_errors: int = 0
    yaml_checked: int = 0
    yaml_errors: int = 0
    bad_entry: int | None = None  # index of the invalid entry the play stopped at

    @property
    def errors(self) -> int:
        return (self.bad_entry is not None) + self.file_errors + self.dir_errors

    def summary(self, verbose: bool = False) -> list[str]:
        """Upstream's famfs_print_log_stats lines."""
        lines = [
            f"famfs_logplay(shadow): {self.entries} log entries; {self.files_created} new "
            f"files; {self.dirs_created} new directories"
        ]
        if verbose:
            lines.append(f"\tCreated:  {self.files_created} files, {self.dirs_created} directories")
            lines.append(f"\tExisted: {self.files_existed} files, {self.dirs_existed} directories")
        if self.files_replaced:
            lines.append(f"\tReplaced: {self.files_replaced} stale shadow files")
        if self.file_errors or self.dir_errors:
            lines.append(f"\t{self.file_errors} file errors and {self.dir_errors} dir errors")
        if self.yaml_checked:
            lines.append(f"\tshadow yaml checked for {self.yaml_checked} files")
            lines.append(f"\tthere were {self.yaml_errors} yaml errors detected")
        return lines


class ShadowError(Exception):
    """The shadow path cannot take a shadow tree."""


def shadow_root(shadow_path: str) -> str:
    """The tree's root: the path itself if it ends in /root, else PATH/root, which must exist
    (as upstream). The shadow path must be a writable directory."""
    if not os.path.isdir(shadow_path):
        why = "does not exist" if not os.path.exists(shadow_path) else "is not a directory"
        raise ShadowError(f"shadow path {shadow_path} {why}")
    if not os.access(shadow_path, os.W_OK):
        raise ShadowError(f"shadow path {shadow_path} is not writable by you")
    if os.path.basename(shadow_path.rstrip("/")) == ROOT:
        return shadow_path
    root = os.path.join(shadow_path, ROOT)
    if not os.path.isdir(root):
        raise ShadowError(f"shadow path {shadow_path} has no {ROOT}/ directory (create it)")
    return root


def log_entries(log: bytes, header: omf.LogHeader) -> Iterator[tuple[int, omf.LogEntry | None]]:
    """(index, entry) of every committed entry; None for one whose CRC or seqnum is wrong."""
    count = min(header.next_index, header.slots)
    for index in range(count):
        start = omf.entry_offset(index)
        raw = log[start : start + omf.LOG_ENTRY_SIZE]
        if len(raw) < omf.LOG_ENTRY_SIZE:
            yield index, None
            return
        entry = omf.LogEntry.unpack(raw)
        ok = entry.crc == entry.body_crc() and entry.seqnum == index
        yield index, entry if ok else None


def _unsafe_path(relpath: str) -> str | None:
    if not relpath or relpath.startswith("/"):
        return "path is not relative"
    if any(part in ("", ".", "..") for part in relpath.split("/")):
        return "path has an empty, '.' or '..' component"
    return None


def play(
    log: bytes,
    shadow_path: str,
    *,
    dry_run: bool = False,
    test: bool = False,
    say: Callable[[str], None] = lambda line: None,
    warn: Callable[[str], None] = lambda line: None,
    verbose: int = 0,
) -> ShadowStats:
    """Play the log (its whole region: header and entries) into the shadow tree at
    `shadow_path`, as upstream's shadow logplay does: existing directories and shadow files
    that describe their entry are left as they are; a shadow file describing another file (a
    tree left from an earlier filesystem) is rewritten from the log. With `test`, every
    file's YAML is read back and compared with its entry. Stops at the first invalid entry.
    Raises ShadowError if the shadow path is unusable."""
    header = omf.LogHeader.unpack(log[: omf.LOG_HEADER_SIZE])
    problems = header.problems(header.log_len)
    if problems:
        raise ShadowError(f"the log header is not valid: {'; '.join(problems)}")
    root = shadow_root(shadow_path)
    stats = ShadowStats()
    for index, entry in log_entries(log, header):
        if entry is None:
            warn(f"invalid log entry at index {index} of {header.next_index}")
            stats.bad_entry = index
            return stats
        stats.entries += 1
        payload = entry.payload
        if isinstance(payload, omf.FileMeta):
            stats.files_logged += 1
            why = _unsafe_path(payload.relpath)
            if why is None and any(e.offset == 0 for e in omf.fmap_extents(payload.fmap)):
                why = "an extent at offset 0"
            if why:
                warn(f"log entry {index} ({payload.relpath!r}) ignored: {why}")
                stats.file_errors += 1
                continue
            _play_file(
                os.path.join(root, payload.relpath),
                payload,
                stats,
                dry_run,
                test,
                say,
                warn,
                verbose,
            )
        elif isinstance(payload, omf.MkdirMeta):
            stats.dirs_logged += 1
            why = _unsafe_path(payload.relpath)
            if why:
                warn(f"log entry {index} ({payload.relpath!r}) ignored: {why}")
                stats.dir_errors += 1
                continue
            if not dry_run:
                _play_dir(os.path.join(root, payload.relpath), payload, stats, say, warn, verbose)
    return stats


def _play_dir(
    path: str,
    meta: omf.MkdirMeta,
    stats: ShadowStats,
    say: Callable[[str], None],
    warn: Callable[[str], None],
    verbose: int,
) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if stat.S_ISDIR(st.st_mode):
            stats.dirs_existed += 1
        else:
            warn(f"{path}: something other than a directory is there")
            stats.dir_errors += 1
        return
    if verbose:
        say(f"famfs_logplay: creating directory {meta.relpath}")
    try:
        os.mkdir(path, meta.mode)
        if meta.uid and meta.gid:
            os.chown(path, meta.uid, meta.gid)
    except OSError as exc:
        warn(f"cannot create directory {path}: {exc.strerror}")
        stats.dir_errors += 1
        return
    stats.dirs_created += 1


def _play_file(
    path: str,
    meta: omf.FileMeta,
    stats: ShadowStats,
    dry_run: bool,
    test: bool,
    say: Callable[[str], None],
    warn: Callable[[str], None],
    verbose: int,
) -> None:
    try:
        text = shadow_yaml(meta)
    except ValueError as exc:
        warn(f"{meta.relpath!r}: {exc}")
        stats.file_errors += 1
        return
    if verbose:
        say(text.rstrip("\n"))
    if dry_run:
        return
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):
        what = "a directory" if stat.S_ISDIR(st.st_mode) else "something"
        warn(f"{path}: {what} is where a shadow file should be")
        stats.file_errors += 1
        return
    if st is None:
        if not _write(path, text, stats, warn):
            return
        stats.files_created += 1
    else:
        stats.files_existed += 1
        stale = _stale(path, meta)
        if stale is _NOT_SHADOW:
            warn(f"{path}: a file that is not a shadow file is where one should be")
            stats.file_errors += 1
            return
        if stale:  # a shadow of another file (an earlier filesystem's): the log decides
            if not _write(path, text, stats, warn):
                return
            stats.files_replaced += 1
            if verbose:
                say(f"{meta.relpath}: stale shadow file replaced")
        if not test:
            return
    if test:
        stats.yaml_checked += 1
        problem = _check_file(path, meta)
        if problem:
            warn(f"{path}: {problem}")
            stats.yaml_errors += 1
            stats.file_errors += 1
        elif verbose:
            say(f"{meta.relpath}: shadow yaml good!")


_NOT_SHADOW = object()


def _stale(path: str, meta: omf.FileMeta) -> object:
    """False if the shadow file at `path` describes `meta`, True if it describes another
    file, _NOT_SHADOW if it is no shadow file at all."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            return parse_shadow_yaml(f.read()) != meta
    except (OSError, UnicodeDecodeError, ValueError, IndexError):
        return _NOT_SHADOW


def _write(path: str, text: str, stats: ShadowStats, warn: Callable[[str], None]) -> bool:
    """Write (or replace, atomically) the shadow file at `path`."""
    tmp = f"{path}.famfs-py-{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.rename(tmp, path)
    except OSError as exc:
        warn(f"cannot write shadow file {path}: {exc.strerror}")
        stats.file_errors += 1
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return False
    return True


def _check_file(path: str, meta: omf.FileMeta) -> str | None:
    """None if the shadow file at `path` reads back as `meta`, else what is wrong."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        return f"cannot read it: {getattr(exc, 'strerror', None) or exc}"
    try:
        readback = parse_shadow_yaml(text)
    except (ValueError, IndexError) as exc:
        return f"not a shadow file: {exc}"
    if readback != meta:
        return "its YAML does not describe the file's log entry"
    return None
