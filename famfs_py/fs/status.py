"""What a mounted filesystem says of itself: `FsStatus`, the part of `famfs-py status` the
model knows (the daemon adds its own facts: famfs_py.replies.StatusReply)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from famfs_py.fs.identity import Role


@dataclass(frozen=True, kw_only=True)
class Flushing:
    """The CPU cache flushing in force (famfs_py.dax.cache.Policy) and what this process did
    of it."""

    enabled: bool
    reason: str
    # only when enabled (omit_none: left out of a reply when None, famfs_py.replies)
    flush_instruction: str | None = field(default=None, metadata={"omit_none": True})
    invalidate_instruction: str | None = field(default=None, metadata={"omit_none": True})
    available: list[str] = field(default_factory=list)
    counters: dict[str, dict[str, int]] = field(default_factory=dict)

    @classmethod
    def of(cls, described: dict[str, Any]) -> Flushing:
        """From `Policy.describe()`."""
        return cls(**described)


@dataclass(frozen=True, kw_only=True)
class LogUse:
    used: int
    slots: int


@dataclass(frozen=True, kw_only=True)
class Capacity:
    size: int
    allocated: int
    free: int


@dataclass(frozen=True, kw_only=True)
class PoisonedRange:
    """A bad device range and the files whose memory it hits."""

    offset: int
    length: int
    files: list[str] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class FsStatus:
    """A mounted filesystem's role, device, claim, log, capacity, flushing and health."""

    role: Role
    device: str
    device_mode: str  # a DaxMode, or "removed"
    device_align: int
    device_size: int
    numa_node: int | None
    emulated: bool
    cache_flush: Flushing | None  # None: from a daemon that does not say
    holder_pid: int | None
    fs_uuid: str
    master_system_uuid: str
    this_system_uuid: str
    files: int
    directories: int
    log: LogUse
    capacity: Capacity
    writable_data: bool
    health: str  # a famfs_py.fs.health.State value
    failsafe: str | None
    removed: bool
    superseded: str | None = None  # another host remade the filesystem (then also failsafe)
    poisoned: list[PoisonedRange] = field(default_factory=list)
