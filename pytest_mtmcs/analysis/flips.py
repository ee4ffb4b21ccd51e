"""The one flip rule: how a dialogue's outcome now compares with its baseline entry.

Every output that shows a flip (the pytest status word, `-r` summaries, JUnit properties, the
terminal summary, `summary.md`, `results.csv`/parquet, `report.html`, `pytest-mtmcs merge`) reads
it from `flip_of`, so two outputs can never disagree about one dialogue.

- `error`: the dialogue's run failed now (backend or judge error): nothing was measured, so it is
  neither a regression nor a fix. It is a failed test of its own and counts against the gate.
- `not_compared`: the baseline exists but its comparison is refused (recorded with another judge,
  suite or decoding settings): no flip is claimed against it.
- `new`: no baseline entry to compare with (no baseline, a dialogue the baseline lacks, or an
  entry that was itself an error).
- `regressed` / `fixed` / `still_failing` / `same`: ok before and not now / the reverse / not ok
  on both sides / ok on both sides.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pytest_mtmcs.analysis.buckets import Buckets
from pytest_mtmcs.records import ERROR_VERDICTS, DialogueResult

FLIP_VALUES: tuple[str, ...] = (
    "regressed",
    "fixed",
    "still_failing",
    "same",
    "new",
    "not_compared",
    "error",
)


def flip_of(now: DialogueResult, before: DialogueResult | None, *, compared: bool = True) -> str:
    """The flip of `now` against its baseline entry `before` (None: no entry).

    `compared=False`: the baseline's comparison is refused, whatever its entry says.
    """
    if now.verdict in ERROR_VERDICTS:
        return "error"
    if not compared:
        return "not_compared"
    if before is None or before.verdict in ERROR_VERDICTS:
        return "new"
    if before.ok:
        return "same" if now.ok else "regressed"
    return "fixed" if now.ok else "still_failing"


@dataclass(frozen=True)
class Flip:
    id: str
    bucket: str
    before_verdict: str
    after_verdict: str
    before_labels: tuple[str, ...]
    after_labels: tuple[str, ...]


@dataclass(frozen=True)
class Flips:
    """Dialogues by flip against one baseline, each list sorted by id.

    `errored`: dialogues whose run failed now, with or without a baseline entry (`-` for the
    verdict of a missing one). Dialogues on one side only are listed by id (`only_current`:
    `new`; `only_baseline`: missing from this run), never dropped silently.
    """

    regressed: list[Flip]
    fixed: list[Flip]
    still_failing: list[Flip]
    only_current: list[str]
    only_baseline: list[str]
    errored: list[Flip] = field(default_factory=list)

    def counts_text(self) -> str:
        """`2 regressed, 1 fixed, 5 still failing, 0 errored, 0 new, 0 missing from this run`."""
        return (
            f"{len(self.regressed)} regressed, {len(self.fixed)} fixed, "
            f"{len(self.still_failing)} still failing, {len(self.errored)} errored, "
            f"{len(self.only_current)} new, {len(self.only_baseline)} missing from this run"
        )


def item_flips(
    current: Iterable[DialogueResult], baseline: Iterable[DialogueResult], buckets: Buckets
) -> Flips:
    """Every dialogue of `current` and `baseline` placed by `flip_of`."""
    cur = {r.id: r for r in current}
    base = {r.id: r for r in baseline}
    groups: dict[str, list[Flip]] = {"regressed": [], "fixed": [], "still_failing": [], "error": []}
    only_current: list[str] = []
    for rid in sorted(cur):
        now, was = cur[rid], base.get(rid)
        flip = flip_of(now, was)
        if flip == "new":  # no baseline entry, or the entry was itself an error
            only_current.append(rid)
            continue
        if flip not in groups:
            continue
        groups[flip].append(
            Flip(
                rid,
                buckets.bucket_of(now.user_turns),
                was.verdict if was is not None else "-",
                now.verdict,
                was.turn_labels if was is not None else (),
                now.turn_labels,
            )
        )
    return Flips(
        regressed=groups["regressed"],
        fixed=groups["fixed"],
        still_failing=groups["still_failing"],
        only_current=sorted(only_current),
        only_baseline=sorted(base.keys() - cur.keys()),
        errored=groups["error"],
    )
