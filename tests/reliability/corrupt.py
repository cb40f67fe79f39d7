"""Corrupt famfs images: every field of the superblock, log header and log entries damaged in
the ways media and buggy writers damage them.

An `Image` is a famfs device reduced to what matters (the 200-byte superblock, the log bytes
in use, the device size and how much memory really backs it); a `Case` is one damaged image
with a reproducible name and what the damage touched. Bases are built with famfs_py.omf
(`empty_base`, `tree_base`) or read from upstream's reference images (`image_from_device`).
`targeted_cases` enumerates the hand-picked damage for a base; `random_cases` stacks random
bit flips and absurd values, deterministically from a seed.
"""

from __future__ import annotations

import random
import struct
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from famfs_py import omf

GiB = 1 << 30
MiB = 1 << 20
AU = omf.ALLOC_UNIT
DEV_SIZE = 4 * GiB
U64_MAX = (1 << 64) - 1
U32_MAX = (1 << 32) - 1
MASTER = uuid.UUID("6b1c9a3e-2f4d-4e8a-9b7c-1d2e3f405162")  # the reference images' master
OTHER = uuid.UUID("0c1d2e3f-4a5b-4c6d-8e7f-901122334455")

# field name -> (offset, size) within its structure
SB_FIELDS: dict[str, tuple[int, int]] = {
    "magic": (0, 8),
    "version": (8, 8),
    "log_offset": (16, 8),
    "log_len": (24, 8),
    "alloc_unit": (32, 8),
    "omf_major": (40, 4),
    "omf_minor": (44, 4),
    "fs_uuid": (48, 16),
    "dev_uuid": (64, 16),
    "system_uuid": (80, 16),
    "crc": (96, 8),
    "sb_flags": (104, 4),
    "pad": (108, 4),
    "dev_size": (112, 8),
    "dd_uuid": (120, 16),
    "dev_name": (136, 64),
}
SB_CRC_END = 96
HDR_FIELDS: dict[str, tuple[int, int]] = {
    "magic": (0, 8),
    "log_len": (8, 8),
    "last_index": (16, 8),
    "crc": (24, 8),
    "next_seqnum": (32, 8),
    "next_index": (40, 8),
}
HDR_CRC_END = 24
ENTRY_FIELDS: dict[str, tuple[int, int]] = {
    "seqnum": (0, 8),
    "type": (8, 4),
    "pad": (12, 4),
    "crc": (536, 8),
}
FILE_FIELDS: dict[str, tuple[int, int]] = {
    "size": (16, 8),
    "flags": (24, 4),
    "uid": (28, 4),
    "gid": (32, 4),
    "mode": (36, 4),
    "relpath": (40, 80),
    "ext_type": (120, 4),
    "fmap_pad": (124, 4),
    "nextents": (128, 4),
    "fmap_pad2": (132, 4),
    # simple extents start at 136 (24 bytes each: devindex, offset, len); an interleaved
    # extent has nstrips @136, chunk_size @144 and its strips from 152
    "ext0.devindex": (136, 8),
    "ext0.offset": (144, 8),
    "ext0.len": (152, 8),
    "ext1.offset": (168, 8),
    "ext1.len": (176, 8),
    "ext15.offset": (136 + 15 * 24 + 8, 8),
    "strip0.offset": (160, 8),
    "strip0.len": (168, 8),
    "strip1.offset": (184, 8),
    "strip1.len": (192, 8),
}
MKDIR_FIELDS: dict[str, tuple[int, int]] = {
    "uid": (16, 4),
    "gid": (20, 4),
    "mode": (24, 4),
    "relpath": (28, 80),
    "unused": (108, 428),
}
FILE_PATH = FILE_FIELDS["relpath"][0]
MKDIR_PATH = MKDIR_FIELDS["relpath"][0]


