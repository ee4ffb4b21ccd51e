"""The end of a run as data: what goes in (suite metadata, run info) and what comes out (per-suite
outcomes, the run's outcome). Plain objects only; every end-of-run module depends on these, and
this module depends on none of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_mtmcs.analysis.buckets import Buckets
from pytest_mtmcs.analysis.comparison import BucketComparison
from pytest_mtmcs.analysis.flips import Flips
from pytest_mtmcs.analysis.thresholds import ThresholdCheck
from pytest_mtmcs.records import DialogueResult


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

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


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
class RunOutcome:
    """What the end of a run decided and wrote.

    `failed`: the gate failed (bucket regressions, threshold breaches, judge errors, refused
    comparisons, a baseline not updated). `test_failures`: dialogues that are failed tests in a
    pytest run (backend errors; item regressions under `--mtmcs-gate=items|both`): pytest counts
    those itself, a merge of shards counts them here.
    """

    lines: list[str]
    failed: bool
    suites: list[SuiteOutcome]
    test_failures: int = 0
    report_dir: Path | None = None
    baseline_files: list[Path] = field(default_factory=list)

    @property
    def exit_status(self) -> int:
        """pytest's: 0 when nothing failed, 1 when the gate or a dialogue test failed."""
        return 1 if self.failed or self.test_failures else 0


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
