"""The end of a run as one pure step: result rows + suite metadata + baselines + options in; the
outcome, gate verdict, summary lines, report files and baseline files out.

`finish` is called once per run by the pytest session (the single process, or the xdist
controller, from the plain data its workers sent) and by `pytest-mtmcs merge` (from the report
folders of N shards). No pytest object enters it: a session and a merge that hand it the same rows
and options get the same summary, the same report files and the same baseline files.

Modules at the end of a run form a line: session / merge -> finish -> aggregate, summary, report,
baseline_update -> outcome (plain objects). Nothing here imports the session.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_mtmcs import defaults
from pytest_mtmcs.analysis.buckets import DEFAULT, Buckets
from pytest_mtmcs.outcome.gate import Gate, aggregate_suite
from pytest_mtmcs.outcome.model import RunOutcome, SuiteOutcome
from pytest_mtmcs.outcome.shards import Shard
from pytest_mtmcs.records import DialogueResult

if TYPE_CHECKING:
    from pytest_mtmcs.baseline.store import Baseline, BaselineSet
    from pytest_mtmcs.records import Dialogue

CACHE_KEYS = ("hits", "misses", "writes")


@dataclass(frozen=True)
class EndOptions:
    """The options the end of a run reads, resolved (command line > ini > built-in default)."""

    gate: str = defaults.GATE
    max_drop: float = defaults.MAX_DROP
    alpha: float = defaults.ALPHA
    allow_mismatch: bool = False
    rejudge: bool = False
    max_judge_errors: int = defaults.MAX_JUDGE_ERRORS
    thresholds: tuple[str, ...] = ()
    threshold_origin: str = "--mtmcs-threshold"
    # --mtmcs-buckets; None: the suite's [defaults] buckets, else the built-in default.
    buckets: str | None = None
    # Record the first baseline name (--snapshot-update / merge --update-baseline).
    update_baseline: bool = False
    # Only some of the suite's dialogues ran (-k, -m, node ids): a recorded baseline is merged
    # into the stored one instead of replacing it.
    partial: bool = False
    baseline_transcripts: bool = False
    report_dir: str | None = None
    guard: bool = False
    # Paths in summary lines are shown relative to this folder (pytest's rootdir).
    root: Path | None = None
    # This run is one shard of N: numbers are partial, nothing gates on buckets, no baseline.
    shard: Shard | None = None

    def recorded(self) -> dict[str, Any]:
        """The options a merge of shards must agree on and takes as its defaults."""
        return {
            "gate": self.gate,
            "max_drop": self.max_drop,
            "alpha": self.alpha,
            "allow_mismatch": self.allow_mismatch,
            "max_judge_errors": self.max_judge_errors,
            "thresholds": list(self.thresholds),
            "threshold_origin": self.threshold_origin,
            "buckets": self.buckets,
            "partial": self.partial,
            "guard": self.guard,
        }

    def gate_options(self) -> Gate:
        return Gate(
            gate=self.gate,
            max_drop=self.max_drop,
            alpha=self.alpha,
            allow_mismatch=self.allow_mismatch,
            rejudge=self.rejudge,
            max_judge_errors=self.max_judge_errors,
            thresholds=self.thresholds,
            threshold_origin=self.threshold_origin,
            updating=self.update_baseline,
            guard=self.guard,
        )


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


def merge_infos(infos: Iterable[Mapping[str, Any]]) -> RunInfo:
    """One RunInfo from the `run_info()` of every process (or shard): suite metadata from the
    first that has it, model and judge from the first that ran a dialogue, counters summed."""
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
    # Replicas of an openai: backend set aside during the run (every process's own lines).
    replicas = [line for i in infos for line in (i.get("replicas") or ())]
    # A cascade judge's counts (replies judged, escalated, failed there): every process's own.
    from pytest_mtmcs.judges.cascade import summary_counts

    if out.info:
        out.info["judge_counts"] = summary_counts(infos)
        if replicas:
            out.info["replicas"] = list(dict.fromkeys(replicas))
    return out


def bucket_spec(options: EndOptions, meta: Mapping[str, Any]) -> str:
    if options.buckets:
        return options.buckets
    spec = (meta.get("defaults") or {}).get("buckets")
    return str(spec) if spec else DEFAULT


def flip_of(result: DialogueResult, ok_before: bool | None) -> str:
    """`regressed`, `fixed`, `still_failing`, `new` (no baseline entry), `same` or `error`."""
    if result.verdict == "error":
        return "error"
    if ok_before is None:
        return "new"
    if ok_before and not result.ok:
        return "regressed"
    if not ok_before and result.ok:
        return "fixed"
    if not ok_before and not result.ok:
        return "still_failing"
    return "same"


def count_failed_tests(results: Iterable[DialogueResult], baselines: BaselineSet, gate: str) -> int:
    """Dialogues a pytest run reports as failed tests: backend errors, and under the items gate
    regressions (or, without a baseline entry, any not-ok dialogue)."""
    n = 0
    for r in results:
        if r.verdict == "error":
            n += 1
            continue
        if r.ok or gate not in ("items", "both"):
            continue
        if flip_of(r, baselines.ok_before(r.suite, r.id)) in ("regressed", "new"):
            n += 1
    return n


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
    gate = options.gate_options()
    shard = options.shard
    rejudge = _rejudger(sources) if options.rejudge else None
    extra_lines: list[str] = []
    suites: list[SuiteOutcome] = []
    for name in sorted(by_suite):
        results = sorted(by_suite[name], key=lambda r: r.id)
        meta = dict(suites_meta.get(name) or {"name": name, "defaults": {}})
        buckets = Buckets.parse(bucket_spec(options, meta))
        agg = aggregate_suite(name, results, meta, buckets, info, baselines, gate, rejudge)
        suites.append(agg.outcome)
        extra_lines.extend(agg.lines)

    lines: list[str] = []
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
        lines.extend(recorded.lines)
        files.extend(recorded.files)
    lines = (
        format_outcome(suites, info, run.cache, run.model_calls, gate=options.gate, shard=shard)
        + [str(line) for line in info.get("replicas") or ()]
        + extra_lines
        + lines
    )
    report_dir = None
    if options.report_dir:
        from pytest_mtmcs.outcome.report import write_report

        report_dir = write_report(
            options.report_dir,
            suites,
            info,
            baselines,
            dialogues=sources.dialogues,
            transcripts=sources.transcripts,
            shard=shard,
        )
        lines.append(f"report written to {report_dir}")
        if shard is not None:
            from pytest_mtmcs.outcome.shards import write_shard_files

            write_shard_files(
                report_dir,
                shard,
                [r for s in suites for r in s.results],
                shard_record(run, suites_meta, options, baselines),
            )
    failed = any(s.failures for s in suites)
    if shard is not None:
        # A shard's per-bucket numbers are partial: they neither pass nor fail a gate.
        failed = False
    return RunOutcome(
        lines=lines,
        failed=failed,
        suites=suites,
        test_failures=count_failed_tests(
            (r for s in suites for r in s.results), baselines, options.gate
        ),
        report_dir=report_dir,
        baseline_files=files,
    )


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
