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
from pytest_mtmcs.harness.gate_reports import report_cells
from pytest_mtmcs.harness.interrupts import INTERRUPT_KEY, USAGE_ERROR_KEY, DeferredSignals
from pytest_mtmcs.harness.reporting import RESULT_ATTR, STATUS_ATTR
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
        # (word, node id, reason) of the dialogues whose flip pytest's -r summary cannot show.
        self.flipped: list[tuple[str, str, str]] = []
        # (session, exit status) the run must end with whatever later hooks did.
        self._final_exit: tuple[pytest.Session, int] | None = None

    # -- gathering -----------------------------------------------------------------------

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        data = getattr(report, RESULT_ATTR, None)
        if data is None:
            return
        status = getattr(report, STATUS_ATTR, None)
        if status in ("regressed", "fixed") and report.when == "call":
            reason = str(getattr(report, "wasxfail", "") or "")
            self.flipped.append((status.upper(), report.nodeid, reason))
        # In one process the result object is at hand; from a worker, only its plain data.
        done = self.local.done.get(report.nodeid) if self.local is not None else None
        self.results[report.nodeid] = done if done else DialogueResult.from_dict(data)

    def worker_finished(self, output: dict[str, Any]) -> None:
        self.worker_outputs.append(output)

    def _infos(self) -> list[dict[str, Any]]:
        local = [self.local.run_info()] if self.local is not None else []
        return [*local, *self.worker_outputs]

    # -- ending ----------------------------------------------------------------------------

    # Before junitxml, the last-failed cache and the terminal's counts line take their stock:
    # the gate's cells are reported as tests of their own (harness/gate_reports.py).
    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        from pytest_mtmcs.outcome.finish import merge_infos
        from pytest_mtmcs.outcome.verdict import not_run

        self._print_workers_done()
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
            # From an xdist worker the run ended with no tests: the exit code says why. Set
            # again when the run unconfigures: a later sessionfinish (syrupy's) ORs pytest's
            # own "no tests collected" (5) into it.
            session.exitstatus = pytest.ExitCode.USAGE_ERROR
            self._final_exit = (session, pytest.ExitCode.USAGE_ERROR)
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

    def _print_workers_done(self) -> None:
        """Each xdist worker's final progress line, after pytest's own progress line, one per
        line (a worker writing it itself would land inside pytest's)."""
        lines = [str(o["mtmcs_done"]) for o in self.worker_outputs if o.get("mtmcs_done")]
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if not lines or reporter is None:
            return
        # xdist's progress line leaves the reporter's own newline bookkeeping unset.
        if getattr(getattr(reporter, "_tw", None), "width_of_current_line", 0):
            reporter.write("\n")
        for line in sorted(lines):
            reporter.write_line(line)

    def _finish(self, session: pytest.Session, run: Any) -> None:
        from pytest_mtmcs.harness.preflight import EndOfRunFailed
        from pytest_mtmcs.outcome.finish import Sources, finish
        from pytest_mtmcs.outcome.verdict import not_run

        self._adjudications_info(run)
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
            report_cells(self.config, outcome.suites)
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

    def _adjudications_info(self, run: Any) -> None:
        """What the summary says of the adjudications file (`run.info["adjudications"]`): its
        lines that matched no reply of this run (the keys that matched come from every process
        that ran dialogues), and the judge's agreement with the team's labels. A shard says
        nothing of the dialogues other shards ran (the merge lists the whole run's)."""
        from pytest_mtmcs.baseline.adjudications import summary_of_run
        from pytest_mtmcs.errors import MtmcsError

        if not run.info:
            return
        try:
            entries = self.resources.adjudications
        except MtmcsError:
            return  # the processes that ran dialogues stopped the run on it already
        if not entries:
            return
        path = self.settings.adjudications_path
        try:
            shown = str(path.relative_to(self.settings.root))
        except ValueError:
            shown = str(path)
        run.info["adjudications"] = summary_of_run(
            entries,
            run.info,
            self.results.values(),
            partial=self.settings.partial or self.settings.shard is not None,
            shown=shown,
        )

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
        chars = str(getattr(self.config.option, "reportchars", "") or "")
        if self.flipped and set(chars) & set("xaA"):
            # pytest's short summary (-r) knows no REGRESSED/FIXED: listed here, in full.
            terminalreporter.line("dialogues that flipped against the baseline (-r):")
            for word, nodeid, reason in sorted(
                self.flipped, key=lambda f: (f[0] != "REGRESSED", f[1])
            ):
                terminalreporter.line(
                    f"{word} {nodeid}" + (f" - {reason}" if reason else ""),
                    red=word == "REGRESSED",
                )
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
        if self._final_exit is not None:
            session, status = self._final_exit
            session.exitstatus = status
