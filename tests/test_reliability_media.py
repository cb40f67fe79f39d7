"""Reliability campaign, bad media: corrupt superblocks, log headers, entries and devices end
in a clear error or a correct partial result, never a traceback, a hang, a dead daemon, a
write by a read-only tool or a read outside the device.

Most cases run in-process through the library (tests/reliability/media.py checks each);
a sample runs through the real CLI and real mounts. The default run checks about six
hundred cases; `-m slow` checks more than ten thousand.
"""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from helpers import MASTER_UUID, Host, assert_no_traceback, is_mounted
from reliability import corrupt, figures, media

from famfs_py.dax import emulated, holder
from famfs_py.errors import FsError
from famfs_py.fs import changes
from famfs_py.fs.filesystem import Famfs

DEFAULT_ENTRIES = [1, 5, 6]  # a directory, an interleaved file, a two-extent file
WALK_SECONDS = 30.0


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Iterator[media.MediaBench]:
    root = tmp_path_factory.mktemp("media-bench")
    made = media.MediaBench(root / "master", root / "client")
    with made.watching():
        yield made
    made.close()
    for device in (made.client, made.master):
        emulated.remove(device)


@pytest.fixture(scope="module")
def bases(ref_images) -> dict[str, corrupt.Image]:
    out = {"tree": corrupt.tree_base(), "empty": corrupt.empty_base()}
    for name in "BCDE":
        out[name] = corrupt.image_from_device(ref_images(name))
    return out


def _run(bench: media.MediaBench, bases: dict, cases: Iterable[corrupt.Case], label: str) -> int:
    """Examine every case; fail with the first failures, record the figures."""
    pristine: dict[str, dict] = {}
    failures: list[media.Outcome] = []
    count = 0
    started = time.monotonic()
    for case in cases:
        if case.base not in pristine:
            pristine[case.base] = media.pristine_views(bench, case.base, bases[case.base])
        outcome = bench.examine(case, pristine[case.base])
        count += 1
        if outcome.problems:
            failures.append(outcome)
    seconds = time.monotonic() - started
    figures.add(f"corrupt images, {label}: cases", count)
    figures.add(f"corrupt images, {label}: seconds", seconds)
    figures.add(f"corrupt images, {label}: failing", len(failures))
    report = "\n".join(
        f"{o.name}: fsck {o.fsck}; mount {o.mount}; mkfs {o.mkfs}\n  " + "\n  ".join(o.problems)
        for o in failures[:10]
    )
    assert not failures, f"{len(failures)} of {count} cases failed:\n{report}"
    return count


def default_cases(bases: dict) -> Iterator[corrupt.Case]:
    yield from corrupt.targeted_cases("tree", bases["tree"], entries=DEFAULT_ENTRIES)
    yield from corrupt.random_cases("tree", bases["tree"], 60, seed=7)


def test_a_few_hundred_corrupt_images_end_in_a_clear_error_or_a_correct_partial_result(
    bench, bases
):
    count = _run(bench, bases, default_cases(bases), "in-process, default run")
    assert count >= 400


@pytest.mark.slow
def test_ten_thousand_corrupt_images_end_in_a_clear_error_or_a_correct_partial_result(bench, bases):
    def cases() -> Iterator[corrupt.Case]:
        for name in ("tree", "empty", "B", "C", "E"):
            yield from corrupt.targeted_cases(name, bases[name])
        # 2,020 entries: every case replays them several times, so a sample
        d_cases = corrupt.targeted_cases("D", bases["D"], entries=[0, 1, 1000, 2019])
        yield from (c for k, c in enumerate(d_cases) if k % 10 == 0)
        for name, count in (("tree", 2400), ("B", 1600), ("C", 1600), ("E", 1200), ("empty", 400)):
            yield from corrupt.random_cases(name, bases[name], count, seed=11)

    count = _run(bench, bases, cases(), "in-process, long run")
    assert count >= 10_000


