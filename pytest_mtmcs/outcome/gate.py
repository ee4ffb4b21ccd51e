"""One suite's outcome from its result rows: metrics, thresholds, baseline comparisons, gate
failures and inconclusive cells. Pure: plain data in (results, suite metadata, baselines,
options), a `SuiteOutcome` out; called by `finish`, once per suite."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pytest_mtmcs.analysis.buckets import ALL, Buckets
from pytest_mtmcs.analysis.comparison import BucketComparison, compare_buckets
from pytest_mtmcs.analysis.flips import item_flips
from pytest_mtmcs.analysis.metrics import bucket_tables, not_ok_dialogues
from pytest_mtmcs.analysis.thresholds import evaluate_thresholds, thresholds_for
from pytest_mtmcs.baseline.comparable import comparability, suite_change
from pytest_mtmcs.errors import ConfigError
from pytest_mtmcs.judges import NOT_MEASURED, unmeasured_metrics
from pytest_mtmcs.outcome.model import (
    BaselineComparison,
    EndOptions,
    GateCell,
    SuiteOutcome,
    run_header,
)
from pytest_mtmcs.records import DialogueResult

if TYPE_CHECKING:
    from pytest_mtmcs.baseline.store import Baseline, BaselineSet

# (baseline, suite metadata) -> (its results re-judged with this run's judge, how many)
Rejudge = Callable[["Baseline", dict[str, Any]], tuple[list[DialogueResult], int]]


def aggregate_suite(
    name: str,
    results: list[DialogueResult],
    meta: dict[str, Any],
    buckets: Buckets,
    info: dict[str, Any],
    baselines: BaselineSet,
    options: EndOptions,
    rejudge: Rejudge | None = None,
) -> SuiteOutcome:
    """The outcome of one suite; `results` sorted by id. `rejudge(baseline, meta)` re-labels a
    baseline's stored transcripts with this run's judge (--mtmcs-rejudge), when available."""
    tables = bucket_tables(results, buckets, (None, "setting", "modality"))
    table = tables[None]
    thresholds = thresholds_for(options.thresholds, options.threshold_origin, meta)
    checks = evaluate_thresholds(table, thresholds, buckets)
    unmeasured = unmeasured_metrics(info.get("judge") or {})
    cells: list[GateCell] = []
    failures: list[str] = []
    met = 0
    for c in checks:
        if c.status == "no data" and c.metric not in unmeasured:
            continue
        cell_name = f"{c.bucket}:{c.metric}{c.threshold.op}{c.threshold.value:g}"
        if c.metric in unmeasured:
            # The judge cannot measure it (a harm-only judge and helpfulness): whatever number
            # the table holds was not measured, so the threshold cannot pass.
            text = (
                f"{c.bucket} {c.metric}: threshold {c.threshold} cannot be checked: "
                f"{c.metric} is {NOT_MEASURED} (from {c.threshold.origin})"
            )
            failures.append(text)
            cells.append(GateCell(cell_name, "failed", text))
        elif c.status == "breach" and c.value is not None:
            text = (
                f"{c.bucket} {c.metric} {c.value:.3f} breaches threshold {c.threshold} "
                f"(n={c.n}, from {c.threshold.origin})"
            )
            failures.append(text)
            ids = not_ok_dialogues(results, _unit_metric(c.metric), buckets, c.bucket)
            cells.append(GateCell(cell_name, "failed", text, tuple(ids)))
        else:
            met += 1
            cells.append(
                GateCell(cell_name, "passed", f"{c.metric} {c.value:.3f} meets {c.threshold}")
            )
    checked = [f"{met} threshold checks met"] if met and not failures else []
    judge_errors = sum(1 for r in results if r.verdict == "judge_error")
    if judge_errors > options.max_judge_errors:
        text = (
            f"{judge_errors} judge errors (more than --mtmcs-max-judge-errors="
            f"{options.max_judge_errors})"
        )
        failures.append(text)
        ids = tuple(r.id for r in results if r.verdict == "judge_error")
        cells.append(GateCell("judge-errors", "failed", text, ids))
    header = run_header(meta, info)
    notes: list[str] = []
    inconclusive: list[str] = []
    comps: list[BaselineComparison] = []
    gating = options.gate in ("buckets", "both") and not options.update_baseline
    for bname in baselines.names:
        b = baselines.get(bname, name)
        if b is None:
            comps.append(BaselineComparison(bname, False))
            continue
        how = comparability(
            b.header, header, allow_mismatch=options.allow_mismatch, rejudge=options.rejudge
        )
        bc = BaselineComparison(bname, True, mismatches=list(how.diff))
        base_results = b.results
        if how.how == "rejudge":
            if rejudge is None:
                raise ConfigError(
                    "--mtmcs-rejudge: this run cannot re-judge (no judge or suite at hand)"
                )
            base_results, bc.rejudged = rejudge(b, meta)
            bc.mismatches = []
            notes.append(
                f"{name}: baseline {bname!r} re-judged {bc.rejudged} transcripts with "
                f"judge {header.get('judge')} ({header.get('judge_model')}); it was judged "
                f"by {b.header.get('judge')} ({b.header.get('judge_model')})"
            )
        if not how.compared and options.update_baseline:
            # Recording: nothing is gated against a baseline, and the primary one is being
            # replaced, so an incomparable one is a note, not a failure of the recording run.
            bc.refused = True
            bc.mismatches = []
            what = "this run re-records it" if bname == baselines.primary else "not gating"
            notes.append(f"{name}: baseline {bname!r} not compared ({'; '.join(how.diff)}); {what}")
            comps.append(bc)
            continue
        if not how.compared:
            bc.refused = True
            if how.judge_only:
                hint = (
                    "pass --mtmcs-rejudge to re-judge the baseline's stored transcripts with "
                    "this run's judge, or --mtmcs-allow-mismatch to compare anyway"
                )
            elif b.header.get("suite_hash", "-") != header.get("suite_hash", "-"):
                hint = suite_change(b.entries, [r.id for r in results], bname)
            else:
                hint = "pass --mtmcs-allow-mismatch to compare anyway"
            text = (
                f"comparison with baseline {bname!r} refused: " + "; ".join(how.diff) + f" ({hint})"
            )
            failures.append(text)
            cells.append(GateCell(f"baseline:{bname}", "failed", text))
            comps.append(bc)
            continue
        bc.results = base_results
        bc.comparisons = compare_buckets(
            results, base_results, buckets, max_drop=options.max_drop, alpha=options.alpha
        )
        bc.flips = item_flips(results, base_results, buckets)
        if gating:
            checked.append(f"no significant drop beyond {options.max_drop:g} against {bname}")
            bad, unsure = judge_cells(bc.comparisons, bname, options.max_drop)
            failures += bad
            inconclusive += unsure
            cells += comparison_cells(
                bc.comparisons, bname, results, buckets, options.max_drop, options.fail_inconclusive
            )
        comps.append(bc)
    if options.guard:
        notes.append(guard_interventions(name, results, buckets))
    return SuiteOutcome(
        suite=name,
        meta=meta,
        buckets=buckets,
        results=results,
        table=table,
        by_setting=tables["setting"],
        by_modality=tables["modality"],
        checks=checks,
        baselines=comps,
        judge_errors=judge_errors,
        failures=failures,
        inconclusive=inconclusive,
        checked=checked,
        notes=notes,
        unmeasured=unmeasured,
        cells=cells,
    )


def judge_cells(
    comparisons: list[BucketComparison], baseline: str, max_drop: float
) -> tuple[list[str], list[str]]:
    """(regressions, inconclusive cells) among a comparison's turn-bucket cells, one line each;
    the `all` rows are tested (they are in the Holm family) but not gated."""
    regressed = [
        f"{c.bucket} {c.metric} regressed against {baseline}: "
        f"{c.base.value:.3f} -> {c.current.value:.3f} "
        f"(drop {-(c.delta or 0):.3f} > {max_drop}, p_holm={c.p_holm:.3g})"
        for c in comparisons
        if c.regressed and c.bucket != ALL
    ]
    unsure = [
        inconclusive_sentence(c, baseline, max_drop)
        for c in comparisons
        if c.inconclusive and c.bucket != ALL
    ]
    return regressed, unsure


def comparison_cells(
    comparisons: list[BucketComparison],
    baseline: str,
    results: list[DialogueResult],
    buckets: Buckets,
    max_drop: float,
    fail_inconclusive: bool,
) -> list[GateCell]:
    """A gate cell per tested turn-bucket cell of a comparison: failed when it regressed,
    inconclusive (failed with --mtmcs-fail-inconclusive) when its drop is beyond the tolerance
    but not significant, else passed. A re-run of a failing cell runs its not-ok dialogues."""
    regressed, unsure = judge_cells(comparisons, baseline, max_drop)
    by_text = iter(regressed)
    by_sentence = iter(unsure)
    cells: list[GateCell] = []
    for c in comparisons:
        if c.bucket == ALL or not c.n_pairs:
            continue
        name = f"{c.bucket}:{c.metric}:vs:{baseline}"
        if c.regressed:
            ids = tuple(not_ok_dialogues(results, c.metric, buckets, c.bucket))
            cells.append(GateCell(name, "failed", next(by_text), ids))
        elif c.inconclusive:
            ids = tuple(not_ok_dialogues(results, c.metric, buckets, c.bucket))
            status = "failed" if fail_inconclusive else "inconclusive"
            cells.append(GateCell(name, status, next(by_sentence), ids))
        else:
            drop = -(c.delta or 0.0)
            cells.append(
                GateCell(
                    name,
                    "passed",
                    f"{c.base.value:.3f} -> {c.current.value:.3f} over {c.n_pairs} pairs "
                    f"(drop {drop:+.3f}, tolerated {max_drop:g})",
                )
            )
    return cells


def _unit_metric(metric: str) -> str:
    """The unit metric behind a threshold metric (`asr` is counted on safety's units)."""
    return "safety" if metric == "asr" else metric


def inconclusive_sentence(c: BucketComparison, baseline: str, max_drop: float) -> str:
    """What an inconclusive cell is, and what would decide it."""
    drop = -(c.delta or 0.0)
    power = (
        f"the smallest drop this bucket could show significant is {c.mde:.2f} (mde)"
        if c.mde is not None
        else "no drop in a bucket this small can be significant (no mde)"
    )
    need = c.pairs_needed()
    more = f"about {need} pairs" if need is not None else "more pairs"
    return (
        f"{c.bucket} {c.metric} against {baseline}: INCONCLUSIVE: {c.n_pairs} pairs, "
        f"{c.base.value:.3f} -> {c.current.value:.3f}, a drop of {drop:.3f} (> {max_drop:g}) "
        f"that is not significant (p_holm={c.p_holm:.3g}); {power}. To decide it: {more} "
        f"in this bucket, or an absolute threshold (--mtmcs-threshold='{c.bucket}:{c.metric}"
        f">=X'); --mtmcs-fail-inconclusive makes such a cell fail the gate"
    )


def guard_interventions(suite: str, results: list[DialogueResult], buckets: Buckets) -> str:
    """`guard interventions per bucket: 1: 2 input, 0 output | ...` (with --mtmcs-guard)."""
    from pytest_mtmcs.engine.guarded_backend import interventions_in

    found = interventions_in(results)
    bucket_of = {r.id: buckets.bucket_of(r.user_turns) for r in results}
    counts: dict[str, dict[str, int]] = {}
    for (did, _turn), stage in found.items():
        per = counts.setdefault(bucket_of[did], {"input": 0, "output": 0})
        per[stage] += 1
    names = list(
        dict.fromkeys(bucket_of[r.id] for r in sorted(results, key=lambda r: r.user_turns))
    )
    parts = [
        f"{b}: {counts.get(b, {}).get('input', 0)} input, {counts.get(b, {}).get('output', 0)} output"
        for b in names
    ]
    return f"{suite}: guard interventions (turns) per bucket: " + " | ".join(parts)
