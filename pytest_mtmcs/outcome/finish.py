"""The end of a run as one pure step: result rows + suite metadata + baselines + options in; the
outcome, gate verdict, summary lines, report files and baseline files out.

`finish` is called once per run by the pytest session (the single process, or the xdist
controller, from the plain data its workers sent) and by `pytest-mtmcs merge` (from the report
folders of N shards). No pytest object enters it: a session and a merge that hand it the same rows
and options get the same summary, the same report files and the same baseline files.

Modules at the end of a run form a line: harness controller / cli merge -> finish -> gate,
terminal, report, record -> model (plain objects). Nothing here imports the harness.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_mtmcs.analysis.buckets import Buckets, bucket_spec
from pytest_mtmcs.analysis.flips import flip_of
from pytest_mtmcs.outcome.gate import aggregate_suite
from pytest_mtmcs.outcome.model import EndOptions, RunOutcome, SuiteOutcome
from pytest_mtmcs.outcome.test_status import dialogue_test_status
from pytest_mtmcs.outcome.verdict import GateVerdict, decide, not_run
from pytest_mtmcs.records import DialogueResult

if TYPE_CHECKING:
    from pytest_mtmcs.baseline.store import Baseline, BaselineSet
    from pytest_mtmcs.records import Dialogue

CACHE_KEYS = ("hits", "misses", "writes")


@dataclass(frozen=True)
class Sources:
    """Optional ways to reach what the rows do not hold; each may be None.

    - `dialogues(suite)`: the suite's dialogues by id (user text in transcripts.jsonl, re-judging);
    - `judge()`: this run's judge (re-judging a baseline's stored transcripts);
    - `transcripts(suite)`: ready transcripts.jsonl lines per dialogue id (a merge copies the
      shards' lines instead of rebuilding them without the suite).
    """

    dialogues: Callable[[str], Mapping[str, Dialogue]] | None = None
    judge: Callable[[], Any] | None = None
    transcripts: Callable[[str], Mapping[str, Sequence[str]]] | None = None


@dataclass
class RunInfo:
    """The run's model, judge and counters, merged over the processes that ran dialogues."""

    info: dict[str, Any]
    suites: dict[str, dict[str, Any]]
    cache: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CACHE_KEYS, 0))
    model_calls: int = 0
    # Dialogue tests selected to run, per suite (every process sees the whole selection).
    selected: dict[str, int] = field(default_factory=dict)


def merge_infos(infos: Iterable[Mapping[str, Any]]) -> RunInfo:
    """One RunInfo from the `run_info()` of every process (or shard): suite metadata from the
    first that has it, model and judge from the first that ran a dialogue, counters summed, the
    keys of the adjudications applied united."""
    infos = list(infos)
    out = RunInfo(info={}, suites={})
    for i in infos:
        for name, m in (i.get("suites") or {}).items():
            out.suites.setdefault(name, dict(m))
        if "fingerprint" in i and "fingerprint" not in out.info:
            out.info = dict(i)
        for k in CACHE_KEYS:
            out.cache[k] += int((i.get("cache") or {}).get(k, 0))
        out.model_calls += int(i.get("model_calls", 0))
        for name, n in (i.get("selected") or {}).items():
            out.selected[name] = max(out.selected.get(name, 0), int(n))
    # Replicas of an openai: backend set aside during the run (every process's own lines).
    replicas = [line for i in infos for line in (i.get("replicas") or ())]
    # A cascade judge's counts (replies judged, escalated, failed there): every process's own.
    from pytest_mtmcs.judges.cascade import summary_counts

    if out.info:
        out.info["judge_counts"] = summary_counts(infos)
        # Requests in flight, measured by each process's backend: one figure for the run.
        from pytest_mtmcs.backends.inflight import combine

        in_flight = combine(i.get("in_flight") for i in infos)
        out.info.pop("in_flight", None)
        if in_flight:
            out.info["in_flight"] = in_flight
        if replicas:
            out.info["replicas"] = list(dict.fromkeys(replicas))
        # The exchange keys of the adjudications applied: every process's (every shard's), for
        # the lines of the file that matched no reply of the whole run (`run_summary`).
        matched = [i["adjudications_matched"] for i in infos if "adjudications_matched" in i]
        if matched:
            out.info["adjudications_matched"] = sorted(set().union(*matched))
    return out


