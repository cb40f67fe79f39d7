"""famfs-py: a userspace famfs (shared DAX memory as files) on FUSE."""

from __future__ import annotations

__version__ = "0.1.0"
