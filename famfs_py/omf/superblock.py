"""The superblock and the log header (with the counters an append rewrites)."""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass, replace

from famfs_py.omf.layout import (
    _LOG_HDR,
    _LOG_HDR_CRC_END,
    _SB,
    _SB_CRC_END,
    ALLOC_UNIT,
    ALLOC_UNITS,
    CURRENT_VERSION,
    DEFAULT_LOG_LEN,
    DEVNAME_LEN,
    LOG_HEADER_SIZE,
    LOG_MAGIC,
    LOG_OFFSET,
    OMF_VER_MAJOR,
    OMF_VER_MINOR,
    SUPER_MAGIC,
    SUPERBLOCK_STRUCT_SIZE,
    OmfError,
    _crc,
    _cstring,
    _fixed,
    log_slots,
)


# --- superblock -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Superblock:
    magic: int
    version: int
    log_offset: int
    log_len: int
    alloc_unit: int
    omf_major: int
    omf_minor: int
    fs_uuid: uuid.UUID
    dev_uuid: uuid.UUID
    system_uuid: uuid.UUID
    crc: int
    sb_flags: int
    dev_size: int
    dd_uuid: uuid.UUID
    dev_name: str

    @classmethod
    def new(
        cls,
        *,
        dev_size: int,
        dev_name: str,
        system_uuid: uuid.UUID,
        log_len: int = DEFAULT_LOG_LEN,
        alloc_unit: int = ALLOC_UNIT,
        fs_uuid: uuid.UUID | None = None,
        dev_uuid: uuid.UUID | None = None,
    ) -> Superblock:
        """A fresh superblock as mkfs writes it, with its CRC computed."""
        if alloc_unit not in ALLOC_UNITS:
            raise OmfError(f"allocation unit {alloc_unit:#x} is neither 2 MiB nor 4 KiB")
        sb = cls(
            magic=SUPER_MAGIC,
            version=CURRENT_VERSION,
            log_offset=LOG_OFFSET,
            log_len=log_len,
            alloc_unit=alloc_unit,
            omf_major=OMF_VER_MAJOR,
            omf_minor=OMF_VER_MINOR,
            fs_uuid=fs_uuid or uuid.uuid4(),
            dev_uuid=dev_uuid or uuid.uuid4(),
            system_uuid=system_uuid,
            crc=0,
            sb_flags=0,
            dev_size=dev_size,
            dd_uuid=uuid.UUID(int=0),
            dev_name=dev_name[: DEVNAME_LEN - 1],
        )
        return replace(sb, crc=sb.computed_crc())

    @classmethod
    def unpack(cls, buf: bytes | memoryview) -> Superblock:
        if len(buf) < SUPERBLOCK_STRUCT_SIZE:
            raise OmfError(f"superblock needs {SUPERBLOCK_STRUCT_SIZE} bytes, got {len(buf)}")
        f = _SB.unpack_from(buf)
        return cls(
            magic=f[0],
            version=f[1],
            log_offset=f[2],
            log_len=f[3],
            alloc_unit=f[4],
            omf_major=f[5],
            omf_minor=f[6],
            fs_uuid=uuid.UUID(bytes=f[7]),
            dev_uuid=uuid.UUID(bytes=f[8]),
            system_uuid=uuid.UUID(bytes=f[9]),
            crc=f[10],
            sb_flags=f[11],
            # f[12] is padding
            dev_size=f[13],
            dd_uuid=uuid.UUID(bytes=f[14]),
            dev_name=_cstring(f[15]),
        )

    def pack(self) -> bytes:
        return _SB.pack(
            self.magic,
            self.version,
            self.log_offset,
            self.log_len,
            self.alloc_unit,
            self.omf_major,
            self.omf_minor,
            self.fs_uuid.bytes,
            self.dev_uuid.bytes,
            self.system_uuid.bytes,
            self.crc,
            self.sb_flags,
            0,
            self.dev_size,
            self.dd_uuid.bytes,
            _fixed(self.dev_name, DEVNAME_LEN),
        )

    def computed_crc(self) -> int:
        return _crc(self.pack()[:_SB_CRC_END])

    def problems(self) -> list[str]:
        """Why this superblock is not a valid famfs superblock (empty list: valid)."""
        if self.magic != SUPER_MAGIC:
            return [f"bad superblock magic {self.magic:#x} (expected {SUPER_MAGIC:#x})"]
        out = []
        if self.crc != self.computed_crc():
            out.append(f"superblock crc {self.crc:#x} != computed {self.computed_crc():#x}")
        if self.alloc_unit not in ALLOC_UNITS:
            out.append(f"bad allocation unit {self.alloc_unit:#x}")
        if self.version != CURRENT_VERSION:
            out.append(f"superblock version {self.version} (this famfs reads {CURRENT_VERSION})")
        if self.log_offset != LOG_OFFSET:
            out.append(f"log offset {self.log_offset:#x} (expected {LOG_OFFSET:#x})")
        if not valid_log_len(self.log_len):
            out.append(f"log length {self.log_len:#x} is not a power of two >= 8 MiB")
        elif self.dev_size and self.log_offset + self.log_len > self.dev_size:
            out.append(f"log ends at {self.log_offset + self.log_len:#x}, past the device size")
        return out