def count_failed_tests(suites: Sequence[SuiteOutcome], options: EndOptions) -> int:
    """Dialogues a pytest run reports as failed or errored tests (`outcome.test_status`): a
    merge of shards counts them here; pytest counts its own. Flips are the one rule's against the
    primary baseline as compared."""
    return sum(
        1
        for s in suites
        for r, flip in dialogue_flips(s)
        if dialogue_test_status(
            r, flip, gate=options.gate, max_judge_errors=options.max_judge_errors
        ).outcome
        in ("failed", "error")
    )


def dialogue_flips(s: SuiteOutcome) -> list[tuple[DialogueResult, str]]:
    """Each result of a suite with its flip against the primary baseline as compared."""
    primary = s.baselines[0] if s.baselines else None
    compared = primary is None or not primary.refused
    before = {r.id: r for r in (primary.results or [])} if primary is not None else {}
    return [(r, flip_of(r, before.get(r.id), compared=compared)) for r in s.results]


def finish(
    rows: Iterable[DialogueResult],
    suites_meta: Mapping[str, Mapping[str, Any]],
    baselines: BaselineSet,
    options: EndOptions,
    run: RunInfo,
    sources: Sources = Sources(),
) -> RunOutcome:
    """Aggregates, gates, records the baseline and writes the report of one run's rows."""
    from pytest_mtmcs.outcome.terminal import format_outcome

    by_suite: dict[str, list[DialogueResult]] = defaultdict(list)
    for r in rows:
        by_suite[r.suite].append(r)
    info = run.info
    shard = options.shard
    rejudge = _rejudger(sources) if options.rejudge else None
    suites: list[SuiteOutcome] = []
    for name in sorted(by_suite):
        results = sorted(by_suite[name], key=lambda r: r.id)
        meta = dict(suites_meta.get(name) or {"name": name, "defaults": {}})
        buckets = Buckets.parse(bucket_spec(options.buckets, meta.get("defaults")))
        suites.append(
            aggregate_suite(name, results, meta, buckets, info, baselines, options, rejudge)
        )

    recorded_lines: list[str] = []
    files: list[Path] = []
    if options.update_baseline and baselines.primary and shard is None:
        from pytest_mtmcs.outcome.record import update_baselines

        recorded = update_baselines(
            baselines.root,
            baselines.primary,
            suites,
            info,
            partial=options.partial,
            transcripts=options.baseline_transcripts,
            shown_from=options.root,
        )
        recorded_lines.extend(recorded.lines)
        files.extend(recorded.files)
    test_failures = count_failed_tests(suites, options)
    verdict = gate_verdict(
        suites, options, test_failures, recorded=baselines.primary if recorded_lines else None
    )
    lines = (
        format_outcome(suites, info, run.cache, run.model_calls, gate=options.gate, shard=shard)
        + [str(line) for line in info.get("replicas") or ()]
        + [note for s in suites for note in s.notes]
        + recorded_lines
    )
    report_dir = None
    if options.report_dir:
        from pytest_mtmcs.outcome.report import write_report

        report_dir = write_report(
            options.report_dir,
            suites,
            info,
            baselines,
            verdict,
            dialogues=sources.dialogues,
            transcripts=sources.transcripts,
            shard=shard,
            rerecorded=baselines.primary if options.update_baseline else None,
        )
        lines.append(f"report written to {_shown(report_dir, options.root)}")
        if shard is not None:
            from pytest_mtmcs.outcome.shards import write_shard_files

            write_shard_files(
                report_dir,
                shard,
                [r for s in suites for r in s.results],
                shard_record(run, suites_meta, options, baselines),
            )
    return RunOutcome(
        lines=lines,
        verdict=verdict,
        suites=suites,
        test_failures=test_failures,
        report_dir=report_dir,
        baseline_files=files,
    )


