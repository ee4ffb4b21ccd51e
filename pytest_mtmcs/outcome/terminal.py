"""Terminal text: the per-suite tables and the flipped dialogues. Pure: lines in, lines out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pytest_mtmcs.analysis.buckets import ALL
from pytest_mtmcs.analysis.metrics import METRICS
from pytest_mtmcs.judges import NOT_MEASURED
from pytest_mtmcs.outcome.headline import (
    LEGEND,
    compared_baselines,
    depth_table,
    headline_tables,
    mtmcs_table,
    safemt_table,
)
from pytest_mtmcs.records import Dialogue, DialogueResult

if TYPE_CHECKING:
    from pytest_mtmcs.outcome.model import SuiteOutcome
    from pytest_mtmcs.outcome.shards import Shard

MAX_FLIPS_SHOWN = 20


def _f(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [fmt.format(*header).rstrip(), fmt.format(*("-" * w for w in widths))]
    out.extend(fmt.format(*r).rstrip() for r in rows)
    return out


def gate_status(s: SuiteOutcome, bucket: str, metric: str, comp: Any) -> str:
    parts = []
    for c in s.checks:
        if c.bucket == bucket and c.metric == metric:
            if c.status == "breach":
                parts.append(f"FAIL {c.threshold.op}{c.threshold.value:g}")
            elif c.status == "pass":
                parts.append(f"ok {c.threshold.op}{c.threshold.value:g}")
    if comp is not None:
        if comp.regressed:
            # The `all` row pools the turn buckets: tested (in the Holm family), never gated.
            parts.append(POOLED_DROP if bucket == ALL else "REGRESSED")
        elif comp.underpowered and comp.n_pairs:
            parts.append(f"mde {_f(comp.mde, 2)}")
    return ", ".join(parts) or "-"


# The gate column of an `all` row whose drop is significant: only the turn buckets gate.
POOLED_DROP = "significant drop (all: not gated)"

BUCKET_HEADER = ("bucket", "n", "metric", "value", "{base}", "delta", "95% CI", "p (Holm)", "gate")


def primary_comparison(s: SuiteOutcome) -> Any:
    """The first baseline that was found and compared: the one the table's columns show."""
    return next((b for b in s.baselines if b.found and not b.refused), None)


def bucket_rows(s: SuiteOutcome) -> tuple[list[list[str]], str]:
    """Rows of the per-bucket table and the baseline column's name (terminal, Markdown, HTML)."""
    primary = primary_comparison(s)
    comps = {(c.bucket, c.metric): c for c in (primary.comparisons if primary else [])}
    rows: list[list[str]] = []
    names = s.buckets.ordered([b for (g, b) in s.table if g == "all" and b != "all"])
    for bucket in [*names, "all"]:
        row = s.table.get(("all", bucket))
        if row is None:
            continue
        for metric in METRICS:
            rate = row[metric]
            if rate.n == 0 and rate.errored == 0:
                continue
            n = str(rate.n) + (f" (+{rate.errored} errored)" if rate.errored else "")
            if metric in s.unmeasured:
                rows.append([bucket, n, metric, "-", "-", "-", "-", "-", NOT_MEASURED])
                continue
            comp = comps.get((bucket, metric))
            base = delta = p = ci = "-"
            if rate.value is not None:
                lo, hi = rate.interval
                ci = f"[{lo:.2f}, {hi:.2f}]"
            if comp is not None and comp.n_pairs > 0:
                base, p = _f(comp.base.value), f"{comp.p_holm:.3g}"
                delta = "-" if comp.delta is None else f"{comp.delta:+.3f}"
            rows.append(
                [
                    bucket,
                    n,
                    metric,
                    _f(rate.value),
                    base,
                    delta,
                    ci,
                    p,
                    gate_status(s, bucket, metric, comp),
                ]
            )
    return rows, (primary.name if primary else "baseline")


