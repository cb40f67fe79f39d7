"""Seeded-pattern work shared by `creat -r` and `verify`: fill or check whole files in
chunks, through their device memory, in threads."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple, TypeVar

from famfs_py.errors import FamfsError, UsageError

T = TypeVar("T")

if TYPE_CHECKING:  # mapping loads the device layer: only when a file is filled or read
    from famfs_py.mapping import FileMemory, MountedFile

CHUNK = 16 << 20  # bytes generated or checked per step


def parse_seed(text: str) -> int:
    """A seed as upstream reads it (decimal or 0x...); 0 means none."""
    try:
        return int(text, 0)
    except ValueError:
        import argparse

        raise argparse.ArgumentTypeError(f"{text!r} is not a seed (decimal or 0x...)") from None


def check_seed(seed: int, what: str = "seed") -> None:
    if seed & 0xFFFFFFFF == 0:
        raise UsageError(
            f"{what} {seed:#x} has zero low 32 bits: upstream would seed from the clock and "
            "the data could never be verified (choose another seed)"
        )


def default_threads() -> int:
    return max(1, os.cpu_count() or 1)


class Job(NamedTuple):
    path: str
    seed: int


def _mapped(path: str, write: bool) -> FileMemory | MountedFile:
    from famfs_py.mapping import open_file_bytes

    return open_file_bytes(path, write=write)


def randomize(path: str, seed: int) -> int:
    """Fill a famfs file with the pattern for `seed`; returns its size."""
    from famfs_py.fs.pattern import fill

    with _mapped(path, write=True) as mapped:
        buf = bytearray(min(CHUNK, mapped.size))
        view = memoryview(buf)
        for offset in range(0, mapped.size, CHUNK):
            n = min(CHUNK, mapped.size - offset)
            fill(view[:n], seed, offset)
            mapped.write(offset, view[:n])
            mapped.flush(offset, n)  # other hosts read memory, not this CPU's cache
        size = mapped.size
    _invalidate(path)
    return size


def _invalidate(path: str) -> None:
    """This host's page cache may hold the old bytes: drop them."""
    from famfs_py import channel, protocol

    where = channel.locate(path)
    with channel.Channel(where.mountpoint) as chan:
        chan.call(protocol.Invalidate(where.relpath))


def verify(path: str, seed: int) -> tuple[int, int | None]:
    """(size, offset of the first byte that differs or None)."""
    from famfs_py.fs.pattern import first_mismatch

    with _mapped(path, write=False) as mapped:
        buf = bytearray(min(CHUNK, mapped.size))
        view = memoryview(buf)
        for offset in range(0, mapped.size, CHUNK):
            n = min(CHUNK, mapped.size - offset)
            mapped.invalidate(offset, n)  # another host may have written it
            mapped.readinto(offset, view[:n])
            bad = first_mismatch(view[:n], seed, offset)
            if bad is not None:
                return mapped.size, bad
        return mapped.size, None


def run_jobs(
    jobs: list[Job], threads: int, work: Callable[[Job], T]
) -> list[tuple[Job, T | Exception]]:
    """Run `work(job)` for every job, in `threads` threads (0: inline); results or the
    exception each raised, in job order."""

    def guarded(job: Job) -> T | Exception:
        try:
            return work(job)
        except (FamfsError, OSError, ValueError) as exc:
            return exc

    if threads <= 1 or len(jobs) <= 1:
        return [(job, guarded(job)) for job in jobs]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(zip(jobs, pool.map(guarded, jobs), strict=True))
