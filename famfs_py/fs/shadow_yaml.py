"""Upstream's shadow YAML: the document upstream famfs writes for a file's log entry, byte
for byte (its libyaml emitter with default settings: width 80, indent 2, ASCII only), and
reading such a document back into the log entry it describes."""

from __future__ import annotations

from dataclasses import dataclass

from famfs_py import omf

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
