"""The worker role: runs this process's dialogues and says how each compares with its baseline.

Registered in a single-process run and in every xdist worker, never on an xdist controller. Each
process generates ahead (`--mtmcs-lookahead`) for the dialogue items it will run, in the order it
will run them (its share under xdist: `harness/xdist.py`), so that a fast backend sees batches and
a server sees many requests in flight; `engine.schedule.ShareRunner` decides the schedule
(lock-step rounds, or a pipeline for backends that take requests one by one) and how far ahead.
Results are plain `DialogueResult`s; the process that ran a dialogue decides its flip against the
primary baseline (`baseline/comparable.py`) and attaches both to the test report
(`harness/reporting.py`), the only thing that crosses to a controller.
"""

from __future__ import annotations

import gc
import json
import sys
from typing import Any

import pytest

from pytest_mtmcs.analysis.flips import flip_of
from pytest_mtmcs.baseline.comparable import PrimaryBaseline
from pytest_mtmcs.baseline.store import BaselineSet
from pytest_mtmcs.errors import MtmcsError
from pytest_mtmcs.harness.interrupts import usage_error
from pytest_mtmcs.harness.items import DIALOGUE_KEY, DialogueItem
from pytest_mtmcs.harness.preflight import building, check_collected
from pytest_mtmcs.harness.resources import Resources
from pytest_mtmcs.harness.settings import Settings
from pytest_mtmcs.harness.suites import SuiteStore
from pytest_mtmcs.records import DialogueResult, GenerationSettings

# The cyclic collector's thresholds while dialogues run (see pytest_sessionstart): a
# young-generation pass every 100,000 net allocations instead of 700, full passes far rarer.
RUN_GC_THRESHOLDS = (100_000, 50, 100)


