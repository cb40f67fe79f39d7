"""Turn the samples into the printed tables (every measurement, 4 KiB against 2 MiB pages,
the targets), bench/results/latest.json (one row per case, system and reference), a
Markdown table for the README, and the PNG chart.

Targets are judged by the run's mode: a quick run judges ratio targets and absolute targets
that do not depend on the run's sizes; one set for the full run's sizes is shown with its
value and "not judged" (model.judged_in)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import model as m
from .model import CASES, PAGE_PAIRS, TARGETS, Results, Target, target_status

Sizes = Mapping[str, tuple[int, int]]  # run size field -> (this run's value, the full run's)


def _fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if value == 0:
        return "0"
    digits = max(0, 2 - math.floor(math.log10(abs(value))))
    return f"{value:,.{min(digits, 3)}f}"


def _ratios(results: Results, case: m.Case, system: str) -> list[tuple[str, float]]:
    out = []
    for ref in case.compare.get(system, ()):
        ratio = results.ratio(case.name, system, ref)
        if ratio is not None:
            out.append((ref, ratio))
    return out


def rows(results: Results, mode: str) -> list[dict[str, Any]]:
    """The JSON rows: case, system, value (median), unit, ratio_to, ratio, and details."""
    out: list[dict[str, Any]] = []
    for case in CASES:
        for system in results.systems(case.name):
            base: dict[str, Any] = {
                "case": case.name,
                "system": system,
                "value": None,
                "unit": case.unit,
                "ratio_to": None,
                "ratio": None,
                "title": case.title,
                "higher_is_better": case.higher_is_better,
                "mode": mode,
            }
            note = results.notes.get((case.name, system))
            if note:
                base["note"] = note
            skipped = results.skipped.get((case.name, system))
            summary = results.summary(case.name, system)
            if summary is None:
                out.append({**base, "skipped": skipped or "not measured"})
                continue
            base.update(
                value=summary.median,
                min=summary.low,
                max=summary.high,
                n=summary.count,
                samples=results.samples[(case.name, system)],
            )
            ratios = _ratios(results, case, system)
            if not ratios:
                out.append(base)
            for ref, ratio in ratios:
                out.append({**base, "ratio_to": ref, "ratio": ratio})
    return out


def text_table(results: Results) -> str:
    lines = []
    width = max(len(s) for c in CASES for s in results.systems(c.name)) if results.samples else 30
    for case in CASES:
        systems = results.systems(case.name)
        if not systems:
            continue
        better = "higher" if case.higher_is_better else "lower"
        lines.append(f"\n{case.title} [{case.unit}, {better} is better]  ({case.name})")
        if case.note:
            lines.append(f"  {case.note}")
        lines.append(f"  {'system':<{width}}  {'median':>9} {'min':>9} {'max':>9}  ratios (median)")
        for system in systems:
            summary = results.summary(case.name, system)
            if summary is None:
                why = results.skipped.get((case.name, system), "not measured")
                lines.append(f"  {system:<{width}}  {'skipped':>9}  {why}")
                continue
            ratios = " · ".join(f"{r:.2f}× {ref}" for ref, r in _ratios(results, case, system))
            note = results.notes.get((case.name, system))
            lines.append(
                f"  {system:<{width}}  {_fmt(summary.median):>9} {_fmt(summary.low):>9} "
                f"{_fmt(summary.high):>9}  {ratios}" + (f"  [{note}]" if note else "")
            )
    return "\n".join(lines)


def target_run(target: Target, mode: str, sizes: Sizes | None = None) -> tuple[str, str]:
    """(the run a target belongs to: "any" or "full", a note saying the sizes it was set for
    and, in a run of other sizes, this run's and that it is not judged)."""
    if not target.sized_by:
        return "any", ""
    counts = []
    for name in target.sized_by:
        this, full = (sizes or {}).get(name, (None, None))
        if full is None:
            counts.append(name)
        elif this is None or this == full:
            counts.append(f"{full:,}")
        else:
            counts.append(f"{full:,} (this run: {this:,})")
    what = f" {target.sized_what}" if target.sized_what else ""
    note = f"target for the full run: {', '.join(counts)}{what}"
    if not m.judged_in(target, mode):
        note += f"; {mode} run: not judged"
    return "full", note


def targets_table(results: Results, mode: str = "full", sizes: Sizes | None = None) -> str:
    """The targets, each with its status in a run of `mode` and the run it belongs to."""
    head = "\ntargets (run: any = judged in every run, full = set for the full run's sizes"
    lines = [head + ("; a quick run does not judge those)" if mode == "quick" else ")")]
    for target in TARGETS:
        status, value = target_status(results, target, mode)
        shown = "" if value is None else f"{value:.2f}" + ("×" if target.ref else "")
        if status == m.NOT_MEASURED:
            why = results.skipped.get((target.case, target.system), "")
            shown = why
        run, run_note = target_run(target, mode, sizes)
        notes = [n for n in (results.notes.get((target.case, target.system)), run_note) if n]
        if notes and status != m.NOT_MEASURED:
            shown = f"{shown}  ({'; '.join(notes)})"
        lines.append(f"  {status.upper():<12} {run:<4} {target.text:<52} {shown}")
    return "\n".join(lines)


def _pairs_present(results: Results) -> list[m.PagePair]:
    return [
        p
        for p in PAGE_PAIRS
        if results.summary(p.case, p.system_4k) or results.summary(p.case, p.system_2m)
    ]


def _ref_name(ref: str) -> str:
    return "memcpy" if ref == m.MEMCPY_PROCESS else ref


def pages_table(results: Results) -> str:
    """Each measurement on 4 KiB-page (/dev/shm) and 2 MiB-page emulated memory, as medians
    and as ratios to the same baseline of this run, and 2 MiB over 4 KiB."""
    pairs = _pairs_present(results)
    if not pairs:
        return ""
    lines = [
        "\n4 KiB pages (before: memory in /dev/shm) against 2 MiB pages (after: famfs-py's "
        "huge-page tmpfs) [GiB/s, medians; × tmpfs: the same file read on tmpfs; × memcpy: "
        f"{m.MEMCPY_PROCESS}, same size]",
        f"  {'measurement':<46} {'4 KiB pages':>20} {'2 MiB pages':>20} {'2 MiB ÷ 4 KiB':>14}",
    ]
    for pair in pairs:
        cells = []
        for system in (pair.system_4k, pair.system_2m):
            value, against = _page_cell(results, pair, system)
            cells.append(f"{value:>6} {against:<13}")
        gain = results.ratio(pair.case, pair.system_2m, pair.system_4k)
        shown = "—" if gain is None else f"{gain:.2f}×"
        lines.append(f"  {pair.label:<46} {cells[0]:>20} {cells[1]:>20} {shown:>14}")
    baselines = []
    for case, ref in (
        ("seq_read_cold", m.TMPFS),
        ("seq_read_warm", m.TMPFS),
        ("mapped_read", m.MEMCPY_PROCESS),
    ):
        summary = results.summary(case, ref)
        if summary is not None:
            title = m.CASE_BY_NAME[case].title if ref == m.TMPFS else "copy"
            baselines.append(f"{_ref_name(ref)} {title}: {_fmt(summary.median)}")
    if baselines:
        lines.append(f"  baselines: {'; '.join(baselines)}")
    return "\n".join(lines)


def _page_cell(results: Results, pair: m.PagePair, system: str) -> tuple[str, str]:
    """One device's cell of the pages table: its median, and its ratio to the pair's baseline
    ("" when either is missing)."""
    summary = results.summary(pair.case, system)
    ratio = results.ratio(pair.case, system, pair.ref)
    value = "—" if summary is None else _fmt(summary.median)
    return value, "" if ratio is None else f"{ratio:.2f}× {_ref_name(pair.ref)}"


def pages_markdown(results: Results) -> str:
    pairs = _pairs_present(results)
    if not pairs:
        return ""
    out = [
        "| 4 KiB pages (/dev/shm) vs 2 MiB pages (GiB/s) | 4 KiB | 2 MiB | 2 MiB ÷ 4 KiB |",
        "|---|---|---|---|",
    ]
    for pair in pairs:
        cells = []
        for system in (pair.system_4k, pair.system_2m):
            value, against = _page_cell(results, pair, system)
            cells.append(value + (f" ({against})" if against else ""))
        gain = results.ratio(pair.case, pair.system_2m, pair.system_4k)
        out.append(
            f"| {pair.label} | {cells[0]} | {cells[1]} | {'' if gain is None else f'{gain:.2f}×'} |"
        )
    return "\n".join(out) + "\n"


# the README's short table: (case, famfs-py system, FUSE ceiling, kernel, limit)
SUMMARY = [
    ("seq_read_cold", m.FAMFS_AUTO, m.MIN_CACHED, m.TMPFS, m.MEMCPY_1M),
    ("seq_read_cold", m.FAMFS_NEVER, m.MIN_DIRECT, m.TMPFS, m.MEMCPY_1M),
    ("seq_read_warm", m.FAMFS_AUTO, m.MIN_CACHED, m.TMPFS, m.MEMCPY_1M),
    ("seq_read_warm", m.FAMFS_NEVER, m.MIN_DIRECT, m.TMPFS, m.MEMCPY_1M),
    ("seq_read_warm", m.FAMFS_ALWAYS, m.MIN_CACHED, m.TMPFS, m.MEMCPY_1M),
    ("seq_write_cold", m.FAMFS_AUTO, m.MIN_CACHED, m.TMPFS, m.MEMCPY_1M),
    ("seq_write_cold", m.FAMFS_NEVER, m.MIN_DIRECT, m.TMPFS, m.MEMCPY_1M),
    ("seq_write_warm", m.FAMFS_AUTO, m.MIN_CACHED, m.TMPFS, m.MEMCPY_1M),
    ("seq_write_warm", m.FAMFS_NEVER, m.MIN_DIRECT, m.TMPFS, m.MEMCPY_1M),
    ("seq_write_first", m.FAMFS_NEVER, m.MIN_DIRECT, m.TMPFS, m.MEMCPY_1M),
    ("randread_4k_odirect", m.FAMFS_NEVER, m.MIN_DIRECT, m.TMPFS, m.MEMCPY_1M),
    ("randread_4k_buffered", m.FAMFS_AUTO, m.MIN_CACHED, m.TMPFS, m.MEMCPY_1M),
    ("stat_cold", m.FAMFS_AUTO, m.MIN_CACHED, m.TMPFS, None),
    ("stat_warm", m.FAMFS_AUTO, m.MIN_CACHED, m.TMPFS, None),
    ("open_close_cold", m.FAMFS_AUTO, m.MIN_CACHED, m.TMPFS, None),
    ("open_close_warm", m.FAMFS_AUTO, m.MIN_CACHED, m.TMPFS, None),
    ("creat_single", m.FAMFS_CREAT, m.PYTHON, m.TRUNCATE, m.UPSTREAM),
    ("create_batch", m.FAMFS_CP, None, m.CP_TMPFS, None),
    ("mount_8m_full", m.FAMFS_AUTO, m.MIN_CACHED, None, None),
    ("mount_256m", m.FAMFS_AUTO, m.MIN_CACHED, None, None),
    ("mapped_read", m.FAMFS_MAPPED, None, None, m.MEMCPY_1M),
]


def summary_markdown(results: Results) -> str:
    """One line per headline measurement: famfs-py next to its FUSE ceiling (the minimal
    pyfuse3 server; for creat, python's own start), the kernel and the limit."""
    out = [
        "| case | famfs-py | value | pyfuse3 ceiling | kernel | limit |",
        "|---|---|---|---|---|---|",
    ]

    def cell(case: str, system: str, ref: str | None) -> str:
        if ref is None:
            return ""
        other = results.summary(case, ref)
        if other is None:
            return ""
        ratio = results.ratio(case, system, ref)
        shown = f"{_fmt(other.median)}"
        return f"{shown} ({ratio:.2f}×)" if ratio else shown

    for case_name, system, ceiling, kernel, limit in SUMMARY:
        case = m.CASE_BY_NAME[case_name]
        mine = results.summary(case_name, system)
        if mine is None:
            continue
        arrow = "↑" if case.higher_is_better else "↓"
        label = system.replace("famfs-py ", "") if system.startswith("famfs-py -c") else system
        out.append(
            f"| {case.title} ({case.unit} {arrow}) | {label} | **{_fmt(mine.median)}** "
            f"({_fmt(mine.low)}–{_fmt(mine.high)}) | {cell(case_name, system, ceiling)} | "
            f"{cell(case_name, system, kernel)} | {cell(case_name, system, limit)} |"
        )
    out.append("")
    out.append(
        "(N×: famfs-py's median divided by the reference's. Ceiling: the minimal pyfuse3 "
        "server in the same cache mode; for creat, Python starting and doing nothing. Kernel: "
        "tmpfs, or a C process on tmpfs. Limit: in-process memcpy, or upstream's published "
        "figure.)"
    )
    return "\n".join(out) + "\n"


def targets_markdown(results: Results, mode: str, sizes: Sizes | None = None) -> str:
    out = ["| target | run | status | measured |", "|---|---|---|---|"]
    for target in TARGETS:
        status, value = target_status(results, target, mode)
        shown = "" if value is None else f"{value:.2f}" + ("×" if target.ref else "")
        run, run_note = target_run(target, mode, sizes)
        notes = [n for n in (results.notes.get((target.case, target.system)), run_note) if n]
        if value is None:
            shown = results.skipped.get((target.case, target.system), "")
        elif notes:
            shown = f"{shown} ({'; '.join(notes)})"
        out.append(f"| {target.text} | {run} | {status} | {shown} |")
    return "\n".join(out) + "\n"


def markdown(results: Results, mode: str, header: str, sizes: Sizes | None = None) -> str:
    out = [header, "", summary_markdown(results)]
    pages = pages_markdown(results)
    if pages:
        out += [pages]
    out += ["## Every measurement", ""]
    out += ["| case | system | median | min – max | ratios |", "|---|---|---|---|---|"]
    for case in CASES:
        for system in results.systems(case.name):
            summary = results.summary(case.name, system)
            title = f"{case.title} ({case.unit}, {'↑' if case.higher_is_better else '↓'})"
            if summary is None:
                why = results.skipped.get((case.name, system), "not measured")
                out.append(f"| {title} | {system} | skipped | | {why} |")
                continue
            ratios = ", ".join(f"{r:.2f}× {ref}" for ref, r in _ratios(results, case, system))
            note = results.notes.get((case.name, system))
            if note:
                ratios = f"{ratios} ({note})" if ratios else note
            out.append(
                f"| {title} | {system} | {_fmt(summary.median)} | "
                f"{_fmt(summary.low)} – {_fmt(summary.high)} | {ratios} |"
            )
    out += ["", targets_markdown(results, mode, sizes)]
    return "\n".join(out)


README_BEGIN = "<!-- bench-results:begin"
README_END = "<!-- bench-results:end -->"


def update_readme(
    readme: Path, results: Results, header: str, mode: str = "full", sizes: Sizes | None = None
) -> bool:
    """Rewrite the README's results block (between its markers); False if it has none."""
    text = readme.read_text()
    start, end = text.find(README_BEGIN), text.find(README_END)
    if start < 0 or end < start:
        return False
    first_line_end = text.index("\n", start) + 1
    pages = pages_markdown(results)
    block = (
        f"Latest {mode} run ({header}):\n\n{summary_markdown(results)}\n"
        + (f"{pages}\n" if pages else "")
        + f"{targets_markdown(results, mode, sizes)}\n"
    )
    readme.write_text(text[:first_line_end] + block + text[end:])
    return True


def read_json(path: Path) -> tuple[Results, str]:
    """The samples, skips and notes back from a latest.json (to redraw its reports)."""
    results = Results()
    mode = "full"
    for row in json.loads(path.read_text()):
        key = (row["case"], row["system"])
        mode = row.get("mode", mode)
        if "skipped" in row:
            results.skip(*key, row["skipped"])
        elif key not in results.samples:
            results.samples[key] = list(row["samples"])
        if row.get("note"):
            results.note(*key, row["note"])
    return results, mode


def write_json(results: Results, mode: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows(results, mode), indent=1, ensure_ascii=False) + "\n")