# -- a sample through the real CLI and real mounts ----------------------------------------------
CLI_SAMPLE = [
    "tree:sb.magic.flip",
    "tree:sb.dev_size=0x0",
    "tree:sb.log_len=0x1000000",
    "tree:hdr.next_index=committed+1",
    "tree:hdr.next_index=0x3c3c",  # every slot "committed": fsck must not crawl
    "tree:hdr.crc=0x0",
    "tree:device.size=0x400000",
    "tree:device.memory=0x201000",
    "tree:e1.flip",
    "tree:e1.relpath=b'..'",
    "tree:e5.chunk=0x0",
    "tree:e6.ext0.offset=0x100000000",
    "tree:log-cut-at5",
    "tree:uncommitted-junk",
    "tree:append-file-then-mkdir-same-path",
    "tree:append-mkdir-over-file5",
    "tree:small-au-million-chunk-file",
]
CLI_MOUNTED = {
    "tree:sb.dev_size=0x0",
    "tree:hdr.next_index=0x3c3c",
    "tree:hdr.next_index=committed+1",
    "tree:e1.relpath=b'..'",
    "tree:e5.chunk=0x0",
    "tree:log-cut-at5",
    "tree:append-file-then-mkdir-same-path",
    "tree:small-au-million-chunk-file",
}


def _pick(cases: Iterable[corrupt.Case], prefixes: list[str]) -> list[corrupt.Case]:
    """The first case whose name starts with each prefix."""
    found: dict[str, corrupt.Case] = {}
    for case in cases:
        for prefix in prefixes:
            if prefix not in found and case.name.startswith(prefix):
                found[prefix] = case
    missing = set(prefixes) - set(found)
    assert not missing, f"no case named like {missing}"
    return [found[p] for p in prefixes]


def _tree_through_the_mount(mp: Path, out: dict) -> None:
    """`ls -lR` and `head -c 4096` of everything, as a user would (in a thread: a hung
    mount must not hang the test)."""
    for dirpath, dirnames, filenames in os.walk(mp):
        if Path(dirpath) == mp and ".meta" in dirnames:
            dirnames.remove(".meta")
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = os.lstat(path)
            rel = str(path.relative_to(mp))
            out[rel] = (stat.S_ISDIR(st.st_mode), st.st_size, stat.S_IMODE(st.st_mode), st.st_ino)
            if stat.S_ISREG(st.st_mode):
                try:
                    with open(path, "rb") as f:
                        out[rel + "@data"] = f.read(4096)[:64]
                except OSError as exc:
                    out[rel + "@data"] = exc.errno


def _expected_tree(bench: media.MediaBench, image: corrupt.Image) -> tuple[dict, dict] | None:
    """What the master's mount must show (the in-process replay of the same device), and
    the first bytes of the files whose data the image holds."""
    try:
        fs = Famfs.open(bench.master, this_host=corrupt.MASTER)
    except FsError:
        return None
    pokes = dict(image.data)
    try:
        ns = fs.namespace
        tree = {}
        data = {}
        for inode in ns.inodes.values():
            if inode.entry_index is None:
                continue
            path = ns.path_of(inode.ino)
            tree[path] = (inode.is_dir, inode.size, inode.mode, inode.ino)
            if inode.filemap is not None and inode.filemap.size:
                first = next(inode.filemap.ranges(0, 1))[0]
                poke = pokes.get(first)
                if poke is not None and first + 64 <= image.memory:
                    data[path] = poke.ljust(64, b"\0")[: min(64, inode.size)]
        return tree, data
    finally:
        fs.close()


# famfs-py's own change announcements (issue 23), formatted by the master's mount
ANNOUNCEMENTS = range(changes.AREA, changes.AREA + changes.AREA_SIZE)


