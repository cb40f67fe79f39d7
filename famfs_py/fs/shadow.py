"""Upstream's shadow tree: a directory per logged directory and a YAML file per logged file.

Upstream famfs's FUSE daemon serves files from a *shadow tree* that `famfs logplay --shadow`
writes from the log: under SHADOW/root, `mkdir` for every directory entry (mode, and uid/gid
when both are non-zero) and, for every file entry, a YAML document of the file's metadata.
This module writes byte for byte what upstream writes (its libyaml emitter with default
settings: width 80, indent 2, ASCII only), reads such documents back, and plays a log into a
shadow tree. No FUSE here: the log comes in as bytes, from a device or a mount's .meta/.log.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from famfs_py import omf

ROOT = "root"  # the shadow tree's root directory inside a shadow path
_WIDTH = 80  # libyaml's default best_width
_VALUE_INDENT = 4  # where a folded value of a key under "file:" continues
_BREAKS = "\n\r\x85\u2028\u2029"  # libyaml's IS_BREAK
_BLANKZ = " \t" + _BREAKS  # IS_BLANKZ (and the end of the string)
_FLOW_FIRST = "#,[]{}&*!|>'\"%@`"  # indicators that forbid a plain scalar when first


# -- writing: one YAML document per file ---------------------------------------------------------
def _int32(value: int) -> int:
    """What C's %d prints for a u32 (upstream formats uid, gid, flags, nextents so)."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def _int64(value: int) -> int:
    """What C's %lld prints for a u64."""
    value &= (1 << 64) - 1
    return value - (1 << 64) if value & (1 << 63) else value


def _printable(ch: str) -> bool:
    """libyaml's IS_PRINTABLE (with unicode output off, anything not ASCII is special too)."""
    return ch == "\n" or " " <= ch <= "~"


@dataclass(frozen=True)
class _Analysis:
    plain: bool  # a plain scalar may be written in block context
    single_quoted: bool


def _analyze(value: str) -> _Analysis:
    """The checks of libyaml's yaml_emitter_analyze_scalar that decide a block value's style."""
    if not value:
        return _Analysis(plain=True, single_quoted=True)
    block_indicators = value.startswith(("---", "..."))
    special = line_breaks = False
    leading_space = trailing_space = leading_break = trailing_break = False
    break_space = space_break = False
    previous_space = previous_break = False
    preceded_by_whitespace = True
    last = len(value) - 1
    for i, ch in enumerate(value):
        followed_by_whitespace = i == last or value[i + 1] in _BLANKZ
        if i == 0:
            if ch in _FLOW_FIRST:
                block_indicators = True
            if ch in "?:" and followed_by_whitespace:
                block_indicators = True
            if ch == "-" and followed_by_whitespace:
                block_indicators = True
        else:
            if ch == ":" and followed_by_whitespace:
                block_indicators = True
            if ch == "#" and preceded_by_whitespace:
                block_indicators = True
        if not _printable(ch):
            special = True
        if ch in _BREAKS:
            line_breaks = True
        if ch == " ":
            leading_space = leading_space or i == 0
            trailing_space = trailing_space or i == last
            break_space = break_space or previous_break
            previous_space, previous_break = True, False
        elif ch in _BREAKS:
            leading_break = leading_break or i == 0
            trailing_break = trailing_break or i == last
            space_break = space_break or previous_space
            previous_space, previous_break = False, True
        else:
            previous_space = previous_break = False
        preceded_by_whitespace = ch in _BLANKZ
    plain = single = True
    if leading_space or leading_break or trailing_space or trailing_break:
        plain = False
    if break_space:
        plain = single = False
    if space_break or special:
        plain = single = False
    if line_breaks or block_indicators:
        plain = False
    return _Analysis(plain, single)