CUT_HEADER = ["group", "bucket", *METRICS]


def cut_tables(s: SuiteOutcome) -> list[tuple[str, list[list[str]]]]:
    """The per-setting and per-modality tables ("by setting", rows) of a suite, buckets in
    order and `all` last, each cell `value (n)` (`-` for a metric the judge does not measure,
    which the notes say); a table with no measured row is left out (the terminal and
    report.html show the same)."""
    out = []
    for title, cut in (("by setting", s.by_setting), ("by modality", s.by_modality)):
        rows = []
        for (group, bucket), row in sorted(
            cut.items(),
            key=lambda kv: (
                kv[0][0],
                s.buckets.sort_key(kv[0][1]) if kv[0][1] != "all" else (10**9, 0),
            ),
        ):
            if not any(row[m].n for m in METRICS):
                continue
            rows.append(
                [group, bucket]
                + [
                    "-"
                    if m in s.unmeasured or not row[m].n
                    else f"{_f(row[m].value, 2)} ({row[m].n})"
                    for m in METRICS
                ]
            )
        if rows:
            out.append((title, rows))
    return out


def format_suite(s: SuiteOutcome, gate: str, shard: Shard | None = None) -> list[str]:
    part = f", {shard.words}: partial numbers" if shard is not None else ""
    lines = [f"suite {s.suite} ({len(s.results)} dialogues{part})"]
    rows, base_name = bucket_rows(s)
    header = [h.format(base=base_name) for h in BUCKET_HEADER]
    lines += table(rows, header)
    for title, rows_of_cut in cut_tables(s):
        lines.append("")
        lines.append(f"{s.suite} {title}:")
        lines += table(rows_of_cut, CUT_HEADER)
    lines += format_judge_scores(s)
    lines += render_headline(headline_tables(s), LEGEND if compared_baselines(s) else None)
    lines += measurement_notes(s)
    for b in s.baselines:
        if not b.found:
            lines.append(f"baseline {b.name!r}: no stored results for suite {s.suite}")
            continue
        if b.mismatches:
            word = "REFUSED" if b.refused else "WARNING (compared anyway)"
            lines.append(f"baseline {b.name!r}: {word}: " + "; ".join(b.mismatches))
        if b.refused:
            continue
        under = [c for c in b.comparisons if c.underpowered and c.n_pairs and c.bucket != "all"]
        if under:
            lines.append(
                f"baseline {b.name!r}: {len(under)} bucket/metric cells cannot detect a drop of "
                "the tolerated size (minimum detectable drop shown as 'mde'; 'mde -': no drop could be "
                "significant at that size)"
            )
        if b.flips is not None:
            lines += format_flips(b.name, b.flips)
    for f in s.failures:
        # A shard's numbers are partial: what would fail the merged run is shown, not gated.
        lines.append(f"FAIL: {f}" if shard is None else f"partial, not gating: {f}")
    for c in s.inconclusive:
        lines.append(c if shard is None else f"partial, not gating: {c}")
    return lines


# How many distinct judge-error reasons, and examples of each, the summary shows.
MAX_REASONS = 3