def gate_verdict(
    suites: Sequence[SuiteOutcome],
    options: EndOptions,
    test_failures: int,
    recorded: str | None = None,
) -> GateVerdict:
    """The run's verdict from its suites' failures, inconclusive cells and failed tests
    (`recorded`: the baseline this run recorded, said where nothing else was checked)."""
    if options.shard is not None:
        # A shard's per-bucket numbers are partial: they neither pass nor fail a gate.
        return not_run(
            f"{options.shard.words}",
            "merge the shards' report folders with pytest-mtmcs merge",
            failed=False,
        )
    failures = [f"{s.suite}: {f}" if len(suites) > 1 else f for s in suites for f in s.failures]
    if test_failures:
        failures.append(
            f"{test_failures} dialogue tests failed or errored (backend or judge errors"
            + (", item regressions" if options.gate in ("items", "both") else "")
            + ")"
        )
    checked = list(dict.fromkeys(c for s in suites for c in s.checked))
    if not checked:
        checked = [
            f"baseline {recorded} recorded (nothing compared, no thresholds)"
            if recorded
            else "report only (no baseline compared, no thresholds)"
        ]
    inconclusive = [c for s in suites for c in s.inconclusive]
    return decide(failures, inconclusive, checked, fail_inconclusive=options.fail_inconclusive)


def _shown(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return str(path.relative_to(root))
        except ValueError:
            pass
    return str(path)


def shard_record(
    run: RunInfo,
    suites_meta: Mapping[str, Mapping[str, Any]],
    options: EndOptions,
    baselines: BaselineSet,
) -> dict[str, Any]:
    """What a shard's `shard.json` holds besides its number: the split, the run's identity
    (model, fingerprint, judge, suites with their hash, settings and defaults), its counters
    and the end-of-run options; everything `pytest-mtmcs merge` needs besides the rows."""
    info = run.info
    split = {k: v for k, v in (info.get("shard") or {}).items() if k not in ("k", "n")}
    # The adjudications file (as the run named it) and the keys of its lines that matched a reply
    # of this shard: the merge lists the lines that matched none of the whole run's.
    adjudications: dict[str, Any] = {}
    if info.get("adjudications"):
        adj = info["adjudications"]
        adjudications = {
            "adjudications": {"file": adj.get("file"), "lines": adj.get("lines", 0)},
            "adjudications_matched": list(info.get("adjudications_matched") or ()),
        }
    return {
        "split": split,
        "model": info.get("model"),
        "fingerprint": info.get("fingerprint", {}),
        "judge": info.get("judge", {}),
        "suites": {name: dict(m) for name, m in sorted(suites_meta.items())},
        "cache": dict(run.cache),
        "model_calls": run.model_calls,
        # A cascade judge's counts (judged / escalated / failed), summed again by the merge.
        "judge_counts": dict(info.get("judge_counts") or {}),
        **adjudications,
        "options": options.recorded(),
        "baselines": list(baselines.names),
    }


def _rejudger(
    sources: Sources,
) -> Callable[[Baseline, dict[str, Any]], tuple[list[DialogueResult], int]] | None:
    """Re-judges a baseline's stored transcripts with this run's judge, when the run has one."""
    if sources.judge is None or sources.dialogues is None:
        return None
    judge_of, dialogues_of = sources.judge, sources.dialogues

    def rejudge(baseline: Baseline, meta: dict[str, Any]) -> tuple[list[DialogueResult], int]:
        from pytest_mtmcs.baseline.rejudge import rejudge_baseline
        from pytest_mtmcs.errors import ConfigError

        placement = str(meta.get("settings", {}).get("image_placement") or "last")
        try:
            dialogues = dict(dialogues_of(str(meta.get("name"))))
        except ConfigError as exc:
            raise ConfigError(f"--mtmcs-rejudge: {exc}") from None
        return rejudge_baseline(
            baseline,
            dialogues,
            judge_of(),
            image_placement=placement,
        )

    return rejudge