def _crc(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def _put(buf: bytes, offset: int, size: int, value: int | bytes) -> bytes:
    raw = value.to_bytes(size, "little") if isinstance(value, int) else value.ljust(size, b"\0")
    assert len(raw) == size, (offset, size, value)
    return buf[:offset] + raw + buf[offset + size :]


def _flip(buf: bytes, bit: int) -> bytes:
    pos = bit // 8
    return buf[:pos] + bytes([buf[pos] ^ (1 << (bit % 8))]) + buf[pos + 1 :]


@dataclass(frozen=True)
class Image:
    """A famfs device: `sb` at 0, `log` (header + slots) at the log offset, zeros elsewhere."""

    sb: bytes
    log: bytes
    dev_size: int = DEV_SIZE  # what the device says it holds (sysfs `size`)
    mem_size: int | None = None  # bytes of memory really behind it (None: dev_size)
    data: tuple[tuple[int, bytes], ...] = ()  # file contents worth checking

    @property
    def memory(self) -> int:
        return self.dev_size if self.mem_size is None else self.mem_size

    # -- superblock and header -------------------------------------------------------
    def with_sb(self, name: str, value: int | bytes, *, fix_crc: bool = True) -> Image:
        offset, size = SB_FIELDS[name]
        sb = _put(self.sb, offset, size, value)
        return replace(self, sb=_fix_sb(sb) if fix_crc and name != "crc" else sb)

    def with_hdr(self, name: str, value: int | bytes, *, fix_crc: bool = True) -> Image:
        offset, size = HDR_FIELDS[name]
        hdr = _put(self.log[: omf.LOG_HEADER_SIZE], offset, size, value)
        if fix_crc and name != "crc":
            hdr = _fix_hdr(hdr)
        return replace(self, log=hdr + self.log[omf.LOG_HEADER_SIZE :])

    @property
    def next_index(self) -> int:
        return int.from_bytes(self.log[40:48], "little")

    @property
    def slots_present(self) -> int:
        return (len(self.log) - omf.LOG_HEADER_SIZE) // omf.LOG_ENTRY_SIZE

    def committed(self) -> int:
        """Committed entries according to the header (bounded by the log's slots)."""
        hdr = omf.LogHeader.unpack(self.log)
        return min(self.next_index, max(0, hdr.last_index + 1))

    # -- entries ---------------------------------------------------------------------
    def entry(self, index: int) -> bytes:
        start = omf.LOG_HEADER_SIZE + index * omf.LOG_ENTRY_SIZE
        raw = self.log[start : start + omf.LOG_ENTRY_SIZE]
        return raw.ljust(omf.LOG_ENTRY_SIZE, b"\0")

    def with_entry(self, index: int, raw: bytes, *, fix_crc: bool = False) -> Image:
        assert len(raw) == omf.LOG_ENTRY_SIZE
        if fix_crc:
            raw = fix_entry_crc(raw)
        start = omf.LOG_HEADER_SIZE + index * omf.LOG_ENTRY_SIZE
        log = self.log.ljust(start + omf.LOG_ENTRY_SIZE, b"\0")
        return replace(self, log=log[:start] + raw + log[start + omf.LOG_ENTRY_SIZE :])

    def with_entry_field(
        self, index: int, offset: int, size: int, value: int | bytes, *, fix_crc: bool = True
    ) -> Image:
        return self.with_entry(index, _put(self.entry(index), offset, size, value), fix_crc=fix_crc)

    def append(self, raw_entries: list[bytes]) -> Image:
        """Commit more entries (slots from the header's next_index on; the header's counters
        follow)."""
        image = self
        start = self.next_index
        for k, raw in enumerate(raw_entries):
            image = image.with_entry(start + k, raw)
        end = start + len(raw_entries)
        return image.with_hdr("next_index", end, fix_crc=False).with_hdr(
            "next_seqnum", end, fix_crc=False
        )

    def entries(self) -> list[omf.LogEntry]:
        return [omf.LogEntry.unpack(self.entry(i)) for i in range(self.committed())]


def _fix_sb(sb: bytes) -> bytes:
    return _put(sb, 96, 8, _crc(sb[:SB_CRC_END]))


def _fix_hdr(hdr: bytes) -> bytes:
    return _put(hdr, 24, 8, _crc(hdr[:HDR_CRC_END]))


def fix_entry_crc(raw: bytes) -> bytes:
    return _put(raw, 536, 8, _crc(raw[:536]))


def new_entry(index: int, payload: omf.FileMeta | omf.MkdirMeta | omf.AddDaxdevMeta) -> bytes:
    return omf.LogEntry.new(index, payload).pack()


def file_meta(
    path: str, size: int, extents: list[tuple[int, int]], mode: int = 0o644, uid: int = 0
) -> omf.FileMeta:
    fmap = omf.SimpleFmap(tuple(omf.Extent(o, n) for o, n in extents))
    return omf.FileMeta(size, omf.FM_ALL_HOSTS_RW, uid, uid, mode, path, fmap)


def raw_path_entry(index: int, kind: int, path: bytes, extent: tuple[int, int]) -> bytes:
    """A CRC-correct FILE or MKDIR entry whose 80 path bytes are exactly `path` (padded with
    NULs, or none at all when it is 80 bytes long)."""
    if kind == omf.LOG_MKDIR:
        body = omf.MkdirMeta(0, 0, 0o755, "x").pack()
        body = _put(body, 12, 80, path)
    else:
        body = file_meta("x", 4096, [extent]).pack()
        body = _put(body, 24, 80, path)
    raw = struct.pack("<QI4x", index, kind) + body.ljust(omf.PAYLOAD_SIZE, b"\0")
    return fix_entry_crc(raw + bytes(8))


# -- bases ------------------------------------------------------------------------------------
def mkfs_image(dev_size: int = DEV_SIZE, system: uuid.UUID = MASTER) -> Image:
    sb = omf.Superblock.new(dev_size=dev_size, dev_name="/dev/dax0.0", system_uuid=system)
    return Image(sb.pack(), omf.LogHeader.new().pack(), dev_size)


def empty_base() -> Image:
    return mkfs_image()


def tree_base() -> Image:
    """Directories, simple, multi-extent and interleaved files, a 79-byte path, odd owners."""
    long_name = "a/" + "n" * 77
    payloads: list[omf.FileMeta | omf.MkdirMeta] = [
        omf.MkdirMeta(0, 0, 0o755, "a"),
        omf.MkdirMeta(1000, 100, 0o750, "a/b"),
        file_meta("a/b/f1", 4096, [(10 * MiB, AU)]),
        file_meta("top", 3 * MiB, [(12 * MiB, 2 * AU)], mode=0o600, uid=1000),
        omf.MkdirMeta(0, 0, 0o755, "s"),
        omf.FileMeta(
            12 * MiB - 100,
            omf.FM_ALL_HOSTS_RW,
            0,
            0,
            0o644,
            "s/stripe",
            omf.InterleavedFmap(3, AU, tuple(omf.Extent(k * GiB, 2 * AU) for k in (1, 2, 3))),
        ),
        file_meta("multi", 5 * MiB, [(16 * MiB, AU), (64 * MiB, 2 * AU)]),
        file_meta(long_name, 1, [(20 * MiB, AU)], mode=0o444, uid=65534),
        omf.MkdirMeta(0, 0, 0o700, "a/b/c"),
        omf.FileMeta(
            AU,
            omf.FM_ALL_HOSTS_RO,
            0,
            0,
            0o644,
            "a/b/c/g",
            omf.SimpleFmap((omf.Extent(22 * MiB, AU),)),
        ),
    ]
    image = mkfs_image()
    raw = [new_entry(i, p) for i, p in enumerate(payloads)]
    image = image.append(raw)
    data = []
    for index, payload in enumerate(payloads):
        if isinstance(payload, omf.FileMeta):
            first = omf.fmap_extents(payload.fmap)[0].offset
            data.append((first, f"entry {index}: {payload.relpath}".encode()))
    return replace(image, data=tuple(data))


def image_from_device(path: Path) -> Image:
    """The superblock, and the log up to two slots past the committed entries, of an image
    file (a reference image)."""
    with open(path, "rb") as f:
        sb = f.read(omf.SUPERBLOCK_STRUCT_SIZE)
        size = f.seek(0, 2)
        f.seek(omf.LOG_OFFSET)
        hdr = f.read(omf.LOG_HEADER_SIZE)
        n = omf.LogHeader.unpack(hdr).next_index
        f.seek(omf.LOG_OFFSET)
        log = f.read(omf.LOG_HEADER_SIZE + (n + 2) * omf.LOG_ENTRY_SIZE)
    return Image(sb, log, size)


# -- cases --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    name: str
    image: Image
    scope: str  # "superblock", "header", "device", "entries" (what the damage touched)
    mutated: frozenset[int] = frozenset()  # entry slots whose bytes differ from the base
    holds_superblock: bool = True  # mkfs without -f must refuse the device
    base: str = ""
    tags: tuple[str, ...] = field(default=())


def used_aus(image: Image) -> set[int]:
    """Allocation units the base's committed files use (where a new extent must not go)."""
    used = set(range((omf.LOG_OFFSET + omf.DEFAULT_LOG_LEN) // AU))
    for entry in image.entries():
        if isinstance(entry.payload, omf.FileMeta):
            for ext in omf.fmap_extents(entry.payload.fmap):
                used.update(range(ext.offset // AU, -(-(ext.offset + ext.length) // AU)))
    return used


def free_extent(image: Image, aus: int = 1, skip: int = 0) -> tuple[int, int]:
    """A free run of `aus` allocation units, searched from the end of the device."""
    used = used_aus(image)
    top = image.dev_size // AU
    run = 0
    for au in range(top - 1, 0, -1):
        run = run + 1 if au not in used else 0
        if run == aus:
            if skip == 0:
                return au * AU, aus * AU
            skip -= 1
            run = 0
    raise ValueError("no free run in the base")


def _files_and_dirs(image: Image) -> tuple[list[tuple[int, omf.FileMeta]], list[str]]:
    files = []
    dirs = []
    for index, entry in enumerate(image.entries()):
        if isinstance(entry.payload, omf.FileMeta):
            files.append((index, entry.payload))
        elif isinstance(entry.payload, omf.MkdirMeta):
            dirs.append(entry.payload.relpath)
    return files, dirs


SB_VALUES: dict[str, list[int | bytes]] = {
    "magic": [0, omf.SUPER_MAGIC + 1, omf.LOG_MAGIC, U64_MAX],
    "version": [0, 47, 49, U64_MAX],
    "log_offset": [0, MiB, 4 * MiB, 2**63, DEV_SIZE],
    "log_len": [0, 4 * MiB, 8 * MiB - 1, 12 * MiB, 16 * MiB, 2 * GiB, DEV_SIZE, 2**62, U64_MAX],
    "alloc_unit": [0, 1, 4096, MiB, 4 * MiB, 2**63],
    "omf_major": [0, 1, 3, U32_MAX],
    "omf_minor": [0, 3, U32_MAX],
    "system_uuid": [bytes(16), OTHER.bytes],
    "sb_flags": [1, 2, 3, U32_MAX],
    "dev_size": [
        0,
        1,
        4096,
        2 * MiB,
        10 * MiB - 1,
        10 * MiB,
        12 * MiB,
        DEV_SIZE - AU,
        DEV_SIZE - 1,
        DEV_SIZE + AU,
        2 * DEV_SIZE,
        2**63,
        U64_MAX,
    ],
    "dev_name": [b"x" * 64, b"\xff\xfe\xfd", b""],
    "crc": [0, 1 << 32, U64_MAX],
}
HDR_VALUES: dict[str, list[int]] = {
    "magic": [0, omf.SUPER_MAGIC, U64_MAX],
    "log_len": [0, 4 * MiB, 16 * MiB, 2**63],
    "last_index": [0, 15418, 15420, U64_MAX],
    "next_seqnum": [0, 1, 2**63, U64_MAX],
    "next_index": [0, 1, 15419, 15420, 15421, 2**32, 2**63, U64_MAX],
    "crc": [0, 1 << 32],
}
SIZE_VALUES = [0, 1, 4095, AU - 1, AU, AU + 1, 2**32, 2**63, U64_MAX]
EXTENT_OFFSETS = [
    0,
    4096,
    AU // 2,
    omf.LOG_OFFSET,
    omf.LOG_OFFSET + omf.DEFAULT_LOG_LEN - AU,
    DEV_SIZE - AU,
    DEV_SIZE,
    DEV_SIZE + AU,
    2**63,
    U64_MAX - AU + 1,
]
EXTENT_LENS = [0, 4096, AU - 1, AU, 64 * AU, DEV_SIZE, 2**63, U64_MAX - AU + 1]
NEXTENTS = [0, 2, 16, 17, 2**31, U32_MAX]
EXT_TYPES = [1, 2, 3, U32_MAX]
NSTRIPS = [0, 1, 2, 16, 17, 2**32, U64_MAX]
CHUNKS = [0, 1, 4096, AU - 1, 3 * AU, GiB, 2**63, U64_MAX]
ENTRY_TYPES = [2, 3, 4, 5, 255, 2**31, U32_MAX]
ID_VALUES = [U32_MAX, 0o170777, 0o4777, 0]
FLAG_VALUES = [0, 1, 3, U32_MAX]
PATH_TRICKS: list[bytes] = [
    b"",
    b".",
    b"..",
    b"../escape",
    b"a/../../escape",
    b"/etc/passwd",
    b"/",
    b"//x",
    b"a//b",
    b"./x",
    b"x/.",
    b"x/..",
    b"trailing/",
    b"x" * 79,
    b"x" * 80,  # no NUL terminator at all
    b"y" * 78 + b"/",
    b"\xff\xfe",
    b"new\nline",
    b".meta",
    b".meta/.log",
    b".meta/new",
    b"missing/child",
    b"zz\0../../etc",  # bytes after the NUL are not part of the path
    b"\0hidden",
]


def _sb_cases(base: Image, rng: random.Random) -> Iterator[Case]:
    for name, (offset, size) in SB_FIELDS.items():
        bit = offset * 8 + rng.randrange(size * 8)
        flipped = replace(base, sb=_flip(base.sb, bit))
        yield Case(f"sb.{name}.flip{bit}", flipped, "superblock")
        if offset < SB_CRC_END:
            yield Case(
                f"sb.{name}.flip{bit}.crc-fixed",
                replace(flipped, sb=_fix_sb(flipped.sb)),
                "superblock",
            )
    for name, values in SB_VALUES.items():
        for value in values:
            label = value.hex() if isinstance(value, bytes) else hex(value)
            holds = not (name == "magic" and value == 0)
            yield Case(
                f"sb.{name}={label}",
                base.with_sb(name, value),
                "superblock",
                holds_superblock=holds,
            )
    yield Case(
        "sb.zeroed",
        replace(base, sb=bytes(omf.SUPERBLOCK_STRUCT_SIZE)),
        "superblock",
        holds_superblock=False,
    )
    yield Case(
        "sb.killed", base.with_sb("magic", 0, fix_crc=False), "superblock", holds_superblock=False
    )
    garbage = bytes(rng.randrange(256) for _ in range(omf.SUPERBLOCK_STRUCT_SIZE))
    yield Case("sb.garbage", replace(base, sb=garbage), "superblock")
    yield Case(
        "sb.garbage-with-magic",
        replace(base, sb=_put(garbage, 0, 8, omf.SUPER_MAGIC)),
        "superblock",
    )


def _hdr_cases(base: Image, rng: random.Random) -> Iterator[Case]:
    for name, (offset, size) in HDR_FIELDS.items():
        bit = offset * 8 + rng.randrange(size * 8)
        hdr = _flip(base.log[: omf.LOG_HEADER_SIZE], bit)
        flipped = replace(base, log=hdr + base.log[omf.LOG_HEADER_SIZE :])
        yield Case(f"hdr.{name}.flip{bit}", flipped, "header")
        if offset < HDR_CRC_END:
            fixed = replace(base, log=_fix_hdr(hdr) + base.log[omf.LOG_HEADER_SIZE :])
            yield Case(f"hdr.{name}.flip{bit}.crc-fixed", fixed, "header")
    for name, values in HDR_VALUES.items():
        for value in values:
            yield Case(f"hdr.{name}={value:#x}", base.with_hdr(name, value), "header")
    n = base.next_index
    for value in {max(0, n - 1), n + 1, n + 2}:
        yield Case(
            f"hdr.next_index=committed{value - n:+d}", base.with_hdr("next_index", value), "header"
        )
    zero = bytes(omf.LOG_HEADER_SIZE)
    yield Case("hdr.zeroed", replace(base, log=zero + base.log[omf.LOG_HEADER_SIZE :]), "header")
    # a header for a 16 MiB log on a superblock that says 8 MiB, CRC-correct
    other = omf.LogHeader.new(16 * MiB).pack()
    other = _put(other, 32, 16, base.log[32:48])
    yield Case(
        "hdr.other-log-len", replace(base, log=other + base.log[omf.LOG_HEADER_SIZE :]), "header"
    )


def _device_cases(base: Image) -> Iterator[Case]:
    n = base.next_index
    log_used = omf.LOG_OFFSET + omf.entry_offset(n)
    sizes = {
        0,
        4096,
        omf.LOG_OFFSET,
        omf.LOG_OFFSET + 4096,
        log_used - omf.LOG_ENTRY_SIZE // 2 if n else omf.LOG_OFFSET + 64,
        omf.LOG_OFFSET + 4 * MiB,
        omf.LOG_OFFSET + omf.DEFAULT_LOG_LEN,
        12 * MiB,
        64 * MiB,
        GiB + AU,
        DEV_SIZE - AU,
    }
    for size in sorted(sizes):
        # the device is smaller than the superblock says (its sysfs size and its memory)
        yield Case(f"device.size={size:#x}", replace(base, dev_size=size), "device")
    for size in sorted(sizes - {DEV_SIZE - AU}):
        # the device says 4 GiB but less memory is really there (a truncated backing file)
        yield Case(f"device.memory={size:#x}", replace(base, mem_size=size), "device")
    yield Case("device.larger", replace(base, dev_size=DEV_SIZE + 64 * MiB), "device")


def _entry_value_cases(base: Image, index: int, rng: random.Random) -> Iterator[Case]:
    raw = base.entry(index)
    entry = omf.LogEntry.unpack(raw)
    m = frozenset({index})
    tag = f"e{index}"
    bit = rng.randrange(536 * 8)
    yield Case(f"{tag}.flip{bit}", base.with_entry(index, _flip(raw, bit)), "entries", m)
    bit = rng.randrange(536 * 8)
    yield Case(
        f"{tag}.flip{bit}.crc-fixed",
        base.with_entry(index, _flip(raw, bit), fix_crc=True),
        "entries",
        m,
    )
    for value in (index + 1, index - 1, 2**63, U64_MAX):
        if value >= 0:
            yield Case(
                f"{tag}.seqnum={value:#x}", base.with_entry_field(index, 0, 8, value), "entries", m
            )
    for value in ENTRY_TYPES:
        yield Case(
            f"{tag}.type={value:#x}", base.with_entry_field(index, 8, 4, value), "entries", m
        )
    yield Case(f"{tag}.pad=junk", base.with_entry_field(index, 12, 4, 0xDEADBEEF), "entries", m)
    for value in (0, (entry.crc ^ 1), entry.crc | (1 << 32)):
        yield Case(
            f"{tag}.crc={value:#x}",
            base.with_entry_field(index, 536, 8, value, fix_crc=False),
            "entries",
            m,
        )
    yield Case(f"{tag}.zeroed", base.with_entry(index, bytes(omf.LOG_ENTRY_SIZE)), "entries", m)
    payload = entry.payload
    fields = FILE_FIELDS if isinstance(payload, omf.FileMeta) else MKDIR_FIELDS
    path_at = FILE_PATH if isinstance(payload, omf.FileMeta) else MKDIR_PATH
    for trick in PATH_TRICKS:
        yield Case(
            f"{tag}.relpath={trick!r}",
            base.with_entry_field(index, path_at, 80, trick),
            "entries",
            m,
        )
    # the path bytes after its NUL are junk (upstream never promises zeros there)
    path_len = len(raw[path_at : path_at + 80].split(b"\0", 1)[0])
    if path_len < 79:
        junk = raw[path_at : path_at + path_len + 1] + b"J" * (79 - path_len)
        yield Case(
            f"{tag}.relpath-junk-after-nul",
            base.with_entry_field(index, path_at, 80, junk),
            "entries",
            m,
        )
    for name in ("uid", "gid", "mode"):
        offset, size = fields[name]
        for value in ID_VALUES:
            yield Case(
                f"{tag}.{name}={value:#o}",
                base.with_entry_field(index, offset, size, value),
                "entries",
                m,
            )
    if isinstance(payload, omf.MkdirMeta):
        yield Case(
            f"{tag}.mkdir-tail-junk",
            base.with_entry_field(index, 108, 428, b"\xaa" * 428),
            "entries",
            m,
        )
        return
    if not isinstance(payload, omf.FileMeta):
        return
    for value in SIZE_VALUES:
        yield Case(
            f"{tag}.size={value:#x}", base.with_entry_field(index, 16, 8, value), "entries", m
        )
    for value in FLAG_VALUES:
        yield Case(
            f"{tag}.flags={value:#x}", base.with_entry_field(index, 24, 4, value), "entries", m
        )
    yield Case(
        f"{tag}.fmap-pad=junk", base.with_entry_field(index, 124, 4, 0xFFFFFFFF), "entries", m
    )
    for value in NEXTENTS:
        yield Case(
            f"{tag}.nextents={value:#x}", base.with_entry_field(index, 128, 4, value), "entries", m
        )
    if isinstance(payload.fmap, omf.SimpleFmap):
        for value in EXT_TYPES:
            yield Case(
                f"{tag}.ext_type={value:#x}",
                base.with_entry_field(index, 120, 4, value),
                "entries",
                m,
            )
        for value in EXTENT_OFFSETS:
            yield Case(
                f"{tag}.ext0.offset={value:#x}",
                base.with_entry_field(index, 144, 8, value),
                "entries",
                m,
            )
        for value in EXTENT_LENS:
            yield Case(
                f"{tag}.ext0.len={value:#x}",
                base.with_entry_field(index, 152, 8, value),
                "entries",
                m,
            )
        yield Case(f"{tag}.ext0.devindex=1", base.with_entry_field(index, 136, 8, 1), "entries", m)
        yield Case(
            f"{tag}.extents-beyond-n-junk",
            base.with_entry_field(index, 136 + 24 * 15, 24, b"\x11" * 24),
            "entries",
            m,
        )
    else:
        yield Case(f"{tag}.ext_type=simple", base.with_entry_field(index, 120, 4, 0), "entries", m)
        yield Case(f"{tag}.ext_type=2", base.with_entry_field(index, 120, 4, 2), "entries", m)
        for value in NSTRIPS:
            yield Case(
                f"{tag}.nstrips={value:#x}",
                base.with_entry_field(index, 136, 8, value),
                "entries",
                m,
            )
        for value in CHUNKS:
            yield Case(
                f"{tag}.chunk={value:#x}", base.with_entry_field(index, 144, 8, value), "entries", m
            )
        for value in EXTENT_OFFSETS:
            yield Case(
                f"{tag}.strip0.offset={value:#x}",
                base.with_entry_field(index, 160, 8, value),
                "entries",
                m,
            )
        for value in EXTENT_LENS:
            yield Case(
                f"{tag}.strip0.len={value:#x}",
                base.with_entry_field(index, 168, 8, value),
                "entries",
                m,
            )
        second = base.entry(index)[160:168]
        yield Case(
            f"{tag}.strips-overlap", base.with_entry_field(index, 184, 8, second), "entries", m
        )


def _structural_cases(base: Image, chosen: list[int]) -> Iterator[Case]:
    n = base.next_index
    files, dirs = _files_and_dirs(base)
    files = [(i, meta) for i, meta in files if i in chosen]
    for i in chosen:
        if i + 1 >= n:
            continue
        a, b = base.entry(i), base.entry(i + 1)
        swapped = base.with_entry(i, b).with_entry(i + 1, a)
        yield Case(f"swap{i}-{i + 1}", swapped, "entries", frozenset({i, i + 1}))
        renumbered = swapped.with_entry_field(i, 0, 8, i).with_entry_field(i + 1, 0, 8, i + 1)
        yield Case(f"swap{i}-{i + 1}.renumbered", renumbered, "entries", frozenset({i, i + 1}))
    for i in chosen:
        # log cut short: the header still counts entries that are gone from slot i on
        start = omf.LOG_HEADER_SIZE + i * omf.LOG_ENTRY_SIZE
        cut = replace(base, log=base.log[:start].ljust(len(base.log), b"\0"))
        yield Case(f"log-cut-at{i}", cut, "entries", frozenset(range(i, n)))
        yield Case(f"log-ends-at{i}", base.with_hdr("next_index", i, fix_crc=False), "header")
    if n:
        dup = _put(base.entry(n - 1), 0, 8, n)
        yield Case("duplicate-last", base.append([fix_entry_crc(dup)]), "entries", frozenset({n}))
        yield Case(
            "seqnum-gap",
            base.append([fix_entry_crc(_put(base.entry(n - 1), 0, 8, n + 1))]),
            "entries",
            frozenset({n}),
        )
    # uncommitted bytes past next_index are not part of the filesystem
    junk = bytes(range(256)) * 2 + bytes(32)
    yield Case("uncommitted-junk", base.with_entry(n, junk), "entries", frozenset({n}))
    if n:
        stale = fix_entry_crc(_put(base.entry(n - 1), 0, 8, n))
        yield Case("uncommitted-valid-entry", base.with_entry(n, stale), "entries", frozenset({n}))
    free = free_extent(base)
    m = frozenset({n})
    # namespace tricks appended as CRC-correct entries
    for trick in PATH_TRICKS:
        for kind, kname in ((omf.LOG_FILE, "file"), (omf.LOG_MKDIR, "mkdir")):
            raw = raw_path_entry(n, kind, trick, free)
            yield Case(f"append-{kname}-path={trick!r}", base.append([raw]), "entries", m)
    for i, meta in files:
        over = free_extent(base)
        yield Case(
            f"append-mkdir-over-file{i}",
            base.append([new_entry(n, omf.MkdirMeta(0, 0, 0o755, meta.relpath))]),
            "entries",
            m,
        )
        if len(meta.relpath) < 73:
            yield Case(
                f"append-file-under-file{i}",
                base.append([new_entry(n, file_meta(meta.relpath + "/child", 10, [over]))]),
                "entries",
                m,
            )
        yield Case(
            f"append-duplicate-file{i}",
            base.append([new_entry(n, file_meta(meta.relpath, 10, [over]))]),
            "entries",
            m,
        )
        first = omf.fmap_extents(meta.fmap)[0]
        yield Case(
            f"append-file-overlapping-file{i}",
            base.append([new_entry(n, file_meta(f"overlap{i}", 10, [(first.offset, AU)]))]),
            "entries",
            m,
        )
    for d in dirs:
        yield Case(
            f"append-file-over-dir-{d}",
            base.append([new_entry(n, file_meta(d, 10, [free]))]),
            "entries",
            m,
        )
        yield Case(
            f"append-duplicate-dir-{d}",
            base.append([new_entry(n, omf.MkdirMeta(0, 0, 0o755, d))]),
            "entries",
            m,
        )
    for name, offset in (("superblock", 4096), ("log", omf.LOG_OFFSET)):
        yield Case(
            f"append-file-in-{name}",
            base.append([new_entry(n, file_meta(f"in-{name}", 10, [(offset, AU)]))]),
            "entries",
            m,
        )
    yield Case(
        "append-file-past-device",
        base.append([new_entry(n, file_meta("past", 10, [(DEV_SIZE - AU, 2 * AU)]))]),
        "entries",
        m,
    )
    yield Case(
        "append-16-extents",
        base.append(
            [
                new_entry(
                    n, file_meta("sixteen", 16 * AU, [free_extent(base, 1, k) for k in range(16)])
                )
            ]
        ),
        "entries",
        m,
    )
    yield Case(
        "append-add-daxdev",
        base.append([new_entry(n, omf.AddDaxdevMeta(DEV_SIZE, uuid.UUID(int=7), 1))]),
        "entries",
        m,
    )
    yield Case(
        "append-file-then-mkdir-same-path",
        base.append(
            [
                new_entry(n, file_meta("twin", 10, [free])),
                new_entry(n + 1, omf.MkdirMeta(0, 0, 0o755, "twin")),
                new_entry(n + 2, file_meta("twin/x", 10, [free_extent(base, 1, 1)])),
            ]
        ),
        "entries",
        frozenset({n, n + 1, n + 2}),
    )
    yield Case(
        "append-mkdir-then-file-same-path",
        base.append(
            [
                new_entry(n, omf.MkdirMeta(0, 0, 0o755, "twin")),
                new_entry(n + 1, file_meta("twin", 10, [free])),
                new_entry(n + 2, file_meta("twin/x", 10, [free_extent(base, 1, 1)])),
            ]
        ),
        "entries",
        frozenset({n, n + 1, n + 2}),
    )
    # 4 KiB allocation units (readers accept them) and an interleaved file of 4 KiB chunks
    # over 2 GiB, laid over whatever is there: half a million chunks in one entry
    small = base.with_sb("alloc_unit", 4096)
    wide = tuple(omf.Extent(GiB + k * 128 * MiB, 128 * MiB) for k in range(16))
    meta = omf.FileMeta(
        2 * GiB, omf.FM_ALL_HOSTS_RW, 0, 0, 0o644, "wide", omf.InterleavedFmap(16, 4096, wide)
    )
    yield Case("small-au-million-chunk-file", small.append([new_entry(n, meta)]), "superblock", m)
    # interleaved files with absurd geometry, CRC-correct
    strips = tuple(omf.Extent(o, ln) for o, ln in (free_extent(base, 1, k) for k in range(2)))
    for label, fmap, size in (
        ("zero-chunk", omf.InterleavedFmap(2, 0, strips), 4 * AU),
        ("tiny-chunk", omf.InterleavedFmap(2, 4096, strips), 4 * AU),
        ("huge-nstrips-count", omf.InterleavedFmap(2, AU, strips, niext=2), 2 * AU),
        ("no-strips", omf.InterleavedFmap(0, AU, ()), AU),
        ("size-beyond-strips", omf.InterleavedFmap(2, AU, strips), 64 * AU),
    ):
        meta = omf.FileMeta(size, omf.FM_ALL_HOSTS_RW, 0, 0, 0o644, f"il-{label}", fmap)
        yield Case(f"append-interleaved-{label}", base.append([new_entry(n, meta)]), "entries", m)


def targeted_cases(
    base_name: str, base: Image, seed: int = 1, entries: list[int] | None = None
) -> Iterator[Case]:
    """The hand-picked damage for one base, generated lazily (entries: which entry slots to
    damage field by field and structurally; default every committed one)."""
    rng = random.Random(f"{seed}-{base_name}")
    chosen = list(range(base.next_index)) if entries is None else entries
    parts = [_sb_cases(base, rng), _hdr_cases(base, rng), _device_cases(base)]
    parts += [_entry_value_cases(base, index, rng) for index in chosen]
    parts.append(_structural_cases(base, chosen))
    for part in parts:
        for case in part:
            yield replace(case, base=base_name, name=f"{base_name}:{case.name}")


def random_cases(base_name: str, base: Image, count: int, seed: int = 1) -> Iterator[Case]:
    """`count` cases with 1..4 stacked random damages: bit flips (CRC stale or fixed) in the
    superblock, header or any committed entry, or absurd values in random fields."""
    rng = random.Random(f"{seed}-{base_name}-random")
    n = base.next_index
    for k in range(count):
        image = base
        mutated: set[int] = set()
        scopes = []
        steps = []
        for _ in range(rng.randint(1, 4)):
            where = rng.random()
            if where < 0.1:
                bit = rng.randrange(omf.SUPERBLOCK_STRUCT_SIZE * 8)
                sb = _flip(image.sb, bit)
                if rng.random() < 0.5 and bit < SB_CRC_END * 8:
                    sb = _fix_sb(sb)
                image = replace(image, sb=sb)
                scopes.append("superblock")
                steps.append(f"sb-bit{bit}")
            elif where < 0.2:
                bit = rng.randrange(omf.LOG_HEADER_SIZE * 8)
                hdr = _flip(image.log[: omf.LOG_HEADER_SIZE], bit)
                if rng.random() < 0.5:
                    hdr = _fix_hdr(hdr)
                image = replace(image, log=hdr + image.log[omf.LOG_HEADER_SIZE :])
                scopes.append("header")
                steps.append(f"hdr-bit{bit}")
            elif n:
                index = rng.randrange(n)
                raw = image.entry(index)
                if rng.random() < 0.6:
                    bit = rng.randrange(omf.LOG_ENTRY_SIZE * 8)
                    raw = _flip(raw, bit)
                    what = f"bit{bit}"
                else:
                    offset = rng.randrange(0, 536 - 8, 4)
                    size = rng.choice((4, 8))
                    value = rng.choice(
                        [0, 1, U32_MAX, U64_MAX >> (64 - size * 8), AU, DEV_SIZE, 2**31]
                    ) & ((1 << (size * 8)) - 1)
                    raw = _put(raw, offset, size, value)
                    what = f"@{offset}={value:#x}"
                fixed = rng.random() < 0.5
                image = image.with_entry(index, raw, fix_crc=fixed)
                mutated.add(index)
                scopes.append("entries")
                steps.append(f"e{index}-{what}{'-crc-fixed' if fixed else ''}")
        if image == base:
            continue
        scope = (
            "entries"
            if set(scopes) == {"entries"}
            else ("header" if "superblock" not in scopes else "superblock")
        )
        name = f"{base_name}:random{k}:" + "+".join(steps)
        yield Case(name, image, scope, frozenset(mutated), base=base_name)
