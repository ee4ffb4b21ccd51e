"""The controller role: gathers every dialogue's result and ends the run once.

Registered in a single-process run and on an xdist controller, never in an xdist worker. It reads
results from test reports (plain data attached by the process that ran the dialogue), the run
infos workers send when they finish, decides how the run ended (finished, stopped early,
interrupted, stopped by a usage error), and hands the rows to the pure end of the run
(`outcome/finish.py`). It prints the summary and the gate line, and sets the exit code.
"""

from __future__ import annotations

from typing import Any

import pytest

from pytest_mtmcs.baseline.store import BaselineSet
from pytest_mtmcs.harness.interrupts import INTERRUPT_KEY, USAGE_ERROR_KEY, DeferredSignals
from pytest_mtmcs.harness.reporting import RESULT_ATTR
from pytest_mtmcs.harness.resources import Resources
from pytest_mtmcs.harness.settings import Settings
from pytest_mtmcs.harness.suites import SuiteStore
from pytest_mtmcs.outcome.verdict import GateVerdict
from pytest_mtmcs.records import DialogueResult


class RunController:
    def __init__(
        self,
        config: pytest.Config,
        settings: Settings,
        suites: SuiteStore,
        resources: Resources,
        baselines: BaselineSet,
        local: Any = None,
    ) -> None:
        """`local`: this process's `DialogueRunner` in a single-process run (None on an xdist
        controller, whose workers send their run infos instead)."""
        self.config = config
        self.settings = settings
        self.suites = suites
        self.resources = resources
        self.baselines = baselines
        self.local = local
        self.results: dict[str, DialogueResult] = {}
        self.worker_outputs: list[dict[str, Any]] = []
        self.summary_lines: list[str] = []
        self.verdict: GateVerdict | None = None

    # -- gathering -----------------------------------------------------------------------

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        data = getattr(report, RESULT_ATTR, None)
        if data is None:
            return
        # In one process the result object is at hand; from a worker, only its plain data.
        done = self.local.done.get(report.nodeid) if self.local is not None else None
        self.results[report.nodeid] = done if done else DialogueResult.from_dict(data)

    def worker_finished(self, output: dict[str, Any]) -> None:
        self.worker_outputs.append(output)

    def _infos(self) -> list[dict[str, Any]]:
        local = [self.local.run_info()] if self.local is not None else []
        return [*local, *self.worker_outputs]

    # -- ending ----------------------------------------------------------------------------

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        from pytest_mtmcs.outcome.finish import merge_infos
        from pytest_mtmcs.outcome.verdict import not_run

        infos = self._infos()
        run = merge_infos(infos)
        self.suites.learn(run.suites)
        selected = sum(int(n) for n in run.selected.values())
        finished = len(self.results)
        # Workers killed by an interrupt send no run info: then xdist's own count of the
        # collection stands in for the number of dialogues selected.
        total = max(selected or int(getattr(session, "testscollected", 0) or 0), finished)
        usage = self.config.stash.get(USAGE_ERROR_KEY, None)
        if usage is None:
            usage = next(
                (o["mtmcs_usage_error"] for o in self.worker_outputs if o.get("mtmcs_usage_error")),
                None,
            )
        stop = self.config.stash.get(INTERRUPT_KEY, None)
        early = session.shouldfail or session.shouldstop
        if usage is not None or exitstatus == pytest.ExitCode.USAGE_ERROR:
            self._not_run(
                not_run(
                    "usage error", usage or "see the error below", title="NOT STARTED (usage error)"
                ),
                run,
            )
            # From an xdist worker the run ended with no tests: the exit code says why.
            session.exitstatus = pytest.ExitCode.USAGE_ERROR
            return
        if stop is not None and stop.startswith(("Ctrl-C", "SIGTERM", "SIGINT")):
            self._not_run(
                not_run(
                    f"interrupted ({stop})",
                    f"{finished} of {total or finished} dialogues finished",
                    resumable=True,
                    title=f"INTERRUPTED ({stop})",
                ),
                run,
            )
            session.exitstatus = pytest.ExitCode.INTERRUPTED
            return
        if not self.results:
            return
        if early or stop is not None or (selected and finished < selected):
            why = str(early or stop or "some dialogues did not run")
            self._not_run(
                not_run(
                    "partial run",
                    f"stopped early ({why}): {finished} of {total or finished} dialogues",
                    failed=True,
                    title="STOPPED EARLY",
                ),
                run,
            )
            if session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
            return
        self._finish(session, run)

    def _finish(self, session: pytest.Session, run: Any) -> None:
        from pytest_mtmcs.harness.preflight import EndOfRunFailed
        from pytest_mtmcs.outcome.finish import Sources, finish
        from pytest_mtmcs.outcome.verdict import not_run

        with DeferredSignals() as deferred, EndOfRunFailed() as failed:
            outcome = finish(
                self.results.values(),
                {name: m.as_dict() for name, m in self.suites.meta.items()},
                self.baselines,
                self.settings.end_options(),
                run,
                Sources(dialogues=self.suites.dialogues_of, judge=lambda: self.resources.judge),
            )
        if failed.error is not None:  # a full disk, a report folder gone: said, failed
            self.verdict = not_run(
                "end of run failed", failed.error, failed=True, title="END OF RUN FAILED"
            )
            self.summary_lines = [
                f"END OF RUN FAILED: {failed.error}",
                "The dialogues' own outcomes above stand; the gate, the report and any baseline "
                "update did not complete. Fix the cause and re-run: finished turns come from the "
                "cache.",
            ]
        else:
            self.summary_lines = outcome.lines
            self.verdict = outcome.verdict
        if deferred.received:
            self.summary_lines.append(
                f"received {deferred.received[0]} while ending the run: it finished first "
                "(gate, report and baseline are complete)"
            )
        if self.verdict.failed and session.exitstatus in (
            pytest.ExitCode.OK,
            pytest.ExitCode.NO_TESTS_COLLECTED,
        ):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def _not_run(self, verdict: GateVerdict, run: Any) -> None:
        """A run whose gate could not run: its lines, and a summary.md that says so (a stale
        green summary from an earlier run must not stand in the report folder)."""
        from pytest_mtmcs.outcome.report import write_not_run_summary

        self.verdict = verdict
        self.summary_lines = verdict.explain()
        if self.settings.report_dir is not None and not self.settings.is_worker:
            try:
                write_not_run_summary(self.settings.report_dir, verdict, run.info)
            except OSError:
                pass  # the folder itself is what failed: the terminal says what happened

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.summary_lines and self.verdict is None:
            return
        failed = self.verdict is not None and self.verdict.failed
        terminalreporter.section("mtmcs safety summary", sep="=", bold=True)
        for line in self.summary_lines:
            red = failed and ("FAIL" in line or "REGRESS" in line)
            terminalreporter.line(line, red=red)
        if self.verdict is not None:
            terminalreporter.line(
                self.verdict.line(),
                red=self.verdict.failed,
                yellow=self.verdict.status == "inconclusive",
                green=self.verdict.status == "passed",
                bold=True,
            )

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        self.resources.close()
