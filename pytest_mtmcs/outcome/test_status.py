"""What a dialogue's test reports, from its result and its flip: the one rule, for pytest (the
harness), for a merge of shards (its JUnit XML and its count of failed tests) alike.

- `error`: the run of the dialogue failed: the backend, or the judge on a reply (unless
  `--mtmcs-max-judge-errors` tolerates judge errors: then a known failure the gate counts);
- `passed`: the dialogue is ok (`fixed` when it failed in the baseline);
- `failed`: under `--mtmcs-gate=items|both`, a regression, or a not-ok dialogue with no
  baseline entry;
- `xfailed`: every other not-ok dialogue: a regression under the bucket gate (the bucket's
  statistics decide), a known failure, a dialogue not compared.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pytest_mtmcs.engine.grading import describe
from pytest_mtmcs.outcome.text import printable
from pytest_mtmcs.records import DialogueResult

Outcome = Literal["passed", "xfailed", "failed", "error"]

KNOWN = {
    "still_failing": "known failure (also failing in the baseline)",
    "not_compared": "not ok (the baseline's comparison is refused)",
}


@dataclass(frozen=True)
class TestStatus:
    outcome: Outcome
    reason: str = ""


def dialogue_test_status(
    result: DialogueResult, flip: str, *, gate: str, max_judge_errors: int
) -> TestStatus:
    if result.verdict == "error":
        return TestStatus(
            "error",
            f"model backend failed: {printable(result.error or '')}. Counted as an error (never "
            "a pass). Completed turns are in the response cache; re-run to resume.",
        )
    if result.verdict == "judge_error":
        reasons = "; ".join(
            f"user turn {r.user_turn}: {printable(r.judge_error or 'no label')}"
            for r in result.replies
            if r.label is None
        )
        if not max_judge_errors:
            return TestStatus(
                "error",
                f"the judge could not label a reply ({reasons}). Counted as an error (never a "
                "pass or a known failure): nothing was measured.",
            )
        return TestStatus(
            "xfailed",
            f"judge error ({reasons}); --mtmcs-max-judge-errors={max_judge_errors} tolerates "
            "some: the gate counts them",
        )
    if result.ok:
        return TestStatus("passed", "fixed" if flip == "fixed" else "")
    reason = describe(result.label, result.verdict, result.risk_turn, result.replies)
    items = gate in ("items", "both")
    if flip == "regressed":
        return TestStatus(
            "failed" if items else "xfailed", f"REGRESSION against baseline: {reason}"
        )
    if flip == "new" and items:
        return TestStatus("failed", f"{reason} (no baseline entry)")
    known = KNOWN.get(flip, "not ok (no baseline to compare with)")
    return TestStatus("xfailed", f"{reason}; {known}")
