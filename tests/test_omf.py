"""The on-media format against upstream's reference images: every field, every byte."""

from __future__ import annotations

import json
import uuid
import zlib

import pytest
from helpers import REF_DIR, manifest

from famfs_py import omf

pytestmark = pytest.mark.model  # the model tier: no FUSE, in this process

IMAGES = ["A", "B", "C", "D", "E"]


def _region(image_path, offset: int, length: int) -> bytes:
    with open(image_path, "rb") as f:
        f.seek(offset)
        return f.read(length)


@pytest.fixture(scope="module")
def layout() -> dict:
    return json.loads((REF_DIR / "layout.json").read_text())


def test_struct_sizes_match_the_compiled_c_layout(layout):
    sizes = {s["struct"]: s["sizeof"] for s in layout["sizes"]}
    assert sizes["struct famfs_superblock"] == omf.SUPERBLOCK_STRUCT_SIZE
    assert sizes["struct famfs_log"] == omf.LOG_HEADER_SIZE
    assert sizes["struct famfs_log_entry"] == omf.LOG_ENTRY_SIZE
    assert sizes["struct famfs_log_file_meta"] == omf.PAYLOAD_SIZE
    assert sizes["struct famfs_log_fmap"] == omf.FMAP_SIZE
    assert sizes["struct famfs_simple_extent"] == omf.EXTENT_SIZE
    consts = layout["constants"]
    assert consts["FAMFS_SUPER_MAGIC"] == omf.SUPER_MAGIC
    assert consts["FAMFS_LOG_MAGIC"] == omf.LOG_MAGIC
    assert consts["FAMFS_CURRENT_VERSION"] == omf.CURRENT_VERSION
    assert consts["last_index_for_default_log"] == omf.log_slots(omf.DEFAULT_LOG_LEN) - 1


def test_field_offsets_match_the_compiled_c_layout(layout):
    """Pack a superblock and entries with distinct values and find each at its C offset."""
    fields = {(f["struct"], f["field"]): f["offset"] for f in layout["fields"]}
    sb = omf.Superblock.new(
        dev_size=0x1122334455, dev_name="/dev/daxA.B", system_uuid=uuid.UUID(int=7)
    )
    raw = sb.pack()
    at = lambda name: fields[("struct famfs_superblock", name)]
    assert int.from_bytes(raw[at("ts_log_len") : at("ts_log_len") + 8], "little") == sb.log_len
    assert raw[at("ts_system_uuid") : at("ts_system_uuid") + 16] == uuid.UUID(int=7).bytes
    assert int.from_bytes(raw[at("ts_daxdev.dd_size") :][:8], "little") == 0x1122334455
    assert raw[at("ts_daxdev.dd_daxdev") :].startswith(b"/dev/daxA.B\0")

    fmap = omf.SimpleFmap((omf.Extent(0x400000, 0x200000),))
    meta = omf.FileMeta(0xABCDEF, 2, 1001, 1002, 0o640, "dir/file", fmap)
    raw = omf.LogEntry.new(9, meta).pack()
    ent = lambda name: fields[("struct famfs_log_entry", name)]
    assert int.from_bytes(raw[ent("famfs_fm.fm_size") :][:8], "little") == 0xABCDEF
    assert int.from_bytes(raw[ent("famfs_fm.fm_gid") :][:4], "little") == 1002
    assert raw[ent("famfs_fm.fm_relpath") :].startswith(b"dir/file\0")
    assert int.from_bytes(raw[ent("famfs_fm.fm_fmap.se") + 8 :][:8], "little") == 0x400000
    mk = omf.LogEntry.new(3, omf.MkdirMeta(5, 6, 0o755, "d")).pack()
    assert int.from_bytes(mk[ent("famfs_md.md_mode") :][:4], "little") == 0o755
    assert mk[ent("famfs_md.md_relpath") :].startswith(b"d\0")


