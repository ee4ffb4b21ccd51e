"""`summary.md`: the gate's verdict first, then per suite the bucket table, gate failures,
inconclusive cells, the benchmarks' headline tables (this run beside each baseline) and flipped
dialogues; short enough for a CI step summary or a PR comment.

GitHub refuses a step summary over 1 MiB (`STEP_SUMMARY_LIMIT`). Every list here is capped, so a
summary stays far under it at benchmark scale; should one still exceed it (very many suites or
baselines, very long dialogue ids), the lists are cut further, in steps, and the summary says so:
lists are cut, never numbers (the tables stay whole).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pytest_mtmcs.outcome.headline import LEGEND, compared_baselines, headline_tables
from pytest_mtmcs.outcome.model import ReportData
from pytest_mtmcs.outcome.terminal import BUCKET_HEADER, bucket_rows, measurement_notes

# Lists in summary.md are capped so the file fits a PR comment (GitHub allows 65,536 chars).
MAX_MD_FLIPS = 15


MAX_MD_FAILURES = 20

# GitHub's limit on one step's summary ($GITHUB_STEP_SUMMARY), in bytes.
STEP_SUMMARY_LIMIT = 1024 * 1024
# A headline table longer than this is collapsed under <details>.
MAX_MD_TABLE_ROWS = 24


@dataclass(frozen=True)
class Caps:
    """How many items of each list summary.md shows."""

    flips: int = MAX_MD_FLIPS
    failures: int = MAX_MD_FAILURES
    inconclusive: int = MAX_MD_FAILURES
    notes: int | None = None  # None: all


# Tried in order until the summary fits STEP_SUMMARY_LIMIT.
CUTS: tuple[Caps, ...] = (Caps(), Caps(flips=3, failures=5, inconclusive=5), Caps(0, 0, 0, 3))


MDE_LEGEND = (
    "_mde: minimum detectable drop: the smallest drop in a cell that could be significant at "
    "this size (Holm-corrected); a cell whose mde exceeds the tolerated drop cannot show a drop "
    "of that size, so its pass is weak; `mde -`: no drop in a cell this small could be "
    "significant. The `all` rows pool the turn buckets: tested with them, never gated._"
)


def _f(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _md_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def md_table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> list[str]:
    out = ["| " + " | ".join(_md_cell(h) for h in header) + " |"]
    out.append("|" + "|".join("---" for _ in header) + "|")
    out.extend("| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows)
    return out


def review_markdown(info: dict[str, Any]) -> list[str]:
    """Flips the model judge checked, adjudications applied and stale, one paragraph each."""
    from pytest_mtmcs.outcome.review_summary import review_lines

    out: list[str] = []
    for line in review_lines(info):
        out += [f"- {line.strip()}"] if line.startswith("  ") else ["", line]
    return out


def summary_markdown(data: ReportData, *, limit: int = STEP_SUMMARY_LIMIT) -> str:
    """summary.md of `data`, under `limit` bytes where cutting lists can make it so."""
    md = ""
    for i, caps in enumerate(CUTS):
        md = _summary(data, caps, cut=i > 0)
        if len(md.encode("utf-8")) <= limit:
            break
    return md


CUT_NOTE = (
    "> Lists cut to keep this summary under GitHub's 1 MiB step-summary limit: flipped "
    "dialogues, gate failures, inconclusive cells and notes show their first items only; every "
    "number is here, every list is in report.html and results.parquet."
)


def _summary(data: ReportData, caps: Caps, *, cut: bool) -> str:
    heading = data.verdict.heading() if data.verdict is not None else f"## {data.title}"
    lines = [heading, ""]
    if data.verdict is not None:
        lines += [f"**{data.verdict.line()}**", ""]
        if data.title != "pytest-mtmcs report":
            lines += [f"_{data.title}_", ""]
    info = data.info
    judge = info.get("judge") or {}
    lines.append(
        f"model `{info.get('model') or '-'}` · judge `{judge.get('name', '-')}`"
        + (
            f" · baselines {', '.join(f'`{n}`' for n in data.baseline_names())}"
            if data.baseline_names()
            else ""
        )
    )
    from pytest_mtmcs.judges.datasheet import summary_line

    lines += ["", summary_line(info)]
    lines += review_markdown(info)
    lines.extend(f"> {n}" for n in data.notes)
    if cut:
        lines += ["", CUT_NOTE]
    for s in data.suites:
        mark = "❌" if s.failures else "⚠️" if s.inconclusive else "✅"
        word = " (inconclusive cells)" if s.inconclusive and not s.failures else ""
        lines += ["", f"### {mark} {s.suite} ({len(s.results)} dialogues){word}", ""]
        rows, base = bucket_rows(s)
        lines += md_table(rows, [h.format(base=base) for h in BUCKET_HEADER])
        notes = measurement_notes(s) + s.notes
        if notes:
            shown = notes if caps.notes is None else notes[: caps.notes]
            lines += ["", *(f"- {n.strip()}" for n in shown)]
            if len(shown) < len(notes):
                lines.append(f"- ... and {len(notes) - len(shown)} more notes")
        if s.failures:
            lines += ["", "**Gate failures:**", ""]
            lines += [f"- {f}" for f in s.failures[: caps.failures]]
            if len(s.failures) > caps.failures:
                lines.append(f"- ... and {len(s.failures) - caps.failures} more")
        if s.inconclusive:
            lines += ["", "**Inconclusive cells** (⚠️ neither a pass nor a regression):", ""]
            lines += [f"- {c}" for c in s.inconclusive[: caps.inconclusive]]
            if len(s.inconclusive) > caps.inconclusive:
                lines.append(f"- ... and {len(s.inconclusive) - caps.inconclusive} more")
        if any(c.underpowered for b in s.baselines for c in b.comparisons):
            lines += ["", MDE_LEGEND]
        tables = headline_tables(s, data.baseline_results)
        for t in tables:
            lines += ["", f"**{t.title}**", ""]
            body = md_table(t.rows, t.header)
            if len(t.rows) > MAX_MD_TABLE_ROWS:
                body = [
                    f"<details><summary>{len(t.rows)} rows</summary>",
                    "",
                    *body,
                    "",
                    "</details>",
                ]
            lines += body
            if t.notes:
                lines += ["", *(f"- {n}" for n in t.notes)]
        if tables and compared_baselines(s, data.baseline_results):
            lines += ["", f"*{LEGEND}*"]
        for b in s.baselines:
            lines.append("")
            if not b.found:
                lines.append(f"baseline `{b.name}`: no stored results for suite {s.suite}")
                continue
            if b.mismatches:
                word = "REFUSED" if b.refused else "warning (compared anyway)"
                lines.append(f"baseline `{b.name}`: {word}: " + "; ".join(b.mismatches))
            if b.flips is None:
                continue
            fl = b.flips
            lines.append(f"**against `{b.name}`:** {fl.counts_text()}")
            for title, group in (("regressed", fl.regressed), ("fixed", fl.fixed)):
                if not group:
                    continue
                lines.append("")
                lines.append(f"<details><summary>{len(group)} {title}</summary>")
                lines.append("")
                for f in group[: caps.flips]:
                    lines.append(
                        f"- `{f.id}` [{f.bucket}]: {f.before_verdict} → {f.after_verdict} "
                        f"(turns {' '.join(f.before_labels)} → {' '.join(f.after_labels)})"
                    )
                if len(group) > caps.flips:
                    lines.append(f"- ... and {len(group) - caps.flips} more (see report.html)")
                lines += ["", "</details>"]
    return "\n".join(lines) + "\n"