class _Writer:
    """libyaml's column bookkeeping for one scalar written as a block mapping value."""

    def __init__(self, column: int) -> None:
        self.out: list[str] = []
        self.column = column
        self.whitespace = False  # the key's ':' was just written
        self.indention = False

    def put(self, text: str) -> None:
        self.out.append(text)
        self.column += len(text)

    def put_break(self) -> None:
        self.out.append("\n")
        self.column = 0

    def indent(self) -> None:
        if (
            not self.indention
            or self.column > _VALUE_INDENT
            or (self.column == _VALUE_INDENT and not self.whitespace)
        ):
            self.put_break()
        self.put(" " * (_VALUE_INDENT - self.column))
        self.whitespace = self.indention = True

    def space_before(self) -> None:
        if not self.whitespace:
            self.put(" ")

    def text(self) -> str:
        return "".join(self.out)


def _plain(value: str, w: _Writer) -> None:
    if value:
        w.space_before()
    spaces = False
    for i, ch in enumerate(value):
        if ch == " ":
            nxt = value[i + 1] if i + 1 < len(value) else ""
            if not spaces and w.column > _WIDTH and nxt != " ":
                w.indent()
            else:
                w.put(ch)
            spaces = True
        else:  # a plain scalar never holds a line break
            w.put(ch)
            w.indention = spaces = False
    w.whitespace = w.indention = False


def _single_quoted(value: str, w: _Writer) -> None:
    w.space_before()
    w.put("'")
    w.whitespace = w.indention = False
    spaces = breaks = False
    last = len(value) - 1
    for i, ch in enumerate(value):
        if ch == " ":
            nxt = value[i + 1] if i < last else ""
            if not spaces and w.column > _WIDTH and 0 < i < last and nxt != " ":
                w.indent()
            else:
                w.put(ch)
            spaces = True
        elif ch == "\n":  # the only break a single-quoted value can hold (others are special)
            if not breaks:
                w.put_break()
            w.put_break()
            w.indention = breaks = True
        else:
            if breaks:
                w.indent()
            w.put("''" if ch == "'" else ch)
            w.indention = spaces = breaks = False
    if breaks:
        w.indent()
    w.put("'")
    w.whitespace = w.indention = False


_ESCAPES = {
    0x00: "0",
    0x07: "a",
    0x08: "b",
    0x09: "t",
    0x0A: "n",
    0x0B: "v",
    0x0C: "f",
    0x0D: "r",
    0x1B: "e",
    0x22: '"',
    0x5C: "\\",
    0x85: "N",
    0xA0: "_",
    0x2028: "L",
    0x2029: "P",
}


def _double_quoted(value: str, w: _Writer) -> None:
    w.space_before()
    w.put('"')
    w.whitespace = w.indention = False
    spaces = False
    last = len(value) - 1
    for i, ch in enumerate(value):
        code = ord(ch)
        if not _printable(ch) or ch in _BREAKS or ch in '"\\' or code == 0xFEFF:
            if code in _ESCAPES:
                w.put("\\" + _ESCAPES[code])
            elif code <= 0xFF:
                w.put(f"\\x{code:02X}")
            elif code <= 0xFFFF:
                w.put(f"\\u{code:04X}")
            else:
                w.put(f"\\U{code:08X}")
            spaces = False
        elif ch == " ":
            if not spaces and w.column > _WIDTH and 0 < i < last:
                w.indent()
                if value[i + 1] == " ":
                    w.put("\\")
            else:
                w.put(ch)
            spaces = True
        else:
            w.put(ch)
            spaces = False
    w.put('"')
    w.whitespace = w.indention = False


def yaml_value(value: str, column: int) -> str:
    """`value` as libyaml writes a block mapping value whose key ends at `column` (the text
    after the ':'), in the first style the value allows: plain, single- or double-quoted."""
    analysis = _analyze(value)
    w = _Writer(column)
    if analysis.plain:
        _plain(value, w)
    elif analysis.single_quoted:
        _single_quoted(value, w)
    else:
        _double_quoted(value, w)
    return w.text()


