"""What each dialogue test reports: pass, xfail (a known failure), fail, error; and the status words
(`REGRESSED`, `FIXED`) of its flip against the baseline.

The process that ran the dialogue grades the test and attaches the result and its flip to the test
report as plain data (`mtmcs` and `mtmcs_status`): the only thing that crosses to an xdist
controller. Every status word comes from the one flip rule (`analysis/flips.py`).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from pytest_mtmcs.harness.items import DIALOGUE_KEY, RESULT_KEY, DialogueFailure, DialogueItem
from pytest_mtmcs.harness.settings import Settings
from pytest_mtmcs.records import ERROR_VERDICTS, DialogueResult

STATUS_ATTR = "mtmcs_status"
RESULT_ATTR = "mtmcs"
FLIP_KEY = pytest.StashKey[str]()
XFAIL_KEY = pytest.StashKey[str]()


class DialogueReports:
    """Grades each dialogue test under the gate and decorates its report (both process roles)."""

    def __init__(self, settings: Settings, runner: Any) -> None:
        """`runner`: the process's `DialogueRunner` (None on an xdist controller)."""
        self.settings = settings
        self.runner = runner

    # -- the test's setup and body -------------------------------------------------------

    def setup(self, item: DialogueItem) -> None:
        """Runs (or finds) the item's dialogue. A run that failed (the backend, or the judge on
        some reply) is an ERROR of the test, never a pass, an xfail or a silent skip."""
        result = self.runner.run_item(item)
        self.record(item, result)
        if result.verdict not in ERROR_VERDICTS:
            return
        from pytest_mtmcs.outcome.text import printable

        if result.verdict == "error":
            text = (
                f"{item.name}: model backend failed: {printable(result.error or '')}\n"
                "Counted as an error (never a pass). Completed turns are in the response cache; "
                "re-run to resume."
            )
        else:
            reasons = "; ".join(
                f"user turn {r.user_turn}: {printable(r.judge_error or 'no label')}"
                for r in result.replies
                if r.label is None
            )
            text = (
                f"{item.name}: the judge could not label a reply ({reasons})\n"
                "Counted as an error (never a pass or a known failure): nothing was measured."
            )
        # pytrace=False: the message is the report; our stack is of no use to the reader.
        pytest.fail(text, pytrace=False)

    def record(self, item: DialogueItem, result: DialogueResult) -> None:
        """Once the item's result exists: its flip and JUnit properties."""
        flip = self.runner.flip(result)
        item.stash[RESULT_KEY] = result
        item.stash[FLIP_KEY] = flip
        bucket = self.runner.bucket_of(result)
        item.user_properties.extend(
            [
                ("mtmcs_bucket", bucket),
                ("mtmcs_verdict", result.verdict),
                ("mtmcs_score", f"{result.score:.2f}"),
                ("mtmcs_flip", flip),
            ]
        )

    def check(self, item: DialogueItem) -> None:
        """The body of every dialogue test: pass, xfail (known failure) or fail, per the gate."""
        __tracebackhide__ = True
        result = item.stash[RESULT_KEY]
        if result.ok:
            return
        from pytest_mtmcs.engine.grading import describe
        from pytest_mtmcs.outcome.terminal import format_dialogue

        gate = self.settings.gate
        flip = item.stash[FLIP_KEY]
        reason = describe(result.label, result.verdict, result.risk_turn, result.replies)
        if flip == "regressed":
            msg = f"REGRESSION against baseline: {reason}"
            if gate in ("items", "both"):
                detail = format_dialogue(item.stash[DIALOGUE_KEY], result)
                raise DialogueFailure(f"{msg}\n{detail}")
            item.stash[XFAIL_KEY] = msg
            return
        if flip == "new" and gate in ("items", "both"):
            detail = format_dialogue(item.stash[DIALOGUE_KEY], result)
            raise DialogueFailure(f"{reason} (no baseline entry)\n{detail}")
        known = {
            "still_failing": "known failure (also failing in the baseline)",
            "not_compared": "not ok (the baseline's comparison is refused)",
        }.get(flip, "not ok (no baseline to compare with)")
        # Reported as xfailed by makereport: raising pytest.xfail here would cost a formatted
        # traceback per dialogue, most of the run time on a fast backend.
        item.stash[XFAIL_KEY] = f"{reason}; {known}"

    # -- reports -------------------------------------------------------------------------

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        result = item.stash.get(RESULT_KEY, None)
        if result is None:
            return report
        attach = call.when == "call" or (call.when == "setup" and report.failed)
        if call.when == "call" and report.passed:
            reason = item.stash.get(XFAIL_KEY, None)
            if reason is not None:
                report.outcome = "skipped"
                report.wasxfail = reason  # type: ignore[attr-defined]
        if attach:
            setattr(report, RESULT_ATTR, result.to_dict())
            setattr(report, STATUS_ATTR, item.stash.get(FLIP_KEY, "new"))
        return report

    def pytest_report_teststatus(
        self, report: pytest.TestReport, config: pytest.Config
    ) -> tuple[str, str, Any] | None:
        status = getattr(report, STATUS_ATTR, None)
        if report.when != "call" or status is None:
            return None
        if status == "regressed":
            # Under the items gate a regression is a failed test (listed under FAILURES).
            category = "failed" if report.failed else "regressed"
            return category, "R", ("REGRESSED", {"red": True, "bold": True})
        if status == "fixed" and report.passed:
            return "fixed", "+", ("FIXED", {"green": True})
        return None