def valid_log_len(log_len: int) -> bool:
    return log_len >= DEFAULT_LOG_LEN and log_len & (log_len - 1) == 0


# --- log header --------------------------------------------------------------------------------
@dataclass(frozen=True)
class LogHeader:
    magic: int
    log_len: int
    last_index: int
    crc: int
    next_seqnum: int
    next_index: int

    @classmethod
    def new(cls, log_len: int = DEFAULT_LOG_LEN) -> LogHeader:
        hdr = cls(LOG_MAGIC, log_len, log_slots(log_len) - 1, 0, 0, 0)
        return replace(hdr, crc=hdr.computed_crc())

    @classmethod
    def unpack(cls, buf: bytes | memoryview) -> LogHeader:
        if len(buf) < LOG_HEADER_SIZE:
            raise OmfError(f"log header needs {LOG_HEADER_SIZE} bytes, got {len(buf)}")
        return cls(*_LOG_HDR.unpack_from(buf))

    def pack(self) -> bytes:
        return _LOG_HDR.pack(
            self.magic,
            self.log_len,
            self.last_index,
            self.crc,
            self.next_seqnum,
            self.next_index,
        )

    def computed_crc(self) -> int:
        return _crc(self.pack()[:_LOG_HDR_CRC_END])

    @property
    def slots(self) -> int:
        return self.last_index + 1

    @property
    def full(self) -> bool:
        return self.next_index > self.last_index

    def problems(self, sb_log_len: int | None = None) -> list[str]:
        if self.magic != LOG_MAGIC:
            return [f"bad log magic {self.magic:#x} (expected {LOG_MAGIC:#x})"]
        out = []
        if self.crc != self.computed_crc():
            out.append(f"log header crc {self.crc:#x} != computed {self.computed_crc():#x}")
        if sb_log_len is not None and self.log_len != sb_log_len:
            out.append(f"log length {self.log_len:#x} != superblock's {sb_log_len:#x}")
        if self.last_index != log_slots(self.log_len) - 1:
            out.append(
                f"log last_index {self.last_index} != {log_slots(self.log_len) - 1} "
                f"for a log of {self.log_len:#x} bytes"
            )
        if self.next_index > self.last_index + 1:
            out.append(f"log next_index {self.next_index} is past the last slot")
        return out


# next_seqnum and next_index are the only mutable header fields: they are rewritten together
COUNTERS_OFFSET = 32
_COUNTERS = struct.Struct("<QQ")


def pack_counters(next_seqnum: int, next_index: int) -> bytes:
    return _COUNTERS.pack(next_seqnum, next_index)
