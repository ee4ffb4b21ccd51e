"""report.html: one self-contained page (inline CSS, plots as inline base64 PNG, no scripts, no
external resources) with the plots, the tables and the flipped dialogues side by side.

matplotlib is used through `Figure` + the Agg canvas directly, never pyplot: no global figure
state, no GUI backend, safe to call from any process. Every text from data is escaped.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from html import escape
from typing import TYPE_CHECKING, Any

from pytest_mtmcs.analysis.buckets import ALL
from pytest_mtmcs.analysis.metrics import Rate, safemt_summary, units
from pytest_mtmcs.analysis.metrics import safety_by_depth as depth_curves
from pytest_mtmcs.records import Dialogue, DialogueResult

if TYPE_CHECKING:
    from pytest_mtmcs.analysis.flips import Flip
    from pytest_mtmcs.outcome.gate import SuiteOutcome
    from pytest_mtmcs.outcome.model import ReportData

PLOT_METRICS: tuple[str, ...] = ("safety", "helpfulness", "intent_accuracy")
MAX_HTML_FLIPS = 40  # per baseline and kind (regressed / fixed): keeps the page small
MAX_REPLY_CHARS = 2000
DPI = 100

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:24px;color:#222;
max-width:1400px}
h1{font-size:1.5em;margin:0 0 .3em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;
margin-top:1.6em}h3{margin:1.2em 0 .4em}
table{border-collapse:collapse;margin:.4em 0 1em;font-size:.88em}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
.fail{color:#b00020;font-weight:600}.ok{color:#1b7f2a}.warn{color:#a15c00}
img.plot{max-width:100%;height:auto;display:block;margin:.4em 0}
figure{margin:.6em 0}figcaption{font-size:.85em}
.meta td:first-child{font-weight:600}
details{margin:.3em 0;border:1px solid #ddd;border-radius:4px;padding:.3em .6em}
summary{cursor:pointer}.reply{white-space:pre-wrap;max-width:560px}
.lab-compliance{background:#fde2e2}.lab-refusal{background:#e3ecfd}
.lab-safe_redirect{background:#e6f6e6}.muted{color:#777}
"""


def _e(v: Any) -> str:
    return escape("" if v is None else str(v), quote=True)


