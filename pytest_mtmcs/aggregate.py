"""End of run, once, on the controller: metrics, thresholds, baseline comparisons, the gate,
baseline writes and reports, from the plain results the tests reported."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytest_mtmcs import options as opts
from pytest_mtmcs.buckets import Buckets
from pytest_mtmcs.compare import BucketComparison, Flips, compare_buckets, item_flips
from pytest_mtmcs.errors import ConfigError
from pytest_mtmcs.metrics import bucket_table
from pytest_mtmcs.records import DialogueResult
from pytest_mtmcs.thresholds import ThresholdCheck, evaluate_thresholds, parse_threshold

if TYPE_CHECKING:
    import pytest

    from pytest_mtmcs.session import MtmcsSession


@dataclass
class BaselineComparison:
    name: str
    found: bool
    comparisons: list[BucketComparison] = field(default_factory=list)
    flips: Flips | None = None
    mismatches: list[str] = field(default_factory=list)
    refused: bool = False
    # Dialogues of the baseline re-judged with this run's judge (--mtmcs-rejudge), else None.
    rejudged: int | None = None
    # The baseline's results as compared: re-judged ones when rejudged is set.
    results: list[DialogueResult] | None = None


@dataclass
class SuiteOutcome:
    suite: str
    meta: dict[str, Any]
    buckets: Buckets
    results: list[DialogueResult]
    table: dict[tuple[str, str], dict[str, Any]]
    by_setting: dict[tuple[str, str], dict[str, Any]]
    by_modality: dict[tuple[str, str], dict[str, Any]]
    checks: list[ThresholdCheck]
    baselines: list[BaselineComparison]
    judge_errors: int
    failures: list[str]


@dataclass
class Outcome:
    lines: list[str]
    failed: bool
    suites: list[SuiteOutcome]


def thresholds_for(config: pytest.Config, meta: dict[str, Any]) -> list[Any]:
    cli = opts.raw(config, "--mtmcs-threshold") or ()
    origin = "--mtmcs-threshold" if config.getoption("mtmcs_threshold") else "ini mtmcs_threshold"
    found = [parse_threshold(s, origin) for s in cli]
    covered = {(t.bucket, t.metric) for t in found}
    for s in meta.get("defaults", {}).get("thresholds", ()) or ():
        t = parse_threshold(s, f"suite.toml of {meta.get('name')} [defaults] thresholds")
        if (t.bucket, t.metric) not in covered:
            found.append(t)
    return found


def run_header(meta: dict[str, Any], info: dict[str, Any]) -> dict[str, str]:
    from pytest_mtmcs.baseline import make_header

    return make_header(
        suite=meta,
        model=info.get("model"),
        fingerprint=info.get("fingerprint", {}),
        judge=info.get("judge", {}),
        settings=meta.get("settings", {}),
    )


def aggregate(config: pytest.Config, session: MtmcsSession, infos: list[dict[str, Any]]) -> Outcome:
    from pytest_mtmcs.baseline import BaselineSet, mismatches
    from pytest_mtmcs.rejudge import only_judge_differs
    from pytest_mtmcs.summary import format_outcome

    metas: dict[str, dict[str, Any]] = {}
    info: dict[str, Any] = {}
    for i in infos:
        for name, m in i.get("suites", {}).items():
            metas.setdefault(name, m)
        if "fingerprint" in i and "fingerprint" not in info:
            info = i
    # An xdist controller never loads the suites: their defaults (buckets) come from the workers.
    from pytest_mtmcs.session import SuiteMeta

    for name, m in metas.items():
        session.suite_meta.setdefault(name, SuiteMeta(**m))
    cache = {"hits": 0, "misses": 0, "writes": 0}
    model_calls = 0
    for i in infos:
        for k in cache:
            cache[k] += i.get("cache", {}).get(k, 0)
        model_calls += i.get("model_calls", 0)

    by_suite: dict[str, list[DialogueResult]] = defaultdict(list)
    for r in session.results.values():
        by_suite[r.suite].append(r)

    gate = opts.value(config, "--mtmcs-gate")
    max_drop = float(opts.value(config, "--mtmcs-max-drop"))
    alpha = float(opts.value(config, "--mtmcs-alpha"))
    allow_mismatch = bool(opts.value(config, "--mtmcs-allow-mismatch"))
    rejudge = bool(opts.value(config, "--mtmcs-rejudge"))
    extra_lines: list[str] = []
    updating = bool(getattr(config.option, "update_snapshots", False))
    baselines: BaselineSet = session.baselines()

    suites: list[SuiteOutcome] = []
    for name in sorted(by_suite):
        results = sorted(by_suite[name], key=lambda r: r.id)
        meta = metas.get(name, {"name": name, "defaults": {}})
        buckets = Buckets.parse(session.bucket_spec(name))
        table = bucket_table(results, buckets)
        checks = evaluate_thresholds(table, thresholds_for(config, meta), buckets)
        failures = [
            f"{c.bucket} {c.metric} {c.value:.3f} breaches threshold {c.threshold} "
            f"(n={c.n}, from {c.threshold.origin})"
            for c in checks
            if c.status == "breach" and c.value is not None
        ]
        judge_errors = sum(1 for r in results if r.verdict == "judge_error")
        max_judge_errors = int(opts.value(config, "--mtmcs-max-judge-errors") or 0)
        if judge_errors > max_judge_errors:
            failures.append(
                f"{judge_errors} judge errors (more than --mtmcs-max-judge-errors="
                f"{max_judge_errors})"
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
            if judge_only and rejudge:
                base_results, bc.rejudged = _rejudge(config, session, b, meta)
                bc.mismatches = diff = []
                extra_lines.append(
                    f"{name}: baseline {bname!r} re-judged {bc.rejudged} transcripts with "
                    f"judge {header.get('judge')} ({header.get('judge_model')}); it was judged "
                    f"by {b.header.get('judge')} ({b.header.get('judge_model')})"
                )
            if diff and not allow_mismatch:
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
                results, base_results, buckets, max_drop=max_drop, alpha=alpha
            )
            bc.flips = item_flips(results, base_results, buckets)
            if gate in ("buckets", "both") and not updating:
                for c in bc.comparisons:
                    if c.regressed and c.bucket != "all":
                        failures.append(
                            f"{c.bucket} {c.metric} regressed against {bname}: "
                            f"{c.base.value:.3f} -> {c.current.value:.3f} "
                            f"(drop {-(c.delta or 0):.3f} > {max_drop}, p_holm={c.p_holm:.3g})"
                        )
            comps.append(bc)
        guard_line = _guard_interventions(config, name, results, buckets)
        if guard_line:
            extra_lines.append(guard_line)
        suites.append(
            SuiteOutcome(
                suite=name,
                meta=meta,
                buckets=buckets,
                results=results,
                table=table,
                by_setting=bucket_table(results, buckets, by="setting"),
                by_modality=bucket_table(results, buckets, by="modality"),
                checks=checks,
                baselines=comps,
                judge_errors=judge_errors,
                failures=failures,
            )
        )

    lines: list[str] = []
    if updating and baselines.primary:
        lines.extend(_update_baselines(config, session, suites, info))
    lines = format_outcome(suites, info, cache, model_calls, gate=gate) + extra_lines + lines
    report_dir = opts.value(config, "--mtmcs-report")
    if report_dir:
        from pytest_mtmcs.report import write_report

        lines.append(f"report written to {write_report(report_dir, suites, info, session)}")
    failed = any(s.failures for s in suites)
    return Outcome(lines, failed, suites)


def _judge_for_rejudge(config: pytest.Config, session: MtmcsSession) -> Any:
    """This run's judge; created here on an xdist controller, which runs no dialogues."""
    judge = getattr(session, "_judge", None)
    if judge is None:
        from pytest_mtmcs.judges import create_judge

        judge = create_judge(str(opts.value(config, "--mtmcs-judge")), session.judge_options())
        session._judge = judge
    return judge


