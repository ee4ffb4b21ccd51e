"""The gate's verdict: the one line a release engineer reads, and the exit code behind it.

`passed` only when every gated cell was measured and passed; `inconclusive` when the run passes
but some bucket cell dropped by more than the tolerance without the drop being significant (shown
with what would decide it; `--mtmcs-fail-inconclusive` makes such a run fail); `failed` when the
gate failed; `not_run` when it could not run (a usage error, an interrupt, a run stopped early, an
end of run that failed). The same object gives the terminal's last line, the first heading of
`summary.md` and the exit status of `pytest-mtmcs merge`.

Exit codes (pytest's own where they fit; `pytest-mtmcs merge` and `compare` use the same):
0 gate passed (inconclusive cells included, unless --mtmcs-fail-inconclusive); 1 gate failed
or a dialogue test failed or errored, or the run stopped early; 2 interrupted (Ctrl-C, SIGTERM);
4 usage error (a bad option, a baseline that does not exist, a server that cannot be reached),
before any model runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Status = Literal["passed", "inconclusive", "failed", "not_run"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INTERRUPTED = 2
EXIT_USAGE = 4


@dataclass(frozen=True)
class GateVerdict:
    status: Status
    # passed: what was checked; failed / not_run: why (the first reason leads the line).
    reasons: tuple[str, ...] = ()
    # Inconclusive cells, one sentence each.
    inconclusive: tuple[str, ...] = ()
    # not_run only: whether the run failed (a partial run) or was only cut short (interrupt).
    not_run_fails: bool = True
    # not_run only: a re-run of the same command resumes (finished turns are cached).
    resumable: bool = False
    detail: str = ""
    # not_run only: the terminal's headline word for it ("NOT STARTED (usage error)").
    title: str = ""

    @property
    def failed(self) -> bool:
        return self.status == "failed" or (self.status == "not_run" and self.not_run_fails)

    @property
    def exit_status(self) -> int:
        return EXIT_FAILED if self.failed else EXIT_OK

    def line(self) -> str:
        """`gate: passed: no significant drop beyond 0.02; 2 cells inconclusive (6+ safety, ...)`"""
        if self.status == "not_run":
            return f"gate: NOT RUN: {self.reasons[0] if self.reasons else 'unknown'}" + (
                f": {self.detail}" if self.detail else ""
            )
        if self.status == "failed":
            head = "; ".join(self.reasons[:3]) + (
                f"; and {len(self.reasons) - 3} more" if len(self.reasons) > 3 else ""
            )
            text = f"gate: FAILED: {head}"
        else:
            text = "gate: passed: " + ("; ".join(self.reasons) or "nothing to check")
        if self.inconclusive:
            text += f"; {_cells(len(self.inconclusive))} inconclusive (see above)"
        return text

    def heading(self) -> str:
        """The first heading of summary.md."""
        if self.status == "passed":
            return "## ✅ pytest-mtmcs: gate passed"
        if self.status == "inconclusive":
            return f"## ⚠️ pytest-mtmcs: gate passed, {_cells(len(self.inconclusive))} inconclusive"
        if self.status == "failed":
            return f"## ❌ pytest-mtmcs: gate failed: {self.reasons[0] if self.reasons else ''}"
        return f"## ❌ pytest-mtmcs: gate not run: {self.reasons[0] if self.reasons else ''}"

    def explain(self) -> list[str]:
        """Terminal lines of a gate that did not run."""
        if self.status != "not_run":
            return []
        reason = self.reasons[0] if self.reasons else "not run"
        lines = [f"run {self.title or reason.upper()}: {self.detail}"]
        if reason == "usage error":
            lines.append("Nothing ran: fix what the message names and re-run.")
            return lines
        lines.append(
            "No baseline written, no gate: the numbers of a run that did not finish mean nothing."
        )
        if self.resumable:
            lines.append(
                "Finished turns are in the response cache: re-run the same command to resume."
            )
        return lines


def _cells(n: int) -> str:
    return f"{n} cell" if n == 1 else f"{n} cells"


def not_run(
    reason: str,
    detail: str = "",
    *,
    failed: bool = True,
    resumable: bool = False,
    title: str = "",
) -> GateVerdict:
    """A gate that could not run: `reason` leads the line ("usage error", "interrupted
    (SIGTERM)", "partial run"), `detail` says what happened, `title` heads the terminal's
    explanation (default: the reason in capitals)."""
    return GateVerdict(
        "not_run",
        (reason,),
        not_run_fails=failed,
        resumable=resumable,
        detail=detail,
        title=title,
    )


def decide(
    failures: Sequence[str],
    inconclusive: Sequence[str],
    checked: Sequence[str],
    *,
    fail_inconclusive: bool,
) -> GateVerdict:
    """The verdict of a run that finished: `failures` (gate failures and failed dialogue tests),
    `inconclusive` (one sentence per cell), `checked` (what passing means, for the line)."""
    if failures:
        return GateVerdict("failed", tuple(failures), tuple(inconclusive))
    if inconclusive:
        if fail_inconclusive:
            return GateVerdict(
                "failed",
                (f"{_cells(len(inconclusive))} inconclusive (--mtmcs-fail-inconclusive)",),
                tuple(inconclusive),
            )
        return GateVerdict("inconclusive", tuple(checked), tuple(inconclusive))
    return GateVerdict("passed", tuple(checked))
