"""Fmaps: a file's extents (simple) or strips (interleaved), packed as upstream does."""

from __future__ import annotations

from dataclasses import dataclass

from famfs_py.omf.layout import (
    _EXTENT,
    _FMAP_HEAD,
    _INTERLEAVE_HEAD,
    EXT_INTERLEAVE,
    EXT_SIMPLE,
    EXTENT_SIZE,
    FMAP_SIZE,
    MAX_INTERLEAVED_EXTENTS,
    MAX_SIMPLE_EXTENTS,
)


# --- fmaps --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Extent:
    offset: int
    length: int
    devindex: int = 0


@dataclass(frozen=True)
class SimpleFmap:
    extents: tuple[Extent, ...]

    ext_type = EXT_SIMPLE


@dataclass(frozen=True)
class InterleavedFmap:
    nstrips: int
    chunk_size: int
    strips: tuple[Extent, ...]
    niext: int = 1

    ext_type = EXT_INTERLEAVE


@dataclass(frozen=True)
class UnknownFmap:
    """An fmap whose extent type or counts are not understood; kept raw for round trips."""

    ext_type: int
    raw: bytes


Fmap = SimpleFmap | InterleavedFmap | UnknownFmap


def _unpack_extents(buf: bytes | memoryview, offset: int, count: int) -> tuple[Extent, ...]:
    out = []
    for i in range(count):
        devindex, off, length = _EXTENT.unpack_from(buf, offset + i * EXTENT_SIZE)
        out.append(Extent(off, length, devindex))
    return tuple(out)


def _pack_extents(extents: tuple[Extent, ...]) -> bytes:
    body = b"".join(_EXTENT.pack(e.devindex, e.offset, e.length) for e in extents)
    return body.ljust(MAX_SIMPLE_EXTENTS * EXTENT_SIZE, b"\0")


def unpack_fmap(buf: bytes | memoryview) -> Fmap:
    ext_type, count = _FMAP_HEAD.unpack_from(buf)
    head = _FMAP_HEAD.size
    if ext_type == EXT_SIMPLE and count <= MAX_SIMPLE_EXTENTS:
        return SimpleFmap(_unpack_extents(buf, head, count))
    if ext_type == EXT_INTERLEAVE and count == MAX_INTERLEAVED_EXTENTS:
        nstrips, chunk = _INTERLEAVE_HEAD.unpack_from(buf, head)
        if nstrips <= MAX_SIMPLE_EXTENTS:
            strips = _unpack_extents(buf, head + _INTERLEAVE_HEAD.size, nstrips)
            return InterleavedFmap(nstrips, chunk, strips, count)
    return UnknownFmap(ext_type, bytes(buf[:FMAP_SIZE]))


def pack_fmap(fmap: Fmap) -> bytes:
    if isinstance(fmap, UnknownFmap):
        return fmap.raw
    if isinstance(fmap, SimpleFmap):
        body = _FMAP_HEAD.pack(EXT_SIMPLE, len(fmap.extents)) + _pack_extents(fmap.extents)
    else:
        body = (
            _FMAP_HEAD.pack(EXT_INTERLEAVE, fmap.niext)
            + _INTERLEAVE_HEAD.pack(fmap.nstrips, fmap.chunk_size)
            + _pack_extents(fmap.strips)
        )
    return body.ljust(FMAP_SIZE, b"\0")


def fmap_extents(fmap: Fmap) -> tuple[Extent, ...]:
    """Every device range the fmap occupies (extents, or strips)."""
    if isinstance(fmap, SimpleFmap):
        return fmap.extents
    if isinstance(fmap, InterleavedFmap):
        return fmap.strips
    return ()