def _check_utf8(path: str) -> None:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(
            f"{path.encode('utf-8', 'surrogateescape')!r} is not UTF-8: YAML cannot hold it"
        ) from None


def _extent_lines(extents: tuple[omf.Extent, ...], indent: str) -> list[str]:
    if not extents:
        return [f"{indent}simple_ext_list: []"]
    lines = [f"{indent}simple_ext_list:"]
    for e in extents:
        lines.append(f"{indent}- devindex: {_int64(e.devindex)}")
        lines.append(f"{indent}  offset: {e.offset:#x}")
        lines.append(f"{indent}  length: {e.length:#x}")
    return lines


def shadow_yaml(meta: omf.FileMeta) -> str:
    """The shadow file upstream writes for a file's log entry (raises ValueError for a path
    that is not UTF-8, or an extent list upstream's writer does not know)."""
    _check_utf8(meta.relpath)
    fmap = meta.fmap
    if isinstance(fmap, omf.SimpleFmap):
        nextents = len(fmap.extents)
    elif isinstance(fmap, omf.InterleavedFmap):
        nextents = fmap.niext
    else:
        raise ValueError(f"{meta.relpath}: extent type {fmap.ext_type} has no YAML form")
    lines = [
        "---",
        "file:",
        "  path:" + yaml_value(meta.relpath, len("  path:")),
        f"  size: {_int64(meta.size)}",
        f"  flags: {_int32(meta.flags)}",
        f"  mode: 0{meta.mode:o}",
        f"  uid: {_int32(meta.uid)}",
        f"  gid: {_int32(meta.gid)}",
        f"  nextents: {_int32(nextents)}",
    ]
    if isinstance(fmap, omf.SimpleFmap):
        lines += _extent_lines(fmap.extents, "  ")
    else:
        lines += [
            "  striped_ext_list:",
            f"  - nstrips: {_int64(fmap.nstrips)}",
            f"    chunk_size: {fmap.chunk_size:#x}",
            *_extent_lines(fmap.strips, "    "),
        ]
    lines.append("...")
    return "\n".join(lines) + "\n"


# -- reading a shadow file back ------------------------------------------------------------------
def _fold(lines: list[str]) -> str:
    """YAML line folding of a flow scalar continued over lines: one break is a space, n
    breaks (n-1 empty lines) are n-1 newlines."""
    out = lines[0].rstrip(" ")
    empty = 0
    for line in lines[1:]:
        text = line.strip(" ")
        if not text:
            empty += 1
            continue
        out += ("\n" * empty if empty else " ") + text
        empty = 0
    return out + "\n" * empty


def _unescape(text: str) -> str:
    named = {v: chr(k) for k, v in _ESCAPES.items()} | {" ": " ", "/": "/", "\t": "\t"}
    out = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        code = text[i + 1 : i + 2]
        if code in named:
            out.append(named[code])
            i += 2
        elif code in ("x", "u", "U"):
            width = {"x": 2, "u": 4, "U": 8}[code]
            out.append(chr(int(text[i + 2 : i + 2 + width], 16)))
            i += 2 + width
        else:
            raise ValueError(f"unknown escape \\{code} in a double-quoted scalar")
    return "".join(out)


def _scalar(lines: list[str]) -> str:
    first = lines[0].lstrip(" ")
    if first.startswith("'"):
        folded = _fold([first[1:], *lines[1:]])
        if not folded.endswith("'"):
            raise ValueError("unterminated single-quoted scalar")
        return folded[:-1].replace("''", "'")
    if first.startswith('"'):
        folded = _fold([first[1:], *lines[1:]])
        if not folded.endswith('"'):
            raise ValueError("unterminated double-quoted scalar")
        return _unescape(folded[:-1])
    return _fold([first, *lines[1:]])


def _number(text: str) -> int:
    return int(text.strip(), 0)


def _mode(text: str) -> int:
    text = text.strip()
    return int(text, 8) if text.startswith("0") and text != "0" else int(text, 0)