@pytest.mark.parametrize("name", IMAGES)
def test_superblock_parses_to_manifest_values_and_packs_back(ref_images, name):
    man = manifest(name)["superblock"]
    raw = _region(ref_images(name), 0, omf.SUPERBLOCK_STRUCT_SIZE)
    sb = omf.Superblock.unpack(raw)
    assert sb.magic == man["ts_magic"]
    assert sb.version == man["ts_version"]
    assert sb.log_offset == man["ts_log_offset"]
    assert sb.log_len == man["ts_log_len"]
    assert sb.alloc_unit == man["ts_alloc_unit"]
    assert (sb.omf_major, sb.omf_minor) == (man["ts_omf_ver_major"], man["ts_omf_ver_minor"])
    assert sb.fs_uuid.bytes.hex() == man["ts_uuid_bytes"]
    assert sb.dev_uuid.bytes.hex() == man["ts_dev_uuid_bytes"]
    assert sb.system_uuid.bytes.hex() == man["ts_system_uuid_bytes"]
    assert str(sb.system_uuid) == man["ts_system_uuid"]
    assert sb.crc == man["ts_crc"] == sb.computed_crc()
    assert sb.sb_flags == man["ts_sb_flags"]
    assert sb.dev_size == man["ts_daxdev"]["dd_size"]
    assert sb.dev_name == man["ts_daxdev"]["dd_daxdev"]
    assert sb.problems() == []
    assert sb.pack() == raw


@pytest.mark.parametrize("name", IMAGES)
def test_log_header_parses_to_manifest_values_and_packs_back(ref_images, name):
    man = manifest(name)["log"]
    raw = _region(ref_images(name), man["image_offset"], omf.LOG_HEADER_SIZE)
    hdr = omf.LogHeader.unpack(raw)
    assert hdr.magic == man["famfs_log_magic"]
    assert hdr.log_len == man["famfs_log_len"]
    assert hdr.last_index == man["famfs_log_last_index"]
    assert hdr.crc == man["famfs_log_crc"] == hdr.computed_crc()
    assert hdr.next_seqnum == man["famfs_log_next_seqnum"]
    assert hdr.next_index == man["famfs_log_next_index"]
    assert hdr.problems(man["famfs_log_len"]) == []
    assert hdr.pack() == raw


def _check_entry_fields(entry: omf.LogEntry, man: dict) -> None:
    assert entry.seqnum == man["seqnum"]
    assert entry.entry_type == man["type"]
    assert entry.crc == man["crc"]
    p = entry.payload
    assert p.relpath == man["path"]
    assert (p.uid, p.gid, p.mode) == (man["uid"], man["gid"], man["mode"])
    if man["type"] != omf.LOG_FILE:
        assert isinstance(p, omf.MkdirMeta)
        return
    assert isinstance(p, omf.FileMeta)
    assert (p.size, p.flags) == (man["size"], man["flags"])
    assert p.fmap.ext_type == man["fmap_ext_type"]
    if man["fmap_ext_type"] == omf.EXT_SIMPLE:
        expected = [(e["devindex"], e["offset"], e["len"]) for e in man["extents"]]
        assert [(e.devindex, e.offset, e.length) for e in p.fmap.extents] == expected
    else:
        (ie,) = man["interleaved_extents"]
        assert (p.fmap.nstrips, p.fmap.chunk_size) == (ie["nstrips"], ie["chunk_size"])
        expected = [(e["devindex"], e["offset"], e["len"]) for e in ie["strips"]]
        assert [(e.devindex, e.offset, e.length) for e in p.fmap.strips] == expected


@pytest.mark.parametrize("name", IMAGES)
def test_every_entry_parses_to_manifest_values_and_packs_back(ref_images, name):
    man = manifest(name)
    image = ref_images(name)
    with open(image, "rb") as f:
        for entry_man in man["entries"]:
            f.seek(entry_man["image_offset"])
            raw = f.read(omf.LOG_ENTRY_SIZE)
            entry = omf.LogEntry.unpack(raw)
            _check_entry_fields(entry, entry_man)
            assert entry.pack() == raw
            crc_ok = entry.crc == entry.computed_crc()
            assert crc_ok == (entry_man["famfs_validate_log_entry_errors"] == 0)


def test_corrupt_entry_of_image_e_is_a_crc_failure_at_index_3(ref_images):
    man = manifest("E")
    bad = []
    with open(ref_images("E"), "rb") as f:
        for entry_man in man["entries"]:
            f.seek(entry_man["image_offset"])
            entry = omf.LogEntry.unpack(f.read(omf.LOG_ENTRY_SIZE))
            problems = omf.entry_problems(entry, entry_man["index"], 4 << 30, omf.ALLOC_UNIT)
            if problems:
                bad.append((entry_man["index"], problems))
    assert len(bad) == 1
    index, problems = bad[0]
    assert index == man["corruption"]["entry_index"] == 3
    assert any("crc" in p for p in problems)


