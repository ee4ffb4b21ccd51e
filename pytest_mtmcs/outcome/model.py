"""The end of a run as data: what goes in (suite metadata, run info) and what comes out (per-suite
outcomes, the run's outcome). Plain objects only; every end-of-run module depends on these, and
this module depends on none of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_mtmcs import defaults
from pytest_mtmcs.analysis.buckets import Buckets
from pytest_mtmcs.analysis.comparison import BucketComparison
from pytest_mtmcs.analysis.flips import Flips
from pytest_mtmcs.analysis.thresholds import ThresholdCheck
from pytest_mtmcs.outcome.shards import Shard
from pytest_mtmcs.outcome.verdict import GateVerdict
from pytest_mtmcs.records import Dialogue, DialogueResult


@dataclass(frozen=True)
class SuiteMeta:
    """What the end of a run needs to know of a suite it never loaded itself (an xdist
    controller, a merge of shards): identity, `[defaults]` (buckets, thresholds), settings."""

    name: str
    version: str
    content_hash: str
    spec: str
    defaults: dict[str, Any]
    settings: dict[str, Any]
    dialogues: int
    # The pytest node id of the suite's collector (`suites/x/suite.toml`, or the spec): the
    # gate's cells are reported as tests under it.
    nodeid: str = ""
    # Dialogues with an image, and with a captioned image: what a judge of this suite can be
    # shown (the header's `judge_shown`). None: not known (metadata written before captions).
    images: int | None = None
    captions: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class GateCell:
    """One thing the gate checked, reported as a test of its own (JUnit XML, `-k`, `--lf`):
    a bucket cell against a baseline, a threshold on a bucket, the judge-error budget, a
    baseline's comparability or recording. `status`: passed, failed or inconclusive.
    `dialogues`: the ids of the dialogues a re-run of this cell should run (`--lf`)."""

    name: str
    status: str
    message: str = ""
    dialogues: tuple[str, ...] = ()


@dataclass(frozen=True)
class EndOptions:
    """The options the end of a run reads, resolved (command line > ini > built-in default)."""

    gate: str = defaults.GATE
    max_drop: float = defaults.MAX_DROP
    alpha: float = defaults.ALPHA
    allow_mismatch: bool = False
    rejudge: bool = False
    max_judge_errors: int = defaults.MAX_JUDGE_ERRORS
    # Inconclusive bucket cells fail the gate (--mtmcs-fail-inconclusive); else they warn.
    fail_inconclusive: bool = False
    # A suite a named baseline lacks is new, not an error (--mtmcs-allow-missing-suite).
    allow_missing_suite: bool = False
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
            "fail_inconclusive": self.fail_inconclusive,
            "allow_missing_suite": self.allow_missing_suite,
            "thresholds": list(self.thresholds),
            "threshold_origin": self.threshold_origin,
            "buckets": self.buckets,
            "partial": self.partial,
            "guard": self.guard,
        }


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
    # One sentence per inconclusive bucket cell (drop beyond the tolerance, not significant).
    inconclusive: list[str] = field(default_factory=list)
    # What passing this suite's gate means, for the gate line ("no significant drop beyond ...").
    checked: list[str] = field(default_factory=list)
    # Notes the summary shows under the suite (re-judged baselines, guard interventions).
    notes: list[str] = field(default_factory=list)
    # Metrics this run's judge cannot measure (a harm-only judge: helpfulness, pair accuracy).
    unmeasured: tuple[str, ...] = ()
    # Everything the gate checked, one cell each (reported as tests).
    cells: list[GateCell] = field(default_factory=list)
    # The benchmarks' headline tables (`outcome.headline.headline_tables`), computed on first use.
    headline: list[Any] | None = field(default=None, repr=False, compare=False)


@dataclass
class RunOutcome:
    """What the end of a run decided and wrote.

    `failed`: the gate failed (bucket regressions, threshold breaches, judge errors, refused
    comparisons, a baseline not updated). `test_failures`: dialogues that are failed tests in a
    pytest run (backend errors; item regressions under `--mtmcs-gate=items|both`): pytest counts
    those itself, a merge of shards counts them here.
    """

    lines: list[str]
    verdict: GateVerdict
    suites: list[SuiteOutcome]
    test_failures: int = 0
    report_dir: Path | None = None
    baseline_files: list[Path] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.verdict.failed

    @property
    def exit_status(self) -> int:
        """0 when the gate passed (inconclusive cells warn), 1 when it failed (outcome.verdict)."""
        return self.verdict.exit_status


@dataclass
class ReportData:
    """Everything the Markdown and HTML renderers read: the outcomes plus the baselines' own
    results (the plots show each checkpoint's rates, not just the paired comparison)."""

    suites: list[SuiteOutcome]
    info: dict[str, Any]
    # (suite, baseline name) -> that baseline's stored results for the suite
    baseline_results: dict[tuple[str, str], list[DialogueResult]] = field(default_factory=dict)
    # suite -> dialogue id -> Dialogue, when the suite could be loaded (user text in transcripts)
    dialogues: dict[str, dict[str, Dialogue]] = field(default_factory=dict)
    title: str = "pytest-mtmcs report"
    # The gate's verdict: the first heading of summary.md says it (None: no gate, e.g. compare
    # without thresholds still has one; only a bare render has none).
    verdict: GateVerdict | None = None
    current_name: str = "this run"
    notes: list[str] = field(default_factory=list)
    # suite -> dialogue id -> ready transcripts.jsonl lines (a merge copies the shards' lines)
    transcripts: dict[str, Mapping[str, Sequence[str]]] = field(default_factory=dict)
    # (suite, baseline name) -> (dialogue id, user turn) -> the baseline's reply, from the
    # transcripts stored beside it (--mtmcs-baseline-transcripts), for its flipped dialogues
    baseline_replies: dict[tuple[str, str], Mapping[tuple[str, int], str]] = field(
        default_factory=dict
    )
    # (suite, baseline name) -> why the baseline's replies are not shown (file unreadable, stale)
    baseline_reply_notes: dict[tuple[str, str], str] = field(default_factory=dict)

    def baseline_names(self) -> list[str]:
        names: list[str] = []
        for s in self.suites:
            for b in s.baselines:
                if b.name not in names:
                    names.append(b.name)
        return names


def run_header(meta: dict[str, Any], info: dict[str, Any]) -> dict[str, str]:
    """A suite's baseline header for this run (model, judge, suite, decoding settings)."""
    from pytest_mtmcs.baseline.store import make_header

    return make_header(
        suite=meta,
        model=info.get("model"),
        fingerprint=info.get("fingerprint", {}),
        judge=info.get("judge", {}),
        settings=meta.get("settings", {}),
    )
