"""`summary.md`: the gate's verdict first, then per suite the bucket table, gate failures,
inconclusive cells and flipped dialogues; short enough for a CI step summary or a PR comment."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pytest_mtmcs.outcome.model import ReportData
from pytest_mtmcs.outcome.terminal import BUCKET_HEADER, bucket_rows, measurement_notes

# Lists in summary.md are capped so the file fits a PR comment (GitHub allows 65,536 chars).
MAX_MD_FLIPS = 15


MAX_MD_FAILURES = 20


MDE_LEGEND = (
    "_mde: minimum detectable drop: the smallest drop in a cell that could be significant at "
    "this size (Holm-corrected); a cell whose mde exceeds the tolerated drop cannot show a drop "
    "of that size, so its pass is weak._"
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


def summary_markdown(data: ReportData) -> str:
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
    for s in data.suites:
        mark = "❌" if s.failures else "⚠️" if s.inconclusive else "✅"
        word = " (inconclusive cells)" if s.inconclusive and not s.failures else ""
        lines += ["", f"### {mark} {s.suite} ({len(s.results)} dialogues){word}", ""]
        rows, base = bucket_rows(s)
        lines += md_table(rows, [h.format(base=base) for h in BUCKET_HEADER])
        notes = measurement_notes(s) + s.notes
        if notes:
            lines += ["", *(f"- {n.strip()}" for n in notes)]
        if s.failures:
            lines += ["", "**Gate failures:**", ""]
            lines += [f"- {f}" for f in s.failures[:MAX_MD_FAILURES]]
            if len(s.failures) > MAX_MD_FAILURES:
                lines.append(f"- ... and {len(s.failures) - MAX_MD_FAILURES} more")
        if s.inconclusive:
            lines += ["", "**Inconclusive cells** (⚠️ neither a pass nor a regression):", ""]
            lines += [f"- {c}" for c in s.inconclusive[:MAX_MD_FAILURES]]
        if any(c.underpowered for b in s.baselines for c in b.comparisons):
            lines += ["", MDE_LEGEND]
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
                for f in group[:MAX_MD_FLIPS]:
                    lines.append(
                        f"- `{f.id}` [{f.bucket}]: {f.before_verdict} → {f.after_verdict} "
                        f"(turns {' '.join(f.before_labels)} → {' '.join(f.after_labels)})"
                    )
                if len(group) > MAX_MD_FLIPS:
                    lines.append(f"- ... and {len(group) - MAX_MD_FLIPS} more (see report.html)")
                lines += ["", "</details>"]
    return "\n".join(lines) + "\n"