class DialogueRunner:
    def __init__(
        self,
        config: pytest.Config,
        settings: Settings,
        suites: SuiteStore,
        resources: Resources,
        baselines: BaselineSet,
    ) -> None:
        self.config = config
        self.settings = settings
        self.suites = suites
        self.resources = resources
        self.items: list[pytest.Item] = []
        self.done: dict[str, DialogueResult] = {}
        # This process's shard split (outcome.shards.split_items), sent on in run_info.
        self.shard_info: dict[str, Any] = {}
        # Dialogue tests selected to run, per suite (after -k/-m deselection and sharding).
        self.selected: dict[str, int] = {}
        self._share: list[DialogueItem] | None = None
        self._engines: dict[GenerationSettings, Any] = {}
        self._runner: Any = None  # engine.schedule.ShareRunner, made at the first dialogue
        self._buckets: dict[str, Any] = {}
        self._progress: Any = None
        self._relay_done = False  # an xdist worker hands its final progress line over
        self._gc_thresholds: tuple[int, ...] | None = None  # restored when the session ends
        self._escalation: Any = None  # --mtmcs-escalate=flips (engine.escalation.FlipEscalation)
        self.primary = PrimaryBaseline(
            baselines,
            allow_mismatch=settings.allow_mismatch,
            rejudge=settings.rejudge,
            header=self.run_header,
            rejudger=self._rejudger,
        )

    # -- hooks ---------------------------------------------------------------------------

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        if not self.settings.model or self.settings.collect_only:
            return
        # A run of dialogues makes many small objects that live to its end (items, turn records,
        # results) and few reference cycles. At the default thresholds (700, 10, 10) the cyclic
        # collector runs every few hundred allocations and its full passes walk every result made
        # so far: a third of an instant-backend run's CPU at 30,080 dialogues. Collect rarely
        # while the session runs; its previous thresholds come back when it finishes.
        self._gc_thresholds = gc.get_threshold()
        gc.set_threshold(
            *(max(a, b) for a, b in zip(self._gc_thresholds, RUN_GC_THRESHOLDS, strict=True))
        )

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(
        self, session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
    ) -> None:
        """After -k/-m deselection: checks what the run needs before anything runs (a usage
        error, exit code 4), then records the items this process will run."""
        dialogues = [i for i in items if isinstance(i, DialogueItem)]
        if dialogues and not self.settings.collect_only and not config.option.showfixtures:
            try:
                check_collected(self, dialogues)
            except MtmcsError as exc:
                if not self.settings.is_worker:
                    raise usage_error(config, str(exc)) from None
                # An xdist worker cannot stop the run with a usage error (xdist reports an
                # internal error): it collects nothing and tells the controller, which ends the
                # run with the message and pytest's usage exit code.
                config.workeroutput["mtmcs_usage_error"] = str(exc)  # type: ignore[attr-defined]
                config.hook.pytest_deselected(items=list(items))
                items[:] = []
                dialogues = []
        self.items = list(items)
        self.selected = {}
        for it in dialogues:
            suite = it.stash[DIALOGUE_KEY].suite
            self.selected[suite] = self.selected.get(suite, 0) + 1
        if self.shard_info:
            self.shard_info["selected"] = dict(self.selected)
        if dialogues and not self.settings.collect_only:
            # The collected dialogues (turns, images' paths, items) live to the end of the run:
            # move them out of the cyclic collector's reach, or every full collection during the
            # run walks all of them (about a third of the engine's CPU on 30,080 dialogues).
            gc.freeze()

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        # The results stay alive to the end: spare pytest's final collections from walking them.
        gc.freeze()
        if self._gc_thresholds is not None:
            gc.set_threshold(*self._gc_thresholds)
            self._gc_thresholds = None
        workeroutput = getattr(self.config, "workeroutput", None)
        if self._progress is not None:
            if workeroutput is not None:
                # A worker's line would land inside the controller's progress line (they share
                # the terminal): the controller prints it on a line of its own at the end.
                if self._relay_done:
                    workeroutput["mtmcs_done"] = self._progress.final_line()
                self._progress.finished = True
            else:
                # pytest leaves its progress line ("... [100%]") open: end it before ours.
                reporter = self.config.pluginmanager.get_plugin("terminalreporter")
                if reporter is not None:
                    reporter.ensure_newline()
                self._progress.finish()
        if workeroutput is not None:
            workeroutput["mtmcs"] = self.run_info()

    # -- running -------------------------------------------------------------------------

    def _share_items(self) -> list[DialogueItem]:
        """The dialogue items this process will run, in order: what it generates ahead for."""
        if self._share is None:
            items = self.items
            wi = getattr(self.config, "workerinput", None)
            if wi and wi.get("mtmcs_partition"):
                from pytest_mtmcs.harness.xdist import share

                mine = share(
                    len(items), int(str(wi["workerid"]).removeprefix("gw")), int(wi["workercount"])
                )
                items = [items[i] for i in mine]
            self._share = [it for it in items if isinstance(it, DialogueItem)]
        return self._share

    def _make_progress(self) -> Any:
        from pytest_mtmcs.harness.progress import Progress

        mode = self.settings.progress
        shown = mode == "on" or (mode == "auto" and not self.settings.quiet)
        # An xdist worker writes its running lines only when asked for (`on`): under `auto`
        # they would break into the controller's progress line; its final line is relayed.
        self._relay_done = shown
        return Progress(
            len(self._share_items()),
            self.settings.worker_id or "mtmcs",
            sys.__stderr__ or sys.stderr,
            min_interval_s=0.0 if mode == "on" else 5.0,
            enabled=mode == "on" or (shown and not self.settings.is_worker),
        )

    def build(self) -> None:
        """Builds the model backend and the judge (and opens the cache) before any dialogue
        runs; raises the MtmcsError that says what cannot be built."""
        r = self.resources
        for part in (r.backend, r.judge):
            # A server that cannot be reached, a key it refuses, a model it does not serve: one
            # request each, before the first dialogue.
            check = getattr(part, "preflight", None)
            if check is not None:
                check()
        from pytest_mtmcs.judges import show

        # What the judge is shown of this run's images (captions, the images, or neither) is
        # part of its identity: set before it judges anything or its identity is recorded.
        show(r.judge, (m.as_dict() for m in self.suites.meta.values()))

    def expect(self, dialogues: int) -> None:
        """Dialogues run beyond the collected ones (the `mtmcs` fixture's): counted in the
        progress line's total, so it never reads more done than expected."""
        if self._progress is None:
            self._progress = self._make_progress()
        self._progress.total += dialogues

    def engine_for(self, settings: GenerationSettings) -> Any:
        engine = self._engines.get(settings)
        if engine is None:
            from pytest_mtmcs.engine.runner import Engine

            r = self.resources
            # Nothing is built unless backend and judge both build: a half-built engine would
            # grade with a judge that does not exist.
            backend, judge = r.backend, r.judge
            if self._progress is None:
                self._progress = self._make_progress()
            engine = Engine(
                backend,
                judge,
                settings,
                r.cache_or_none(),
                self._progress,
                adjudications=r.adjudication_labels(),
                escalation=self._flip_escalation(judge),
                # This process holds the baseline: it gives the flip rule that escalation needs.
                flip=self.flip if self.settings.escalate == "flips" else None,
                # The exchange keys are read by `pytest-mtmcs review` from a report's transcripts.
                keys=self.settings.report_dir is not None,
            )
            self._engines[settings] = engine
        return engine

    def _flip_escalation(self, judge: Any) -> Any:
        """`--mtmcs-escalate=flips`: one escalation per process (its counts are this process's),
        to the cascade's model judge."""
        if self.settings.escalate != "flips":
            return None
        if self._escalation is None:
            from pytest_mtmcs.engine.escalation import FlipEscalation

            self._escalation = FlipEscalation(judge.remote)
        return self._escalation

    def run_item(self, item: DialogueItem) -> DialogueResult:
        """The item's result, generating ahead for the dialogues after it (in the schedule and
        as far ahead as `engine.schedule.ShareRunner` decides)."""
        if item.nodeid not in self.done:

            def engine_for(settings: GenerationSettings) -> Any:
                with building(self.config, item):
                    return self.engine_for(settings)

            runner = self._runner
            if runner is None:
                from pytest_mtmcs.engine.schedule import ShareRunner

                wi = getattr(self.config, "workerinput", None) or {}
                runner = self._runner = ShareRunner(
                    [self._share_item(it) for it in self._share_items()],
                    lookahead=self.settings.lookahead,
                    schedule=self.settings.schedule,
                    # An xdist worker knows its share only under our partition scheduler.
                    exact=not self.settings.is_worker or bool(wi.get("mtmcs_partition")),
                )
            self.done.update(runner.run_through(self._share_item(item), engine_for))
        return self.done[item.nodeid]

    def _share_item(self, item: DialogueItem) -> tuple[str, Any, GenerationSettings]:
        """(node id, dialogue, generation settings): what the engine's schedule is given."""
        settings = self.suites.generation_settings(self.suites.load(item.spec))
        return item.nodeid, item.stash[DIALOGUE_KEY], settings

    # -- comparing -----------------------------------------------------------------------

    def bucket_of(self, result: DialogueResult) -> str:
        buckets = self._buckets.get(result.suite)
        if buckets is None:
            from pytest_mtmcs.analysis.buckets import Buckets

            buckets = self._buckets[result.suite] = Buckets.parse(
                self.suites.bucket_spec(result.suite)
            )
        return buckets.bucket_of(result.user_turns)

    def flip(self, result: DialogueResult) -> str:
        """The result's flip against the primary baseline (`analysis.flips.flip_of`)."""
        before, compared = self.primary.before(result)
        return flip_of(result, before, compared=compared)

    def run_header(self, suite: str) -> dict[str, str]:
        from pytest_mtmcs.outcome.model import run_header

        meta = self.suites.meta[suite]
        return run_header(meta.as_dict(), self.run_info())

    def _rejudger(self) -> Any:
        """Re-judges a baseline of a suite this process loaded, with this run's judge."""
        from pytest_mtmcs.baseline.rejudge import rejudge_baseline

        def rejudge(baseline: Any) -> list[DialogueResult]:
            meta = self.suites.meta[baseline.suite]
            placement = str(meta.settings.get("image_placement") or "last")
            results, _ = rejudge_baseline(
                baseline,
                self.suites.dialogues_of(baseline.suite),
                self.resources.judge,
                image_placement=placement,
            )
            return results

        return rejudge

    # -- what this process tells the end of the run --------------------------------------

    def run_info(self) -> dict[str, Any]:
        """Plain data describing this process's model, judge and cache: shared with the
        controller. Round-tripped through JSON: only plain data may cross to the xdist
        controller (a backend's fingerprint could otherwise carry a library's own object)."""
        return json.loads(json.dumps(self._run_info(), default=str))

    def _run_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "suites": {k: v.as_dict() for k, v in self.suites.meta.items()},
            "model": self.settings.model,
            "selected": dict(self.selected),
        }
        if self.shard_info:
            info["shard"] = self.shard_info
        r = self.resources
        if r.backend_built and r.judge_built:
            engines = list(self._engines.values())
            info["fingerprint"] = dict(engines[0].fingerprint) if engines else {}
            info["judge"] = r.judge.identity.as_dict()
            # A cascade's replies judged / escalated / failed there, the flips it checked, the
            # adjudications applied (summed over processes).
            counts = dict(getattr(r.judge, "counts", None) or {})
            if self._escalation is not None:
                counts.update(self._escalation.counts)
            if r.adjudications:
                counts["adjudications_applied"] = sum(e.adjudications_applied for e in engines)
                # Their keys: the controller lists the file's lines that matched no reply.
                info["adjudications_matched"] = sorted(
                    set().union(*(e.adjudications_matched for e in engines))
                )
            info["judge_counts"] = counts
            info["model_calls"] = sum(e.model_calls for e in engines)
            # How busy the backend kept its servers (backends/inflight.py; openai: measures it).
            in_flight = getattr(r.backend, "in_flight", None)
            measured = in_flight() if callable(in_flight) else None
            if measured:
                info["in_flight"] = measured
            # Replicas of an openai: backend that were set aside (for the summary).
            replicas = getattr(r.backend, "replica_summary", None)
            if callable(replicas) and replicas():
                info["replicas"] = list(replicas())
            info["cache"] = r.cache_counts()
        return info