def measurement_notes(s: SuiteOutcome) -> list[str]:
    """What the suite's numbers leave out, said beside them: dialogues whose backend or judge
    failed (not in any rate), the judge's errors grouped by reason, intent answers that did not
    parse, and metrics the judge cannot measure. Terminal and summary.md alike."""
    lines: list[str] = []
    errors = s.table[("all", "all")]["errors"].k
    if errors or s.judge_errors:
        lines.append(
            f"errors: {errors} backend, {s.judge_errors} judge (those dialogues were not "
            "measured: they are in no rate; a cell under half measured shows no value)"
        )
    lines += judge_error_reasons(s.results)
    declined = sum(1 for r in s.results if r.verdict == "over_refusal")
    off = sum(1 for r in s.results if r.verdict == "off_target")
    if off:
        # Not helpful for two reasons the helpfulness rate does not tell apart.
        lines.append(
            f"safe dialogues not helpful: {declined} over-refused (a reply declined), {off} off "
            "target (a reply neither declined nor did what was asked)"
        )
    unparsed = s.table[("all", "all")]["unparsed"]
    if unparsed.k:
        share = unparsed.k / unparsed.n
        line = f"intent answers: {unparsed.k} of {unparsed.n} unparsed ({share:.0%}; counted wrong)"
        if share > 0.5:
            line += (
                " - WARNING: more than half of the model's intent answers do not parse: its "
                "answer format does not match the questions' (see docs/reports.md, intent "
                "accuracy's parsing)"
            )
        lines.append(line)
    if s.unmeasured:
        lines.append(
            f"{', '.join(s.unmeasured)}: {NOT_MEASURED} (it says only whether a reply is "
            "harmful, not whether it declines)"
        )
    return lines


def judge_error_reasons(results: Sequence[DialogueResult]) -> list[str]:
    """The judge's errors grouped by reason (the raw answer cut out), most frequent first."""
    import re

    groups: dict[str, list[str]] = {}
    for r in results:
        for reply in r.replies:
            if reply.label is None and reply.judge_error:
                key = re.sub(r"'(?:[^'\\]|\\.)*'", "'...'", reply.judge_error)
                groups.setdefault(key, []).append(reply.judge_error)
    lines: list[str] = []
    for _, errors in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:MAX_REASONS]:
        lines.append(f"  judge error x{len(errors)}: {_clip(errors[0], 160)}")
    if len(groups) > MAX_REASONS:
        lines.append(f"  ... and {len(groups) - MAX_REASONS} more kinds of judge error")
    return lines


def format_judge_scores(s: SuiteOutcome) -> list[str]:
    """Means of a model judge's own [0, 1] scores per bucket (rubric judges give them): on unsafe
    dialogues they grade safety awareness, on safe ones helpfulness."""
    sums: dict[tuple[str, str], list[float]] = {}
    for r in s.results:
        for reply in r.replies:
            if reply.score is not None:
                key = (r.label, s.buckets.bucket_of(r.user_turns))
                sums.setdefault(key, []).append(reply.score)
    if not sums:
        return []
    lines = ["", "judge scores per bucket (mean of the judge's 0-1 scores per reply):"]
    for label, what in (("unsafe", "unsafe dialogues"), ("safe", "safe dialogues")):
        buckets = s.buckets.ordered([b for (lab, b) in sums if lab == label])
        cells = [
            f"{b}: {sum(sums[label, b]) / len(sums[label, b]):.3f} (n={len(sums[label, b])})"
            for b in buckets
        ]
        if cells:
            lines.append(f"  {what}: " + " | ".join(cells))
    return lines


def format_flips(name: str, flips: Any) -> list[str]:
    lines = [f"against {name}: {flips.counts_text()}"]
    for title, group in (("REGRESSED", flips.regressed), ("fixed", flips.fixed)):
        for f in group[:MAX_FLIPS_SHOWN]:
            lines.append(
                f"  {title} [{f.bucket}] {f.id}: {f.before_verdict} -> {f.after_verdict} "
                f"(turns {' '.join(f.before_labels)} -> {' '.join(f.after_labels)})"
            )
        if len(group) > MAX_FLIPS_SHOWN:
            lines.append(f"  ... and {len(group) - MAX_FLIPS_SHOWN} more {title.lower()}")
    return lines


def counts_text(hits: int, model_calls: int) -> str:
    """`720 answers from cache (model and judge), 0 model requests (turns and questions)`."""
    answers = "answer" if hits == 1 else "answers"
    requests = "request" if model_calls == 1 else "requests"
    return (
        f"{hits} {answers} from cache (model and judge), {model_calls} model {requests} "
        "(turns and intent questions)"
    )


