"""The health of one mounted filesystem: poisoned device ranges, failsafe, removal, and the
state they add up to (ok -> degraded -> failsafe -> removed).

Every failure source feeds this one object: the holder's notify_failure, faults met by kernel
copies, the device watcher (badblocks, a vanished device) and log replay. It can be fed from
any thread (a lock guards each change, and readers see immutable snapshots); the daemon runs
the handling of a failure on its event loop (famfs_py.fs.failures.FailureHandler), so the
namespace is never walked while the log follower changes it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from enum import Enum

log = logging.getLogger(__name__)


class State(Enum):
    """The health ladder, worst last; each state includes the ones before it."""

    OK = "ok"
    DEGRADED = "degraded"  # some device ranges are poisoned; everything else works
    FAILSAFE = "failsafe"  # metadata is frozen (read-only); healthy files stay readable
    REMOVED = "removed"  # the device is gone; only the namespace is left


Range = tuple[int, int]  # (device offset, length)


class Health:
    def __init__(self, device: str) -> None:
        self.device = device
        self.poisoned: tuple[Range, ...] = ()  # replaced whole, never changed in place
        self.failsafe: str | None = None  # why metadata is frozen
        self.superseded: str | None = None  # another host remade the filesystem: no data
        self.removed = False
        self._lock = threading.Lock()

    # -- what failure sources report ----------------------------------------------------------
    def poison(self, offset: int, length: int) -> bool:
        """Record a bad device range; False if it was known already."""
        with self._lock:
            if (offset, length) in self.poisoned:
                return False
            self.poisoned = (*self.poisoned, (offset, length))
        return True

    def go_failsafe(self, reason: str) -> bool:
        """Freeze metadata; False if it was frozen already (the first reason stays)."""
        with self._lock:
            if self.failsafe:
                return False
            self.failsafe = reason
        log.error("%s: failsafe: %s; metadata is frozen", self.device, reason)
        return True

    def foreign(self, reason: str, *, remade: bool) -> bool:
        """Another writer changed the filesystem: metadata is frozen, and if it `remade` it,
        nothing of this one may be served any more (reads fail with EIO). True if this
        made the mount superseded just now."""
        if not remade:
            self.go_failsafe(reason)
            return False
        with self._lock:
            if self.superseded:
                return False
            self.superseded = reason
            self.failsafe = reason  # the reason that matters most
        log.error("%s: failsafe: %s", self.device, reason)
        return True

    def mark_removed(self) -> bool:
        """The device is going away; False if that was known already."""
        with self._lock:
            if self.removed:
                return False
            self.removed = True
        return True

    # -- what readers ask ---------------------------------------------------------------------
    @property
    def state(self) -> State:
        if self.removed:
            return State.REMOVED
        if self.failsafe:
            return State.FAILSAFE
        if self.poisoned:
            return State.DEGRADED
        return State.OK

    def hits(self, ranges: Iterable[Range]) -> bool:
        """Whether any of the device ranges overlaps a poisoned one."""
        poisoned = self.poisoned
        for dev, n in ranges:
            for bad, bad_len in poisoned:
                if dev < bad + bad_len and bad < dev + n:
                    return True
        return False

    def merged(self) -> list[Range]:
        """The poisoned ranges, those that touch or overlap joined, in device order: bad
        pages are recorded one by one (a truncated memory file: thousands), told in ranges."""
        out: list[Range] = []
        for offset, length in sorted(self.poisoned):
            if out and offset <= out[-1][0] + out[-1][1]:
                start, n = out[-1]
                out[-1] = (start, max(n, offset + length - start))
            else:
                out.append((offset, length))
        return out

    def summary(self) -> str:
        """One phrase for status lines: `ok`, `degraded (N poisoned ranges)`, ..."""
        state = self.state
        if state is State.DEGRADED:
            return f"degraded ({len(self.merged())} poisoned ranges)"
        return state.value