def test_packing_what_mkfs_writes_equals_image_a(ref_images):
    man = manifest("A")["superblock"]
    sb = omf.Superblock.new(
        dev_size=man["ts_daxdev"]["dd_size"],
        dev_name=man["ts_daxdev"]["dd_daxdev"],
        system_uuid=uuid.UUID(man["ts_system_uuid"]),
        fs_uuid=uuid.UUID(man["ts_uuid"]),
        dev_uuid=uuid.UUID(man["ts_dev_uuid"]),
    )
    image = ref_images("A")
    assert sb.pack() == _region(image, 0, omf.SUPERBLOCK_STRUCT_SIZE)
    assert omf.LogHeader.new().pack() == _region(image, omf.LOG_OFFSET, omf.LOG_HEADER_SIZE)


def test_unknown_entry_type_is_reported_not_fatal():
    raw = bytearray(omf.LogEntry.new(0, omf.MkdirMeta(0, 0, 0o755, "d")).pack())
    raw[8:12] = (77).to_bytes(4, "little")
    raw[536:544] = zlib.crc32(bytes(raw[:536])).to_bytes(8, "little")
    entry = omf.LogEntry.unpack(bytes(raw))
    assert isinstance(entry.payload, omf.RawPayload)
    assert entry.entry_type == 77
    assert entry.pack() == bytes(raw)
    assert any("unknown entry type 77" in p for p in omf.entry_problems(entry, 0, 1 << 32, 1))


def test_unknown_fmap_type_and_version_are_reported():
    fmap_raw = (9).to_bytes(4, "little").ljust(omf.FMAP_SIZE, b"\0")
    meta = omf.FileMeta(4096, 2, 0, 0, 0o644, "f", omf.unpack_fmap(fmap_raw))
    assert isinstance(meta.fmap, omf.UnknownFmap)
    entry = omf.LogEntry.new(0, meta)
    assert any("unknown or malformed fmap" in p for p in omf.entry_problems(entry, 0, 1 << 32, 1))
    sb = omf.Superblock.new(dev_size=1 << 32, dev_name="x", system_uuid=uuid.uuid4())
    newer = omf.Superblock.unpack(sb.pack())
    from dataclasses import replace

    newer = replace(newer, version=49)
    newer = replace(newer, crc=newer.computed_crc())
    assert any("version 49" in p for p in newer.problems())


@pytest.mark.parametrize(
    "path,ok",
    [
        ("a/b", True),
        ("", False),
        ("/abs", False),
        ("a/../b", False),
        ("..", False),
        ("a//b", False),
        ("x" * 79, True),
        ("x" * 80, False),
        ("a\0b", False),
    ],
)
def test_path_rules(path, ok):
    assert (omf.path_problem(path) is None) == ok


def test_truncated_structures_raise_omf_error():
    with pytest.raises(omf.OmfError):
        omf.Superblock.unpack(b"\0" * 10)
    with pytest.raises(omf.OmfError):
        omf.LogHeader.unpack(b"\0" * 47)
    with pytest.raises(omf.OmfError):
        omf.LogEntry.unpack(b"\0" * 543)


def test_entry_crc_covers_the_bytes_as_read_not_as_decoded():
    raw = bytearray(omf.LogEntry.new(0, omf.MkdirMeta(0, 0, 0o755, "d")).pack())
    # junk after the path's NUL, CRC-correct: a valid entry (upstream checks the raw bytes)
    raw[16 + 12 + 2 : 16 + 12 + 10] = b"junkjunk"
    raw[536:544] = zlib.crc32(bytes(raw[:536])).to_bytes(8, "little")
    entry = omf.LogEntry.unpack(bytes(raw))
    assert entry.relpath == "d"
    assert omf.entry_problems(entry, 0, 1 << 32, omf.ALLOC_UNIT) == []
    # a flipped bit there with the CRC left stale: corrupt, although decoding drops it
    raw[16 + 12 + 4] ^= 1
    entry = omf.LogEntry.unpack(bytes(raw))
    assert any("crc" in p for p in omf.entry_problems(entry, 0, 1 << 32, omf.ALLOC_UNIT))