def _rejudge(
    config: pytest.Config, session: MtmcsSession, baseline: Any, meta: dict[str, Any]
) -> tuple[list[DialogueResult], int]:
    """The baseline's results re-labelled by this run's judge, from its stored transcripts."""
    from pytest_mtmcs.rejudge import rejudge_baseline

    spec = meta.get("spec")
    if not spec:
        raise ConfigError(
            f"--mtmcs-rejudge: cannot find the suite {meta.get('name')!r} to re-judge"
        )
    suite = session.load_suite(str(spec))
    placement = str(meta.get("settings", {}).get("image_placement") or "last")
    return rejudge_baseline(
        baseline,
        {d.id: d for d in suite.dialogues},
        _judge_for_rejudge(config, session),
        image_placement=placement,
    )


def _guard_interventions(
    config: pytest.Config, suite: str, results: list[DialogueResult], buckets: Buckets
) -> str | None:
    """`guard interventions per bucket: 1: 2 input, 0 output | ...` when a guard is set."""
    if not opts.value(config, "--mtmcs-guard"):
        return None
    from pytest_mtmcs.guard import interventions_in

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


def _update_baselines(
    config: pytest.Config, session: MtmcsSession, suites: list[SuiteOutcome], info: dict[str, Any]
) -> list[str]:
    from pathlib import Path

    from pytest_mtmcs.baseline import write_baseline

    baselines = session.baselines()
    name = baselines.primary
    assert name is not None
    lines: list[str] = []
    partial = bool(config.option.keyword or config.option.markexpr) or any(
        "::" in str(a) for a in config.args
    )
    for s in suites:
        errors = [r.id for r in s.results if r.verdict == "error"]
        if errors:
            msg = (
                f"baseline {name!r} for {s.suite} NOT updated: {len(errors)} dialogues had "
                f"backend errors (first: {errors[0]}); fix the backend and re-run"
            )
            s.failures.append(msg)
            lines.append(msg)
            continue
        header = run_header(s.meta, info)
        path = write_baseline(
            baselines.root,
            name,
            s.suite,
            header,
            s.results,
            keep_others=partial,
        )
        rel = Path(path)
        try:
            rel = rel.relative_to(Path(config.rootpath))
        except ValueError:
            pass
        how = "merged into" if partial else "written to"
        lines.append(f"baseline {name!r}: {len(s.results)} dialogues {how} {rel}")
        lines.extend(_update_transcripts(config, baselines.root, name, s, header, partial))
    if not suites:
        raise ConfigError("nothing to record")
    return lines


def _update_transcripts(
    config: pytest.Config,
    root: Any,
    name: str,
    s: SuiteOutcome,
    header: dict[str, str],
    partial: bool,
) -> list[str]:
    """Stores the reply texts beside the baseline (--mtmcs-baseline-transcripts), or removes a
    transcripts file that no longer matches the baseline just written."""
    from pytest_mtmcs.transcripts import transcripts_path, write_transcripts

    path = transcripts_path(root, name, s.suite)
    if opts.value(config, "--mtmcs-baseline-transcripts"):
        write_transcripts(path, s.results, suite=s.suite, header=header, keep_others=partial)
        return [f"baseline {name!r}: transcripts stored in {path.name} (for --mtmcs-rejudge)"]
    if path.exists():
        path.unlink()
        return [
            f"baseline {name!r}: removed stale {path.name} (re-record with "
            "--mtmcs-baseline-transcripts to keep transcripts)"
        ]
    return []