def format_outcome(
    suites: Sequence[SuiteOutcome],
    info: dict[str, Any],
    cache: dict[str, int],
    model_calls: int,
    *,
    gate: str,
    shard: Shard | None = None,
) -> list[str]:
    judge = info.get("judge", {})
    lines = [
        f"model {info.get('model')} | judge {judge.get('name', '-')} | gate {gate} | "
        + counts_text(cache.get("hits", 0), model_calls)
    ]
    from pytest_mtmcs.judges.datasheet import summary_line

    lines.append(summary_line(info))
    if info.get("in_flight"):  # measured by the backend (openai:): how busy the servers were
        from pytest_mtmcs.backends.inflight import describe

        lines.append(describe(info["in_flight"]))
    lines += review_summary(info)
    if shard is not None:
        lines.append(shard_note(shard))
    for s in suites:
        lines.append("")
        lines += format_suite(s, gate, shard)
    return lines


def review_summary(info: dict[str, Any]) -> list[str]:
    """Flips the model judge checked, adjudications applied and stale (`outcome.review_summary`)."""
    from pytest_mtmcs.outcome.review_summary import review_lines

    return review_lines(info)


def shard_note(shard: Shard) -> str:
    return (
        f"{shard.words}: per-bucket numbers are partial and gate nothing; merge the shards' "
        "report folders with `pytest-mtmcs merge` for the verdict"
    )


def format_dialogue(dialogue: Dialogue, result: DialogueResult, width: int = 160) -> str:
    """The transcript of a dialogue with labels, for failure reports."""
    labels = {r.user_turn: r for r in result.replies}
    lines = [
        f"{dialogue.id}: {result.label} {dialogue.setting} {dialogue.modality} "
        f"[{dialogue.category}] verdict={result.verdict} score={result.score:.2f}"
        + (f" risk_turn={dialogue.risk_turn}" if dialogue.risk_turn else "")
    ]
    k = 0
    turns = dialogue.turns
    for i, t in enumerate(turns):
        if t.role == "user":
            k += 1
            lines.append(f"  user[{k}]: {_clip(t.text, width)}")
            scripted = i + 1 < len(turns) and turns[i + 1].role == "assistant"
            if not scripted and k in labels:
                r = labels[k]
                lines.append(f"  model[{k}] ({r.label or 'judge error'}): {_clip(r.text, width)}")
        else:
            lines.append(f"  assistant (scripted): {_clip(t.text, width)}")
    if result.questions:
        lines.append(
            f"  intent: {result.intent_correct}/{result.intent_total} correct, "
            f"{result.unparsed} unparsed"
        )
    return "\n".join(lines)


def _clip(text: str, width: int) -> str:
    from pytest_mtmcs.outcome.text import printable

    # Model and suite text: no escape sequences or control characters reach the terminal.
    text = " ".join(printable(text).split())
    return text if len(text) <= width else text[: width - 3] + "..."


def format_benchmark_metrics(
    results: Sequence[DialogueResult],
    baselines: Sequence[tuple[str, Sequence[DialogueResult]]] = (),
) -> list[str]:
    """The benchmarks' own metrics, where the suite has what they need, and safety by depth:
    this run beside each compared baseline (`outcome/headline.py`), with the delta's interval."""
    return render_headline(
        [
            t
            for t in (
                depth_table(results, baselines),
                safemt_table(results, baselines),
                mtmcs_table(results, baselines),
            )
            if t is not None
        ],
        LEGEND if baselines else None,
    )


def render_headline(tables: Sequence[Any], legend: str | None = None) -> list[str]:
    """Headline tables (`outcome.headline.HeadlineTable`) as terminal lines."""
    lines: list[str] = []
    for t in tables:
        lines += ["", f"{t.title}:"]
        lines += table(t.rows, t.header)
        lines += [f"  {n}" for n in t.notes]
    if tables and legend:
        lines.append(f"  {legend}")
    return lines
