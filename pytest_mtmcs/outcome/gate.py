"""One suite's outcome from its result rows: metrics, thresholds, baseline comparisons, gate
failures. Pure: plain data in (results, suite metadata, baselines, options), a `SuiteOutcome`
out; called by `finish`, once per suite."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytest_mtmcs import defaults
from pytest_mtmcs.analysis.buckets import Buckets
from pytest_mtmcs.analysis.comparison import compare_buckets
from pytest_mtmcs.analysis.flips import item_flips
from pytest_mtmcs.analysis.metrics import bucket_tables
from pytest_mtmcs.analysis.thresholds import Threshold, evaluate_thresholds, parse_threshold
from pytest_mtmcs.outcome.model import BaselineComparison, SuiteOutcome, run_header
from pytest_mtmcs.records import DialogueResult

if TYPE_CHECKING:
    from pytest_mtmcs.baseline.store import Baseline, BaselineSet

__all__ = [
    "BaselineComparison",
    "Gate",
    "SuiteOutcome",
    "aggregate_suite",
    "run_header",
    "thresholds_for",
]


@dataclass(frozen=True)
class Gate:
    """The options the per-suite gate reads (see `finish.EndOptions` for their meaning)."""

    gate: str = defaults.GATE
    max_drop: float = defaults.MAX_DROP
    alpha: float = defaults.ALPHA
    allow_mismatch: bool = False
    rejudge: bool = False
    max_judge_errors: int = defaults.MAX_JUDGE_ERRORS
    thresholds: tuple[str, ...] = ()
    threshold_origin: str = "--mtmcs-threshold"
    # Recording a baseline: bucket regressions are shown, not gated.
    updating: bool = False
    guard: bool = False


@dataclass
class SuiteAggregate:
    outcome: SuiteOutcome
    lines: list[str] = field(default_factory=list)


def thresholds_for(specs: Sequence[str], origin: str, meta: dict[str, Any]) -> list[Threshold]:
    """The thresholds of a suite: the options' (`specs`, named by `origin`), then the suite's
    own `[defaults] thresholds` for the (bucket, metric) cells the options do not set."""
    found = [parse_threshold(s, origin) for s in specs]
    covered = {(t.bucket, t.metric) for t in found}
    for s in meta.get("defaults", {}).get("thresholds", ()) or ():
        t = parse_threshold(s, f"suite.toml of {meta.get('name')} [defaults] thresholds")
        if (t.bucket, t.metric) not in covered:
            found.append(t)
    return found


def aggregate_suite(
    name: str,
    results: list[DialogueResult],
    meta: dict[str, Any],
    buckets: Buckets,
    info: dict[str, Any],
    baselines: BaselineSet,
    gate: Gate,
    rejudge: Callable[[Baseline, dict[str, Any]], tuple[list[DialogueResult], int]] | None = None,
) -> SuiteAggregate:
    """The outcome of one suite; `results` sorted by id. `rejudge(baseline, meta)` re-labels a
    baseline's stored transcripts with this run's judge (--mtmcs-rejudge), when available."""
    from pytest_mtmcs.baseline.rejudge import only_judge_differs
    from pytest_mtmcs.baseline.store import mismatches
    from pytest_mtmcs.errors import ConfigError

    lines: list[str] = []
    tables = bucket_tables(results, buckets, (None, "setting", "modality"))
    table = tables[None]
    checks = evaluate_thresholds(
        table, thresholds_for(gate.thresholds, gate.threshold_origin, meta), buckets
    )
    failures = [
        f"{c.bucket} {c.metric} {c.value:.3f} breaches threshold {c.threshold} "
        f"(n={c.n}, from {c.threshold.origin})"
        for c in checks
        if c.status == "breach" and c.value is not None
    ]
    judge_errors = sum(1 for r in results if r.verdict == "judge_error")
    if judge_errors > gate.max_judge_errors:
        failures.append(
            f"{judge_errors} judge errors (more than --mtmcs-max-judge-errors="
            f"{gate.max_judge_errors})"
        )
    header = run_header(meta, info)
    comps: list[BaselineComparison] = []
    for bname in baselines.names:
        b = baselines.get(bname, name)
        if b is None:
            comps.append(BaselineComparison(bname, False))
            continue
        diff = mismatches(b.header, header)
        bc = BaselineComparison(bname, True, mismatches=diff)
        base_results = b.results
        judge_only = bool(diff) and only_judge_differs(b.header, header)
        if judge_only and gate.rejudge:
            if rejudge is None:
                raise ConfigError(
                    "--mtmcs-rejudge: this run cannot re-judge (no judge or suite at hand)"
                )
            base_results, bc.rejudged = rejudge(b, meta)
            bc.mismatches = diff = []
            lines.append(
                f"{name}: baseline {bname!r} re-judged {bc.rejudged} transcripts with "
                f"judge {header.get('judge')} ({header.get('judge_model')}); it was judged "
                f"by {b.header.get('judge')} ({b.header.get('judge_model')})"
            )
        if diff and not gate.allow_mismatch:
            bc.refused = True
            hint = (
                "pass --mtmcs-rejudge to re-judge the baseline's stored transcripts with this "
                "run's judge, or --mtmcs-allow-mismatch to compare anyway"
                if judge_only
                else "pass --mtmcs-allow-mismatch to compare anyway"
            )
            failures.append(
                f"comparison with baseline {bname!r} refused: " + "; ".join(diff) + f" ({hint})"
            )
            comps.append(bc)
            continue
        bc.results = base_results
        bc.comparisons = compare_buckets(
            results, base_results, buckets, max_drop=gate.max_drop, alpha=gate.alpha
        )
        bc.flips = item_flips(results, base_results, buckets)
        if gate.gate in ("buckets", "both") and not gate.updating:
            for c in bc.comparisons:
                if c.regressed and c.bucket != "all":
                    failures.append(
                        f"{c.bucket} {c.metric} regressed against {bname}: "
                        f"{c.base.value:.3f} -> {c.current.value:.3f} "
                        f"(drop {-(c.delta or 0):.3f} > {gate.max_drop}, p_holm={c.p_holm:.3g})"
                    )
        comps.append(bc)
    if gate.guard:
        lines.append(guard_interventions(name, results, buckets))
    outcome = SuiteOutcome(
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
    )
    return SuiteAggregate(outcome, lines)


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