class _Lines:
    def __init__(self, text: str) -> None:
        self.lines = text.split("\n")
        self.i = 0

    def peek(self, skip_blank: bool = True) -> str | None:
        while skip_blank and self.i < len(self.lines) and not self.lines[self.i].strip():
            self.i += 1
        return self.lines[self.i] if self.i < len(self.lines) else None

    def take(self, skip_blank: bool = True) -> str:
        line = self.peek(skip_blank)
        if line is None:
            raise ValueError("the document ends early")
        self.i += 1
        return line

    def field(self, prefix: str) -> str:
        line = self.take()
        if not line.startswith(prefix):
            raise ValueError(f"expected {prefix.strip()!r}, found {line.strip()!r}")
        return line[len(prefix) :]


def _read_extents(lines: _Lines, indent: str) -> tuple[omf.Extent, ...]:
    head = lines.field(f"{indent}simple_ext_list:").strip()
    if head == "[]":
        return ()
    if head:
        raise ValueError(f"unexpected {head!r} after simple_ext_list")
    extents = []
    while (line := lines.peek()) is not None and line.startswith(f"{indent}- devindex:"):
        devindex = _number(lines.field(f"{indent}- devindex:"))
        offset = _number(lines.field(f"{indent}  offset:"))
        length = _number(lines.field(f"{indent}  length:"))
        extents.append(omf.Extent(offset, length, devindex & ((1 << 64) - 1)))
    return tuple(extents)


def parse_shadow_yaml(text: str) -> omf.FileMeta:
    """A shadow file read back into the log entry it was written from (ValueError if it is
    not one)."""
    lines = _Lines(text)
    if lines.take().strip() != "---":
        raise ValueError("a shadow file starts with '---'")
    if lines.take().rstrip() != "file:":
        raise ValueError("a shadow file describes a 'file:'")
    path_lines = [lines.field("  path:")]
    while (line := lines.peek(skip_blank=False)) is not None and (
        not line.strip() or line.startswith(" " * _VALUE_INDENT)
    ):
        path_lines.append(lines.take(skip_blank=False))
    relpath = _scalar(path_lines)
    size = _number(lines.field("  size:")) & ((1 << 64) - 1)
    flags = _number(lines.field("  flags:")) & 0xFFFFFFFF
    mode = _mode(lines.field("  mode:"))
    uid = _number(lines.field("  uid:")) & 0xFFFFFFFF
    gid = _number(lines.field("  gid:")) & 0xFFFFFFFF
    nextents = _number(lines.field("  nextents:"))
    fmap: omf.Fmap
    if (lines.peek() or "").startswith("  striped_ext_list:"):
        lines.take()
        nstrips = _number(lines.field("  - nstrips:"))
        chunk_size = _number(lines.field("    chunk_size:"))
        strips = _read_extents(lines, "    ")
        if nstrips != len(strips):
            raise ValueError(f"nstrips {nstrips} but {len(strips)} strips")
        fmap = omf.InterleavedFmap(nstrips, chunk_size, strips, nextents)
    else:
        extents = _read_extents(lines, "  ")
        if nextents != len(extents):
            raise ValueError(f"nextents {nextents} but {len(extents)} extents")
        fmap = omf.SimpleFmap(extents)
    if lines.take().strip() != "...":
        raise ValueError("a shadow file ends with '...'")
    if lines.peek() is not None:
        raise ValueError("text after the end of the document")
    return omf.FileMeta(size, flags, uid, gid, mode, relpath, fmap)


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
    `shadow_path`, as upstream's shadow logplay does: existing directories and files are left
    as they are (with `test`, every file's YAML is read back and compared with its entry).
    Stops at the first invalid entry. Raises ShadowError if the shadow path is unusable."""
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
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
                f.write(text)
        except OSError as exc:
            warn(f"cannot write shadow file {path}: {exc.strerror}")
            stats.file_errors += 1
            return
        stats.files_created += 1
    else:
        stats.files_existed += 1
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
