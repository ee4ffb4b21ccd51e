"""Whether a stored baseline can be compared with this run, and its entries as compared.

One rule for every place that compares: the per-dialogue status a test reports (on the process
that ran it), and the end of the run's bucket statistics and flip lists. A baseline whose header
differs from this run's in what makes results comparable (suite hash, judge, decoding) is refused,
unless the user allows the mismatch, or only the judge differs and the user asks to re-judge the
baseline's stored transcripts with this run's judge.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Literal

from pytest_mtmcs.baseline.rejudge import only_judge_differs
from pytest_mtmcs.baseline.store import Baseline, BaselineSet, mismatches
from pytest_mtmcs.records import DialogueResult

How = Literal["same", "allowed", "rejudge", "refused"]


@dataclass(frozen=True)
class Comparability:
    """`same`: the headers agree; `allowed`: they differ and --mtmcs-allow-mismatch compares
    anyway; `rejudge`: only the judge differs and --mtmcs-rejudge re-judges the baseline;
    `refused`: no comparison. `diff` lists the differing header fields."""

    how: How
    diff: tuple[str, ...] = ()
    judge_only: bool = False

    @property
    def compared(self) -> bool:
        return self.how != "refused"


def comparability(
    base: Mapping[str, str],
    current: Mapping[str, str],
    *,
    allow_mismatch: bool,
    rejudge: bool,
) -> Comparability:
    diff = tuple(mismatches(base, current))
    if not diff:
        return Comparability("same")
    judge_only = only_judge_differs(base, current)
    if judge_only and rejudge:
        return Comparability("rejudge", diff, True)
    if allow_mismatch:
        return Comparability("allowed", diff, judge_only)
    return Comparability("refused", diff, judge_only)


def suite_change(base_ids: Collection[str], current_ids: Collection[str], baseline: str) -> str:
    """What can be said of a suite whose content hash differs from the baseline's, and how to
    move the baseline over. A baseline keeps no per-dialogue hashes: the dialogue ids on each
    side are counted; an edited text, label or image under the same id does not show."""
    base, current = set(base_ids), set(current_ids)
    return (
        f"the suite's content changed since the baseline was recorded ({len(base & current)} "
        f"dialogue ids on both sides, {len(current - base)} only in this run, "
        f"{len(base - current)} only in the baseline; under the same id, texts, labels, "
        "questions, images, image captions or [defaults] may differ); if the change is "
        f"intended, re-record the baseline: --mtmcs-baseline={baseline} --snapshot-update "
        "(or pass --mtmcs-allow-mismatch to compare anyway)"
    )


# (baseline) -> its results re-judged with this run's judge
Rejudger = Callable[[Baseline], list[DialogueResult]]


@dataclass
class SuiteView:
    """The primary baseline of one suite as this run compares with it."""

    found: bool
    compared: bool
    entries: Mapping[str, DialogueResult] = field(default_factory=dict)


class PrimaryBaseline:
    """The first `--mtmcs-baseline` name, per suite, as the dialogues of this run see it.

    `header(suite)` gives this run's baseline header for a suite (it needs the judge's identity,
    so the process that runs dialogues supplies it); `rejudger` re-judges a baseline when
    --mtmcs-rejudge applies. Each suite is looked at once.
    """

    def __init__(
        self,
        baselines: BaselineSet,
        *,
        allow_mismatch: bool,
        rejudge: bool,
        header: Callable[[str], Mapping[str, str]],
        rejudger: Callable[[], Rejudger | None],
    ) -> None:
        self.baselines = baselines
        self.allow_mismatch = allow_mismatch
        self.rejudge = rejudge
        self.header = header
        self.rejudger = rejudger
        self._views: dict[str, SuiteView] = {}

    def view(self, suite: str) -> SuiteView:
        found = self._views.get(suite)
        if found is None:
            found = self._views[suite] = self._view(suite)
        return found

    def _view(self, suite: str) -> SuiteView:
        name = self.baselines.primary
        b = self.baselines.get(name, suite) if name else None
        if b is None:
            return SuiteView(found=False, compared=True)
        how = comparability(
            b.header, self.header(suite), allow_mismatch=self.allow_mismatch, rejudge=self.rejudge
        )
        if not how.compared:
            return SuiteView(found=True, compared=False)
        entries: Mapping[str, DialogueResult] = b.entries
        if how.how == "rejudge":
            rejudger = self.rejudger()
            if rejudger is not None:
                entries = {r.id: r for r in rejudger(b)}
        return SuiteView(found=True, compared=True, entries=entries)

    def before(self, result: DialogueResult) -> tuple[DialogueResult | None, bool]:
        """(the baseline entry `result` is compared with, or None; whether it is compared)."""
        v = self.view(result.suite)
        return v.entries.get(result.id), v.compared
