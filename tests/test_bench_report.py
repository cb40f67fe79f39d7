"""The benchmark's judging of targets (bench.model, bench.report): a quick run judges ratio
targets and targets that do not depend on the run's sizes, shows the others as set for the
full run and not judged; a full run judges them all. No benchmark is run: results are made
up here."""

from __future__ import annotations

import dataclasses
import importlib
import sys
from types import ModuleType

import pytest
from helpers import REPO

pytestmark = pytest.mark.model  # in this process: no FUSE, no root, no measurement


def _bench(name: str) -> ModuleType:
    """bench.<name> from this checkout (bench/ is not installed; appended, not prepended, so
    that an installed famfs_py still wins)."""
    if not (REPO / "bench" / "__init__.py").is_file():
        pytest.skip("no checkout with bench/")
    if str(REPO) not in sys.path:
        sys.path.append(str(REPO))
    return importlib.import_module(f"bench.{name}")


model = _bench("model")
report = _bench("report")

QUICK_SIZES = {"cp_files": (100, 500), "log256_entries": (1_000, 444_102)}


def _target(text: str) -> object:
    return next(t for t in model.TARGETS if t.text == text)


CP_R = "batched creation ≤ 2 ms/file (cp -r)"
MOUNT_256 = "mount ≤ 10 s, 256 MiB log"
CREAT = "single creat ≤ 60 ms"
COLD_AUTO_TMPFS = "seq read ≥ 0.5× tmpfs (-c auto, cold)"


def _results() -> object:
    """Numbers that miss four targets: cp -r and the 256 MiB mount (sized by the run),
    creat (not sized) and a ratio."""
    results = model.Results()
    results.add("create_batch", model.FAMFS_CP, 3.5)  # 2 ms/file missed
    results.add("mount_256m", model.FAMFS_AUTO, 12.0)  # 10 s missed
    results.add("creat_single", model.FAMFS_CREAT, 75.0)  # 60 ms missed
    results.add("seq_read_cold", model.FAMFS_AUTO, 1.0)
    results.add("seq_read_cold", model.TMPFS, 4.0)  # 0.25× tmpfs: 0.5× missed
    return results


def test_a_quick_run_does_not_judge_targets_set_for_the_full_runs_sizes():
    results = _results()
    for text in (CP_R, MOUNT_256):
        status, value = model.target_status(results, _target(text), "quick")
        assert status == model.NOT_JUDGED, text
        assert value is not None  # still measured and shown
    assert model.target_status(results, _target(CREAT), "quick") == (model.MISSED, 75.0)
    assert model.target_status(results, _target(COLD_AUTO_TMPFS), "quick") == (model.MISSED, 0.25)


def test_a_full_run_judges_every_target():
    results = _results()
    for text in (CP_R, MOUNT_256, CREAT, COLD_AUTO_TMPFS):
        status, _ = model.target_status(results, _target(text), "full")
        assert status == model.MISSED, text
    results = model.Results()
    results.add("create_batch", model.FAMFS_CP, 0.5)
    assert model.target_status(results, _target(CP_R), "full") == (model.MET, 0.5)
    assert model.target_status(results, _target(CP_R), "quick") == (model.NOT_JUDGED, 0.5)


def test_the_quick_table_says_which_run_a_target_belongs_to():
    table = report.targets_table(_results(), "quick", QUICK_SIZES)
    lines = {t: next(line for line in table.splitlines() if t in line) for t in (CP_R, CREAT)}
    assert "MISSED" not in lines[CP_R]
    assert lines[CP_R].split()[:3] == ["NOT", "JUDGED", "full"]
    assert "target for the full run: 500 (this run: 100) files per batch" in lines[CP_R]
    assert "quick run: not judged" in lines[CP_R]
    assert lines[CREAT].split()[:2] == ["MISSED", "any"]
    assert table.count("MISSED") == 2  # creat and the ratio; neither sized target
    full = report.targets_table(
        _results(), "full", {k: (v[1], v[1]) for k, v in QUICK_SIZES.items()}
    )
    assert full.count("MISSED") == 4 and "not judged" not in full
    markdown = report.targets_markdown(_results(), "quick", QUICK_SIZES)
    assert f"| {CP_R} | full | not judged |" in markdown
    assert f"| {CREAT} | any | missed |" in markdown


def test_sized_targets_name_sizes_a_quick_run_changes():
    """Every size a target depends on is a run size the quick run makes smaller; every
    absolute per-file or per-log target is sized (its cost includes process start)."""
    rounds = _bench("rounds")
    quick, full = rounds.Config.make(True), rounds.Config.make(False)
    fields = {f.name for f in dataclasses.fields(rounds.Config)}
    sized = [t for t in model.TARGETS if t.sized_by]
    assert sized
    for target in sized:
        for name in target.sized_by:
            assert name in fields and name in rounds.SIZE_FIELDS, name
            assert getattr(quick, name) != getattr(full, name), name
    assert {t.text for t in sized} >= {CP_R, MOUNT_256}
    assert all(t.ref is None for t in sized)  # a ratio to the same run's baseline is fair


def test_pages_table_gives_both_page_sizes_as_ratios_to_the_same_baseline():
    results = model.Results()
    results.add("seq_read_cold", model.TMPFS, 4.0)
    results.add("seq_read_cold", model.FAMFS_AUTO_4K, 0.5)
    results.add("seq_read_cold", model.FAMFS_AUTO, 2.0)
    results.add("mapped_read", model.MEMCPY_PROCESS, 10.0)
    results.add("mapped_read", model.FAMFS_OPEN_MAPPED_4K, 5.0)
    results.add("mapped_read", model.FAMFS_OPEN_MAPPED, 9.0)
    table = report.pages_table(results)
    cold = next(line for line in table.splitlines() if "read cold, -c auto" in line)
    assert "0.12× tmpfs" in cold and "0.50× tmpfs" in cold and cold.endswith("4.00×")
    copy = next(line for line in table.splitlines() if "open_mapped copy, faulted in" in line)
    assert "0.50× memcpy" in copy and "0.90× memcpy" in copy and copy.endswith("1.80×")