def _color(system: str) -> str:
    if system in m.FAMFS_SYSTEMS:
        return "#d62728"
    if system.startswith("memcpy"):
        return "#2ca02c"
    if system.startswith("pyfuse3"):
        return "#1f77b4"
    if system.startswith("upstream"):
        return "#9467bd"
    return "#7f7f7f"


def write_chart(results: Results, mode: str, path: Path) -> bool:
    """One panel per case: median bars with min-max whiskers. False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    cases = [  # cases famfs-py took part in (skips placeholders whose feature is missing)
        c
        for c in CASES
        if any(results.summary(c.name, s) for s in results.systems(c.name) if s in m.FAMFS_SYSTEMS)
    ]
    cols = 3
    nrows = -(-len(cases) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(7 * cols, 2.9 * nrows), squeeze=False)
    for ax in axes.flat[len(cases) :]:
        ax.axis("off")
    for ax, case in zip(axes.flat, cases, strict=False):
        systems = [s for s in results.systems(case.name) if results.summary(case.name, s)]
        summaries = [results.summary(case.name, s) for s in systems]
        medians = [s.median for s in summaries if s]
        lows = [s.median - s.low for s in summaries if s]
        highs = [s.high - s.median for s in summaries if s]
        ypos = range(len(systems))
        ax.barh(ypos, medians, xerr=[lows, highs], color=[_color(s) for s in systems], capsize=2)
        ax.set_yticks(list(ypos), [s if len(s) < 44 else s[:42] + "…" for s in systems])
        ax.tick_params(axis="y", labelsize=7)
        ax.tick_params(axis="x", labelsize=7)
        ax.invert_yaxis()
        arrow = "higher" if case.higher_is_better else "lower"
        ax.set_title(f"{case.title} — {case.unit}, {arrow} is better", fontsize=9)
        top = max(s.high for s in summaries if s)
        for y, value in zip(ypos, medians, strict=True):
            ax.text(value + top * 0.01, y, _fmt(value), va="center", fontsize=6.5)
        ax.set_xlim(0, top * 1.18)
    fig.suptitle(
        f"famfs-py benchmarks ({mode} run; bars: median, whiskers: min–max of the rounds; "
        "red famfs-py, blue pyfuse3 minimal, grey kernel, green memcpy)",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True