def _cli_case(bench: media.MediaBench, host: Host, case: corrupt.Case, mounts, mount: bool) -> None:
    bench.load(case.image)
    before = media.fingerprint(bench.backing)
    fsck = host.cli("fsck", "--json", "dax0.0", timeout=20)
    assert_no_traceback(fsck)
    report = json.loads(fsck.stdout)
    assert fsck.returncode == min(report["problems"], 99), fsck.out
    assert media.fingerprint(bench.backing) == before, f"{case.name}: fsck wrote"
    if case.holds_superblock:
        refused = host.cli("dax0.0", prog="mkfs.famfs-py")
        assert refused.returncode == 2, f"{case.name}: {refused.out}"
        assert_no_traceback(refused)
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        assert media.fingerprint(bench.backing) == before, f"{case.name}: a refused mkfs wrote"
    figures.add("corrupt images, real CLI: fsck and mkfs runs")
    if not mount:
        return
    expected = _expected_tree(bench, case.image)
    untouched = media.fingerprint(bench.backing, skip=ANNOUNCEMENTS)
    mp = mounts.tmp_path / f"mnt-{len(mounts.made)}"
    mounts.mount(host, mp, expect_ok=False)
    result = mounts.last
    assert_no_traceback(result)
    if expected is None:
        assert result.returncode == 1, f"{case.name}: {result.out}"
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert not is_mounted(mp) and holder.holder_info(bench.master) is None
        figures.add("corrupt images, real CLI: mounts refused cleanly")
        return
    assert result.returncode == 0, f"{case.name}: {result.out}\n{mounts.logs()}"
    seen: dict = {}
    walker = threading.Thread(target=_tree_through_the_mount, args=(mp, seen), daemon=True)
    walker.start()
    walker.join(WALK_SECONDS)
    assert not walker.is_alive(), f"{case.name}: listing or reading the mount hung"
    tree, data = expected
    shown = {k: v for k, v in seen.items() if not k.endswith("@data")}
    assert shown == tree, f"{case.name}: the mount shows {shown}, the log says {tree}"
    for path, first in data.items():
        assert seen[path + "@data"] == first, f"{case.name}: {path} reads {seen[path + '@data']!r}"
    answer = host.cli("status", "--json", mp)  # the daemon still answers
    assert_no_traceback(answer)
    assert answer.returncode in (0, 3), answer.out  # 3: failsafe or degraded
    status = json.loads(answer.stdout)
    logplay = host.cli("logplay", "-v", mp)
    assert_no_traceback(logplay)
    assert logplay.stdout.startswith("famfs_logplay:"), logplay.out
    assert logplay.returncode == min(report["problems"] - report["collisions"], 127) or (
        status["failsafe"] is not None
    ), f"{case.name}: logplay {logplay.out} vs fsck {report}"
    host.ok("umount", mp)
    # The master's mount formats its change announcements (famfs-py's own, in the superblock
    # region past the superblock, where upstream never looks); nothing else may change.
    after = media.fingerprint(bench.backing, skip=ANNOUNCEMENTS)
    assert after == untouched, f"{case.name}: the mount wrote"
    figures.add("corrupt images, real CLI: mounts listed and read")


def _cli_sample(bench, bases, mounts, names: list[str], mounted: set[str], extra=()) -> None:
    host = Host(bench.master.sysfs.root.parent, MASTER_UUID)
    cases = _pick(default_cases(bases), names) + list(extra)
    for case in cases:
        _cli_case(bench, host, case, mounts, case.name in mounted)


def test_a_sample_of_corrupt_images_through_the_real_fsck_mkfs_mount_and_logplay(
    bench, bases, mounts
):
    _cli_sample(bench, bases, mounts, CLI_SAMPLE, CLI_MOUNTED)


@pytest.mark.slow
def test_a_larger_sample_of_corrupt_images_through_the_real_cli(bench, bases, mounts):
    every = [c for c in default_cases(bases)]
    extra = every[::8]
    host = Host(bench.master.sysfs.root.parent, MASTER_UUID)
    for k, case in enumerate(extra):
        _cli_case(bench, host, case, mounts, mount=k % 2 == 0)