def _f(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _table(
    rows: Sequence[Sequence[Any]], header: Sequence[str], num: frozenset[int] = frozenset()
) -> str:
    out = ["<table><thead><tr>", *(f"<th>{_e(h)}</th>" for h in header), "</tr></thead><tbody>"]
    for r in rows:
        out.append("<tr>")
        for i, c in enumerate(r):
            cls = ' class="num"' if i in num else ""
            out.append(f"<td{cls}>{_e(c)}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


# --- plots -------------------------------------------------------------------------------------


Series = tuple[str, Mapping[Any, Rate]]  # (checkpoint name, x -> rate)


def _png(fig: Any) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _style(i: int) -> dict[str, Any]:
    """This run: solid, thick, first colour; baselines: dashed, other colours and markers."""
    markers = "osD^vP*X"
    if i == 0:
        return {"color": "C0", "linestyle": "-", "linewidth": 2.2, "marker": "o", "zorder": 3}
    return {
        "color": f"C{i}",
        "linestyle": "--",
        "linewidth": 1.4,
        "marker": markers[i % len(markers)],
        "zorder": 2,
    }


def _draw(ax: Any, xs: Sequence[Any], series: Sequence[Series]) -> None:
    """One line per checkpoint over categorical x, Wilson 95% intervals as error bars."""
    count = len(series)
    width = min(0.25, 0.08 * (count - 1)) if count > 1 else 0.0
    for i, (name, rates) in enumerate(series):
        dx = (i / (count - 1) - 0.5) * width if count > 1 else 0.0
        px: list[float] = []
        py: list[float] = []
        lo: list[float] = []
        hi: list[float] = []
        for j, x in enumerate(xs):
            rate = rates.get(x)
            if rate is None or rate.value is None:
                continue
            a, b = rate.interval
            px.append(j + dx)
            py.append(rate.value)
            lo.append(max(0.0, rate.value - a))
            hi.append(max(0.0, b - rate.value))
        style = _style(i)
        if not px:
            # Keep the checkpoint in the legend even when it has no data on this axis.
            ax.plot([], [], label=name, **style)
            continue
        ax.errorbar(
            px, py, yerr=[lo, hi], capsize=4, elinewidth=1.1, markersize=5, label=name, **style
        )
    ax.set_xticks(range(len(xs)))
    ax.set_xlim(-0.5, len(xs) - 0.5)
    ax.set_ylim(-0.04, 1.06)
    ax.grid(True, axis="y", alpha=0.3)


def _figure(
    panels: Sequence[tuple[str, str, Sequence[Any], Sequence[str], Sequence[Series]]],
) -> str:
    """A row of panels (title, x label, x values, x tick labels, series) sharing one legend."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.3 * len(panels), 3.9), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, xlabel, xs, ticks, series) in zip(axes, panels, strict=True):
        _draw(ax, xs, series)
        ax.set_xticklabels(ticks)
        ax.set_title(title, fontsize=11)
        ax.set_xlabel(xlabel)
    axes[0].set_ylabel("share (95% Wilson interval)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        loc="outside upper center",
        ncols=min(len(labels), 4),
        frameon=False,
        fontsize=10,
    )
    return _png(fig)


def plot_table(results: Sequence[DialogueResult], buckets: Any) -> dict[tuple[str, str], Any]:
    """The plotted metrics per bucket, shaped like `metrics.bucket_table`'s `all` rows.

    Built from `metrics.units`, the definition the tables use, but only for the plotted metrics:
    a baseline's full bucket table costs seconds at benchmark scale.
    """
    counts: dict[str, dict[str, list[int]]] = {}
    for metric in PLOT_METRICS:
        for bucket, ok in units(results, metric, buckets).values():
            cell = counts.setdefault(bucket, {}).setdefault(metric, [0, 0])
            cell[0] += int(ok)
            cell[1] += 1
    return {
        (ALL, b): {m: Rate(*cells.get(m, (0, 0))) for m in PLOT_METRICS}
        for b, cells in counts.items()
    }


def _tick(bucket: str, rate: Rate | None) -> str:
    return f"{bucket}\nn={rate.n}" if rate is not None and rate.n else bucket


def bucket_plot(s: SuiteOutcome, checkpoints: Sequence[tuple[str, Mapping[Any, Any]]]) -> str:
    """Safety, helpfulness and intent accuracy per turn bucket, one line per checkpoint.

    `checkpoints`: (name, bucket table as `metrics.bucket_table` returns it), this run first.
    """
    names = s.buckets.ordered(
        {b for _, table in checkpoints for (g, b) in table if g == ALL and b != ALL}
    )
    panels = []
    for metric in PLOT_METRICS:
        series: list[Series] = [
            (cp, {b: table[(ALL, b)][metric] for b in names if (ALL, b) in table})
            for cp, table in checkpoints
        ]
        if not any(r.n for _, rates in series for r in rates.values()):
            continue
        own = checkpoints[0][1]
        ticks = [_tick(b, own[(ALL, b)][metric] if (ALL, b) in own else None) for b in names]
        panels.append((metric.replace("_", " "), "turn bucket (user turns)", names, ticks, series))
    if not panels:
        return ""
    return _figure(panels)


def depth_plot(suite: str, checkpoints: Sequence[tuple[str, Sequence[DialogueResult]]]) -> str:
    """Safety by user-turn depth (`metrics.safety_by_depth`), one panel per setting + all."""
    curves = [(cp, depth_curves(rs)) for cp, rs in checkpoints]
    groups = [g for g in curves[0][1] if g != ALL] + ([ALL] if ALL in curves[0][1] else [])
    if not groups:
        return ""
    panels = []
    for g in groups:
        depth = max(t for _, c in curves for t, _ in c.get(g, ())) if curves else 0
        xs = list(range(1, depth + 1))
        series: list[Series] = [(cp, dict(c.get(g, ()))) for cp, c in curves]
        panels.append(
            (
                f"safety by depth: {g.replace('_', ' ')}",
                "user turn",
                xs,
                [str(x) for x in xs],
                series,
            )
        )
    return _figure(panels)


def safemt_plot(suite: str, summaries: Sequence[tuple[str, Any]]) -> str:
    lengths = sorted({k for _, sm in summaries for k in sm.asr})
    series: list[Series] = [(cp, sm.asr) for cp, sm in summaries]
    return _figure(
        [
            (
                "SafeMT attack success rate",
                "dialogue length (user turns)",
                lengths,
                [str(k) for k in lengths],
                series,
            )
        ]
    )


# --- sections ----------------------------------------------------------------------------------


def _meta(data: ReportData) -> str:
    info = data.info
    judge = info.get("judge") or {}
    rows = [("model", info.get("model") or "-")]
    for k, v in sorted((info.get("fingerprint") or {}).items()):
        if k != "spec":
            rows.append((f"model {k}", v))
    if judge:
        rows.append(("judge", " ".join(f"{k}={v}" for k, v in judge.items() if v)))
    names = data.baseline_names()
    rows.append(("baselines", ", ".join(names) if names else "none"))
    body = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in rows)
    notes = "".join(f'<p class="warn">{_e(n)}</p>' for n in data.notes)
    return f'<table class="meta">{body}</table>{notes}'


def _img(uri: str, alt: str, caption: str = "") -> str:
    if not uri:
        return ""
    cap = f'<figcaption class="muted">{_e(caption)}</figcaption>' if caption else ""
    return f'<figure><img class="plot" alt="{_e(alt)}" src="{uri}">{cap}</figure>'


def _bucket_section(s: SuiteOutcome) -> str:
    from pytest_mtmcs.outcome.terminal import (
        BUCKET_HEADER,
        CUT_HEADER,
        bucket_rows,
        cut_tables,
        measurement_notes,
    )

    rows, base = bucket_rows(s)
    parts = [
        "<h3>Per bucket</h3>",
        _table(rows, [h.format(base=base) for h in BUCKET_HEADER], frozenset({1, 3, 4, 5, 7})),
    ]
    # What the numbers leave out (errors, unparsed answers, unmeasured metrics) and the cells
    # that are neither a pass nor a regression, as the terminal and summary.md say them.
    notes = [*measurement_notes(s), *s.notes]
    if notes:
        parts.append("<ul>" + "".join(f"<li>{_e(n.strip())}</li>" for n in notes) + "</ul>")
    if s.inconclusive:
        parts.append(
            '<ul class="warn">' + "".join(f"<li>{_e(c)}</li>" for c in s.inconclusive) + "</ul>"
        )
    for title, cut_rows in cut_tables(s):
        parts += [f"<h3>{_e(title.capitalize())}</h3>", _table(cut_rows, CUT_HEADER)]
    return "".join(parts)


def _headline_table(t: Any) -> str:
    """A headline table (`outcome.headline.HeadlineTable`) with its notes."""
    notes = "".join(f'<p class="muted">{_e(n)}</p>' for n in t.notes)
    return f"<h3>{_e(t.title)}</h3>" + _table(t.rows, t.header, t.num) + notes


def _safemt_section(suite: str, summaries: Sequence[tuple[str, Any]], table: Any) -> str:
    """The ASR plot (this run and every stored baseline) and the headline table (this run beside
    each compared baseline, with deltas)."""
    summaries = [(cp, sm) for cp, sm in summaries if sm is not None]
    if not summaries or table is None:
        return ""
    return _headline_table(table) + _img(
        safemt_plot(suite, summaries),
        f"{suite} SafeMT ASR per length",
        "Attack success rate per dialogue length (lower is safer).",
    )


def _label_cell(label: str | None) -> str:
    lab = label or "-"
    return f'<span class="lab-{_e(lab)}">{_e(lab)}</span>'


def _clip(text: str) -> str:
    return text if len(text) <= MAX_REPLY_CHARS else text[:MAX_REPLY_CHARS] + " [...]"


def _flip_detail(
    flip: Flip,
    now: DialogueResult,
    before: DialogueResult | None,
    dialogue: Dialogue | None,
    base_name: str,
    current_name: str,
    placement: str = "last",
    open_: bool = False,
    base_replies: Mapping[tuple[str, int], str] | None = None,
) -> str:
    user_text: dict[int, str] = {}
    with_image: frozenset[int] = frozenset()
    if dialogue is not None:
        k = 0
        for t in dialogue.turns:
            if t.role == "user":
                k += 1
                user_text[k] = t.text
        with_image = dialogue.image_turns(placement)
    replies = {r.user_turn: r for r in now.replies}
    image = (
        f'<span class="muted">[image {_e(dialogue.image.sha256[:12])}]</span> '
        if dialogue is not None and dialogue.image is not None
        else ""
    )
    before_labels = before.turn_labels if before is not None else flip.before_labels
    rows = []
    for k in range(1, now.user_turns + 1):
        rep = replies.get(k)
        risk = ' <span class="warn">(risk turn)</span>' if now.risk_turn == k else ""
        reply = (
            f'<div class="reply">{_e(_clip(rep.text))}</div>'
            if rep is not None
            else '<span class="muted">scripted</span>'
        )
        was = before_labels[k - 1] if k - 1 < len(before_labels) else "-"
        user = (
            f'<td class="reply">{image if k in with_image else ""}'
            f"{_e(_clip(user_text.get(k, '')))}</td>"
            if dialogue is not None
            else ""
        )
        base_reply = ""
        if base_replies is not None:
            text = base_replies.get((flip.id, k))
            base_reply = (
                f'<td><div class="reply">{_e(_clip(text))}</div></td>'
                if text is not None
                else f'<td><span class="muted">{"scripted" if rep is None else "-"}</span></td>'
            )
        rows.append(
            f"<tr><td class=num>{k}{risk}</td>{user}"
            f"<td>{reply}</td><td>{_label_cell(rep.label) if rep else '-'}</td>"
            f"{base_reply}<td>{_label_cell(was)}</td></tr>"
        )
    head = (
        f"<tr><th>turn</th>{'<th>user</th>' if dialogue is not None else ''}"
        f"<th>{_e(current_name)}: reply</th>"
        f"<th>{_e(current_name)}: label</th>"
        + (f"<th>{_e(base_name)}: reply</th>" if base_replies is not None else "")
        + f"<th>{_e(base_name)}: label</th></tr>"
    )
    summary = (
        f"<code>{_e(flip.id)}</code> [{_e(flip.bucket)}] {_e(now.label)} "
        f"{_e(now.setting)} {_e(now.modality)}: {_e(base_name)} "
        f"<b>{_e(flip.before_verdict)}</b> &rarr; this run "
        f"<b>{_e(flip.after_verdict)}</b>"
    )
    extra = ""
    if now.questions or (before is not None and before.questions):
        extra = (
            f"<p>intent: {_e(current_name)} {now.intent_correct}/{now.intent_total}"
            + (
                f", {_e(base_name)} {before.intent_correct}/{before.intent_total}"
                if before is not None
                else ""
            )
            + "</p>"
        )
    if now.error:
        extra += f'<p class="fail">error: {_e(now.error)}</p>'
    return (
        f"<details{' open' if open_ else ''}><summary>{summary}</summary>"
        f"<table>{head}{''.join(rows)}</table>"
        f"{extra}</details>"
    )


def _flips_section(data: ReportData, s: SuiteOutcome) -> str:
    parts: list[str] = []
    current = {r.id: r for r in s.results}
    dialogues = data.dialogues.get(s.suite) or {}
    placement = str((s.meta.get("settings") or {}).get("image_placement") or "last")
    for b in s.baselines:
        if not b.found:
            parts.append(
                f"<p class=warn>baseline {_e(b.name)}: no stored results for this suite</p>"
            )
            continue
        if b.mismatches:
            word = "REFUSED" if b.refused else "warning (compared anyway)"
            cls = "fail" if b.refused else "warn"
            parts.append(
                f'<p class="{cls}">baseline {_e(b.name)}: {word}: {_e("; ".join(b.mismatches))}</p>'
            )
        if b.flips is None:
            continue
        fl = b.flips
        parts.append(f"<h3>Against {_e(b.name)}</h3><p>{_e(fl.counts_text())}</p>")
        before = {r.id: r for r in data.baseline_results.get((s.suite, b.name), ())}
        base_replies = data.baseline_replies.get((s.suite, b.name))
        note = data.baseline_reply_notes.get((s.suite, b.name))
        if note:
            parts.append(f'<p class="warn">{_e(note)}</p>')
        elif base_replies is None and (fl.regressed or fl.fixed):
            parts.append(
                f'<p class="muted">{_e(b.name)}: labels only (its replies are shown here when the '
                "baseline is recorded with --mtmcs-baseline-transcripts)</p>"
            )
        for title, group in (("Regressed", fl.regressed), ("Fixed", fl.fixed)):
            if not group:
                continue
            parts.append(f"<h4>{title} ({len(group)})</h4>")
            for i, f in enumerate(group[:MAX_HTML_FLIPS]):
                now = current.get(f.id)
                if now is None:
                    continue
                # The first one open: the page shows what a flip looks like without a click.
                parts.append(
                    _flip_detail(
                        f,
                        now,
                        before.get(f.id),
                        dialogues.get(f.id),
                        b.name,
                        data.current_name,
                        placement,
                        open_=i == 0,
                        base_replies=base_replies,
                    )
                )
            if len(group) > MAX_HTML_FLIPS:
                parts.append(
                    f"<p class=muted>... and {len(group) - MAX_HTML_FLIPS} more "
                    "(all in results.parquet, column flip)</p>"
                )
    return "".join(parts)


def _suite_section(data: ReportData, s: SuiteOutcome) -> str:
    checkpoints_results: list[tuple[str, Sequence[DialogueResult]]] = [
        (data.current_name, s.results)
    ]
    for b in s.baselines:
        stored = data.baseline_results.get((s.suite, b.name))
        if stored:
            label = f"{b.name} (not comparable)" if b.refused else b.name
            checkpoints_results.append((label, stored))
    tables = [(data.current_name, s.table)] + [
        (cp, plot_table(rs, s.buckets)) for cp, rs in checkpoints_results[1:]
    ]
    status = (
        '<span class="fail">FAILED</span>'
        if s.failures
        else '<span class="warn">inconclusive cells</span>'
        if s.inconclusive
        else '<span class="ok">ok</span>'
    )
    parts = [f"<h2>{_e(s.suite)}: {len(s.results)} dialogues, {status}</h2>"]
    if s.failures:
        parts.append(
            "<ul>" + "".join(f'<li class="fail">{_e(f)}</li>' for f in s.failures) + "</ul>"
        )
    parts.append(
        _img(
            bucket_plot(s, tables),
            f"{s.suite}: metrics per turn bucket",
            "One line per checkpoint; bars: 95% Wilson intervals; n under each bucket: this "
            "run's dialogues (questions for intent accuracy).",
        )
    )
    from pytest_mtmcs.outcome.headline import LEGEND, compared_baselines, headline_tables

    headline = {t.key: t for t in headline_tables(s, data.baseline_results)}
    depth = depth_plot(s.suite, checkpoints_results)
    if depth:
        parts.append(
            "<h3>Safety by turn depth</h3>"
            + _img(
                depth,
                f"{s.suite}: safety by depth",
                "Among unsafe dialogues with at least t user turns: the share with no harmful "
                "reply from the risk turn through turn t.",
            )
        )
    if "depth" in headline:
        parts.append(_headline_table(headline["depth"]))
    parts.append(_bucket_section(s))
    parts.append(
        _safemt_section(
            s.suite,
            [(cp, safemt_summary(rs)) for cp, rs in checkpoints_results],
            headline.get("safemt"),
        )
    )
    if "mtmcs" in headline:
        parts.append(_headline_table(headline["mtmcs"]))
    if headline and compared_baselines(s, data.baseline_results):
        parts.append(f'<p class="muted">{_e(LEGEND)}</p>')
    parts.append(_flips_section(data, s))
    return "".join(parts)


def render_html(data: ReportData) -> str:
    body = [f"<h1>{_e(data.title)}</h1>", _meta(data)]
    body.extend(_suite_section(data, s) for s in data.suites)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(data.title)}</title><style>{CSS}</style></head><body>"
        + "\n".join(body)
        + "</body></html>\n"
    )
