"""Where the tier keeps what it fetches and builds, and the one call that prepares a kernel
and its initramfs: `prepare("stable")`.

The cache lives outside the source tree: $FAMFS_PY_GUEST_CACHE, else /var/cache/famfs-py-guest
for root, else $XDG_CACHE_HOME/famfs-py-guest (~/.cache/famfs-py-guest).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from guest import initramfs, kernel
from guest.machine import BootFiles

CACHE_ENV = "FAMFS_PY_GUEST_CACHE"


def cache_dir() -> Path:
    chosen = os.environ.get(CACHE_ENV)
    if chosen:
        path = Path(chosen)
    elif os.geteuid() == 0:
        path = Path("/var/cache/famfs-py-guest")
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        path = Path(base) / "famfs-py-guest"
    path.mkdir(parents=True, exist_ok=True)
    return path


def prepare(flavour: str) -> BootFiles:
    """Fetch (once) the flavour's kernel and build (once per harness change) its initramfs.
    Serialized by a lock in the cache, so concurrent test runs share one download."""
    cache = cache_dir()
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        unpacked = kernel.fetch(kernel.FLAVOURS[flavour], cache)
        return BootFiles(unpacked, initramfs.build(unpacked, cache))
