"""The plugin object of one pytest run: suites, the engine, outcomes, aggregation and the gate.

Registered in `pytest_configure`, unregistered in `pytest_unconfigure`. In an xdist run, every
worker runs dialogues for its share and attaches each result to its test report as plain data;
aggregation, gates, reports and baseline writes happen once, on the controller (or the single
process), from those reports.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import pytest

from pytest_mtmcs.errors import ConfigError, MtmcsError
from pytest_mtmcs.harness import options as opts
from pytest_mtmcs.harness.items import (
    DIALOGUE_KEY,
    RESULT_KEY,
    DialogueFailure,
    DialogueItem,
    shown_path,
)
from pytest_mtmcs.outcome.model import SuiteMeta
from pytest_mtmcs.records import DialogueResult, GenerationSettings, Suite

STATUS_ATTR = "mtmcs_status"
XFAIL_KEY = pytest.StashKey[str]()
RESULT_ATTR = "mtmcs"
# The cyclic collector's thresholds while dialogues run (see pytest_sessionstart): a
# young-generation pass every 100,000 net allocations instead of 700, full passes far rarer.
RUN_GC_THRESHOLDS = (100_000, 50, 100)


def _worker_id(config: pytest.Config) -> str | None:
    wi = getattr(config, "workerinput", None)
    return wi.get("workerid") if wi else None


class MtmcsSession:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.suites: dict[str, Suite] = {}
        self.suite_meta: dict[str, SuiteMeta] = {}
        self.items: list[pytest.Item] = []
        self._share: list[DialogueItem] | None = None
        self._share_pos: dict[str, int] = {}
        self._engines: dict[GenerationSettings, Any] = {}
        self._backend: Any = None
        self._judge: Any = None
        self._cache: Any = None
        self._progress: Any = None
        self.done: dict[str, DialogueResult] = {}
        self.results: dict[str, DialogueResult] = {}  # controller: nodeid -> result
        self.worker_outputs: list[dict[str, Any]] = []
        self.summary_lines: list[str] = []
        self.gate_failed = False
        self._baselines: Any = None
        self._buckets: dict[str, Any] = {}
        self._settings: dict[Any, GenerationSettings] = {}
        self.is_worker = _worker_id(config) is not None
        # This process's shard split (shards.split_items), sent to the controller in run_info.
        self.shard_info: dict[str, Any] = {}
        self._gc_thresholds: tuple[int, ...] | None = None  # restored when the session ends

    # -- configuration -------------------------------------------------------------------

    def validate(self) -> None:
        """Checks every option value before anything runs: a typo fails in a second, naming
        the option, rather than after the model has loaded."""
        from pytest_mtmcs.analysis.buckets import Buckets
        from pytest_mtmcs.analysis.thresholds import parse_threshold
        from pytest_mtmcs.backends import available as backends
        from pytest_mtmcs.baseline.store import BaselineSet
        from pytest_mtmcs.judges import available as judges

        c = self.config
        model = self.model_spec
        if model:
            prefix = model.split(":", 1)[0]
            if ":" not in model or prefix not in backends():
                raise ConfigError(
                    f"--mtmcs-model={model!r}: expected PREFIX:VALUE with PREFIX one of "
                    f"{', '.join(sorted(backends()))}"
                )
        judge = str(opts.value(c, "--mtmcs-judge"))
        if judge.split(":", 1)[0] not in judges():
            raise ConfigError(
                f"--mtmcs-judge={judge!r}: unknown judge; known: {', '.join(sorted(judges()))}"
            )
        if opts.raw(c, "--mtmcs-buckets"):
            Buckets.parse(str(opts.raw(c, "--mtmcs-buckets")))
        for spec in opts.raw(c, "--mtmcs-threshold") or ():
            parse_threshold(spec, "--mtmcs-threshold")
        for flag in ("--mtmcs-max-new-tokens", "--mtmcs-concurrency", "--mtmcs-lookahead"):
            n = opts.value(c, flag)
            if n is not None and int(n) < 1:
                raise ConfigError(f"{flag}={n}: expected a positive integer")
        opts.batch_size(c)
        for flag, low, high in (
            ("--mtmcs-max-drop", 0.0, 1.0),
            ("--mtmcs-alpha", 0.0, 1.0),
            ("--mtmcs-cascade-threshold", 0.0, 1.0),
        ):
            x = float(opts.value(c, flag))
            if not low <= x <= high:
                raise ConfigError(f"{flag}={x}: expected a value in [{low}, {high}]")
        BaselineSet.from_config(c)
        self._check_shard()
        from pytest_mtmcs.harness.preflight import check_specs

        check_specs(self)

    def _check_shard(self) -> None:
        """A shard writes no baseline and needs a report folder: the merge reads it."""
        shard = self.shard
        if shard is None:
            return
        if getattr(self.config.option, "update_snapshots", False):
            raise ConfigError(
                f"--mtmcs-shard={shard} with --snapshot-update: a shard never records a "
                "baseline; record it from the merged shards: pytest-mtmcs merge DIR... "
                "--update-baseline NAME"
            )
        if not opts.value(self.config, "--mtmcs-report"):
            raise ConfigError(
                f"--mtmcs-shard={shard} needs --mtmcs-report=DIR: the folder pytest-mtmcs merge "
                "reads"
            )

    @property
    def shard(self) -> Any:
        """This run's shard (shards.Shard), or None when the run takes every dialogue."""
        if not hasattr(self, "_shard"):
            from pytest_mtmcs.outcome.shards import parse_shard

            c = self.config
            v = opts.raw(c, "--mtmcs-shard")
            origin = "--mtmcs-shard" if c.getoption("mtmcs_shard") else "ini mtmcs_shard"
            self._shard = parse_shard(str(v), origin) if v else None
        return self._shard

    def select_shard(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        """Keeps this shard's dialogues (other tests stay), before -k/-m deselection: the split
        is over every collected dialogue, so a dialogue's shard never depends on the selection."""
        shard = self.shard
        if shard is None:
            return
        from pytest_mtmcs.outcome.shards import split_items

        dialogues = [
            (i, it.stash[DIALOGUE_KEY])
            for i, it in enumerate(items)
            if isinstance(it, DialogueItem)
        ]
        mine, info = split_items([d for _, d in dialogues], shard)
        drop = {i for (i, d), keep in zip(dialogues, mine, strict=True) if not keep}
        self.shard_info = info
        if drop:
            config.hook.pytest_deselected(items=[items[i] for i in sorted(drop)])
            items[:] = [it for i, it in enumerate(items) if i not in drop]

    @property
    def model_spec(self) -> str | None:
        v = opts.value(self.config, "--mtmcs-model")
        return str(v) if v else None

    def generation_settings(self, suite: Suite) -> GenerationSettings:
        d = suite.defaults
        placement = opts.raw(self.config, "--mtmcs-image-placement") or d.get(
            "image_placement", "last"
        )
        if placement not in ("first", "last", "every"):
            raise ConfigError(
                f"image placement {placement!r}: expected first, last or every "
                "(--mtmcs-image-placement / ini mtmcs_image_placement)"
            )
        max_new = opts.raw(self.config, "--mtmcs-max-new-tokens") or d.get("max_new_tokens", 128)
        try:
            max_new = int(max_new)
        except ValueError:
            raise ConfigError(f"--mtmcs-max-new-tokens={max_new!r}: expected an integer") from None
        if max_new < 1:
            raise ConfigError(f"--mtmcs-max-new-tokens={max_new}: expected a positive integer")
        pixels = opts.value(self.config, "--mtmcs-max-pixels")
        return GenerationSettings(
            max_new_tokens=max_new, temperature=0.0, image_placement=placement, max_pixels=pixels
        )

    # -- suites ---------------------------------------------------------------------------

    def load_suite(self, spec: str) -> Suite:
        if spec in self.suites:
            return self.suites[spec]
        from pytest_mtmcs.suite.native import resolve_suite

        kwargs: dict[str, Any] = {}
        if spec.startswith("mtmcs-bench:"):
            splits = opts.split_list(opts.value(self.config, "--mtmcs-splits"))
            modalities = opts.split_list(opts.value(self.config, "--mtmcs-modalities"))
            kwargs = {
                "splits": splits,
                "modalities": modalities,
                "variant_images": bool(opts.value(self.config, "--mtmcs-variant-images")),
            }
        suite = resolve_suite(spec, **kwargs)
        # The suite lives as long as the session: move its tens of thousands of objects out of
        # the cyclic collector's way (every later collection would walk them all again).
        import gc

        gc.freeze()
        settings = self.generation_settings(suite)
        self.suites[spec] = suite
        self.suite_meta[suite.name] = SuiteMeta(
            name=suite.name,
            version=suite.version,
            content_hash=suite.content_hash,
            spec=spec,
            defaults=dict(suite.defaults),
            settings=settings.as_dict(),
            dialogues=len(suite.dialogues),
        )
        return suite

    def _settings_of(self, item: DialogueItem) -> GenerationSettings:
        """The item's suite's generation settings, worked out once per suite collector."""
        parent = item.parent
        settings = self._settings.get(parent)
        if settings is None:
            settings = self._settings[parent] = self.generation_settings(self.suite_of(item))
        return settings

    def suite_of(self, item: DialogueItem) -> Suite:
        spec = getattr(item.parent, "spec", "") or shown_path(self.config, Path(item.path).parent)
        return self.load_suite(spec)

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        if not self.model_spec or self.config.option.collectonly:
            return
        import gc

        # A run of dialogues makes many small objects that live to its end (items, turn records,
        # results) and few reference cycles. At the default thresholds (700, 10, 10) the cyclic
        # collector runs every few hundred allocations and its full passes walk every result made
        # so far: a third of an instant-backend run's CPU at 30,080 dialogues. Collect rarely
        # while the session runs; its previous thresholds come back when it finishes.
        self._gc_thresholds = gc.get_threshold()
        gc.set_threshold(
            *(max(a, b) for a, b in zip(self._gc_thresholds, RUN_GC_THRESHOLDS, strict=True))
        )

    # -- collection -------------------------------------------------------------------------

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(
        self, session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
    ) -> None:
        self.items = list(items)
        if self.shard_info:
            selected: dict[str, int] = {}
            for it in items:
                if isinstance(it, DialogueItem):
                    suite = it.stash[DIALOGUE_KEY].suite
                    selected[suite] = selected.get(suite, 0) + 1
            self.shard_info["selected"] = selected
        self._check_suite_settings()
        has_dialogues = any(isinstance(i, DialogueItem) for i in items)
        if has_dialogues and not config.option.collectonly and not self.model_spec:
            raise pytest.UsageError(
                "pytest-mtmcs: dialogues were collected but no model is set: pass "
                "--mtmcs-model=SPEC (e.g. tiny:qwen2.5-vl, hf:PATH, openai:MODEL) or set "
                "mtmcs_model in [tool.pytest.ini_options]"
            )
        if has_dialogues and not config.option.collectonly:
            from pytest_mtmcs.harness.preflight import outputs_or_usage_error

            outputs_or_usage_error(self)
            import gc

            # The collected dialogues (turns, images' paths, items) live to the end of the run:
            # move them out of the cyclic collector's reach, or every full collection during the
            # run walks all of them (about a third of the engine's CPU on 30,080 dialogues).
            # Garbage made before this point is freed at exit instead of during the run.
            gc.freeze()

    def _check_suite_settings(self) -> None:
        """Buckets and thresholds against each collected suite, before any model runs."""
        from pytest_mtmcs.analysis.thresholds import validate_thresholds
        from pytest_mtmcs.outcome.gate import thresholds_for

        end = self.end_options()
        for name, meta in self.suite_meta.items():
            try:
                validate_thresholds(
                    thresholds_for(end.thresholds, end.threshold_origin, meta.as_dict()),
                    self.buckets_for(name),
                )
            except ConfigError as exc:
                raise pytest.UsageError(f"pytest-mtmcs: suite {name}: {exc}") from None

    # -- running ----------------------------------------------------------------------------

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
            self._share_pos = {it.nodeid: i for i, it in enumerate(self._share)}
        return self._share

    def backend_options(self, base_url_flag: str = "--mtmcs-base-url") -> Any:
        """BackendOptions from the run's options; the base URL from `base_url_flag`."""
        from pytest_mtmcs.backends import BackendOptions

        spec = self.model_spec or ""
        device = opts.value(self.config, "--mtmcs-device")
        if device is None and spec.split(":", 1)[0] in ("hf", "tiny"):
            device = _worker_device()
        return BackendOptions(
            batch_size=opts.batch_size(self.config),
            concurrency=int(opts.value(self.config, "--mtmcs-concurrency")),
            base_url=opts.value(self.config, base_url_flag),
            dtype=str(opts.value(self.config, "--mtmcs-dtype")),
            device=device,
            timeout_s=float(opts.value(self.config, "--mtmcs-timeout")),
            max_retries=int(opts.value(self.config, "--mtmcs-retries")),
            trust_remote_code=bool(opts.value(self.config, "--mtmcs-trust-remote-code")),
        )

    def judge_options(self) -> Any:
        """What a model judge needs: its backend options (--mtmcs-judge-base-url) and the cache."""
        from pytest_mtmcs.judges.model_judges import ModelJudgeOptions

        if self._cache is None:
            self._cache = self._open_cache()
        return ModelJudgeOptions(
            self.backend_options("--mtmcs-judge-base-url"),
            self._cache,
            cascade_threshold=opts.value(self.config, "--mtmcs-cascade-threshold"),
        )

    def _make_engine(self, settings: GenerationSettings) -> Any:
        from pytest_mtmcs.backends import create_backend
        from pytest_mtmcs.engine.runner import Engine
        from pytest_mtmcs.judges import create_judge

        if self._backend is None:
            spec = self.model_spec
            assert spec is not None
            # Nothing is kept unless backend and judge both build: a half-built engine would
            # grade with a judge that does not exist.
            backend = create_backend(spec, self.backend_options())
            guards = opts.value(self.config, "--mtmcs-guard") or ()
            if guards:
                from pytest_mtmcs.engine.guarded_backend import create_guarded_backend

                backend = create_guarded_backend(
                    backend, list(guards), self.backend_options("--mtmcs-guard-base-url")
                )
            if self._cache is None:
                self._cache = self._open_cache()
            self._judge = create_judge(
                str(opts.value(self.config, "--mtmcs-judge")), self.judge_options()
            )
            self._backend = backend
            self._progress = self._make_progress()
        from pytest_mtmcs.backends.cache import NullCache

        # No cache keys to compute when nothing is cached.
        cache = None if isinstance(self._cache, NullCache) else self._cache
        return Engine(self._backend, self._judge, settings, cache, self._progress)

    def _open_cache(self) -> Any:
        from pytest_mtmcs.backends.cache import NullCache, ResponseCache

        if opts.value(self.config, "--mtmcs-no-cache"):
            return NullCache()
        path = opts.value(self.config, "--mtmcs-cache")
        if not path:
            cache = getattr(self.config, "cache", None)
            if cache is None:  # -p no:cacheprovider
                return NullCache()
            path = cache.mkdir("mtmcs") / "responses.sqlite"
        return ResponseCache(path)

    def _make_progress(self) -> Any:
        from pytest_mtmcs.harness.progress import Progress

        mode = opts.value(self.config, "--mtmcs-progress")
        enabled = mode == "on" or (mode == "auto" and self.config.option.verbose >= 0)
        label = _worker_id(self.config) or "mtmcs"
        return Progress(
            len(self._share_items()),
            label,
            sys.__stderr__ or sys.stderr,
            min_interval_s=0.0 if mode == "on" else 5.0,
            enabled=enabled,
        )

    def engine_for(self, settings: GenerationSettings) -> Any:
        if settings not in self._engines:
            self._engines[settings] = self._make_engine(settings)
        return self._engines[settings]

    def run_item(self, item: DialogueItem) -> None:
        """Makes sure the item's dialogue has a result, generating ahead for the ones after it."""
        if item.nodeid not in self.done:
            share = self._share_items()
            lookahead = max(1, int(opts.value(self.config, "--mtmcs-lookahead")))
            start = self._share_pos.get(item.nodeid)
            chunk: list[DialogueItem] = [item]
            if start is not None:
                chunk = [
                    it for it in share[start : start + lookahead] if it.nodeid not in self.done
                ]
            by_settings: dict[GenerationSettings, list[DialogueItem]] = {}
            for it in chunk:
                by_settings.setdefault(self._settings_of(it), []).append(it)
            for settings, group in by_settings.items():
                from pytest_mtmcs.harness.preflight import building

                with building(self, item):
                    engine = self.engine_for(settings)
                out = engine.run([it.stash[DIALOGUE_KEY] for it in group])
                for it in group:
                    self.done[it.nodeid] = out[it.stash[DIALOGUE_KEY].id]
        result = self.done[item.nodeid]
        item.stash[RESULT_KEY] = result
        item.user_properties.extend(self._properties(item, result))
        if result.error is not None:
            # pytrace=False: the message is the report; our stack is of no use to the reader.
            from pytest_mtmcs.outcome.text import printable

            pytest.fail(
                f"{item.name}: model backend failed: {printable(result.error)}\n"
                "Counted as an error (never a pass). Completed turns are in the response cache; "
                "re-run to resume.",
                pytrace=False,
            )

    # -- outcomes -------------------------------------------------------------------------

    def baselines(self) -> Any:
        if self._baselines is None:
            from pytest_mtmcs.baseline.store import BaselineSet

            self._baselines = BaselineSet.from_config(self.config)
        return self._baselines

    def buckets_for(self, suite_name: str) -> Any:
        from pytest_mtmcs.analysis.buckets import Buckets

        if suite_name not in self._buckets:
            self._buckets[suite_name] = Buckets.parse(self.bucket_spec(suite_name))
        return self._buckets[suite_name]

    def _properties(self, item: DialogueItem, result: DialogueResult) -> list[tuple[str, Any]]:
        buckets = self.buckets_for(result.suite)
        return [
            ("mtmcs_bucket", buckets.bucket_of(result.user_turns)),
            ("mtmcs_verdict", result.verdict),
            ("mtmcs_score", f"{result.score:.2f}"),
            ("mtmcs_flip", self.flip_status(result)),
        ]

    def bucket_spec(self, suite_name: str) -> str:
        from pytest_mtmcs.analysis.buckets import DEFAULT

        spec = opts.raw(self.config, "--mtmcs-buckets")
        if spec:
            return str(spec)
        meta = self.suite_meta.get(suite_name)
        if meta and meta.defaults.get("buckets"):
            return str(meta.defaults["buckets"])
        return DEFAULT

    def flip_status(self, result: DialogueResult) -> str:
        """`regressed`, `fixed`, `still_failing`, `new` (no baseline entry) or `same`."""
        before = self.baselines().ok_before(result.suite, result.id)
        if result.verdict == "error":
            return "error"
        if before is None:
            return "new"
        if before and not result.ok:
            return "regressed"
        if not before and result.ok:
            return "fixed"
        if not before and not result.ok:
            return "still_failing"
        return "same"

    def check(self, item: DialogueItem) -> None:
        """The body of every dialogue test: pass, xfail (known failure) or fail, per the gate."""
        __tracebackhide__ = True
        result = item.stash[RESULT_KEY]
        if result.ok:
            return
        from pytest_mtmcs.engine.grading import describe
        from pytest_mtmcs.outcome.terminal import format_dialogue

        gate = opts.value(self.config, "--mtmcs-gate")
        flip = self.flip_status(result)
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
        known = (
            "known failure (also failing in the baseline)"
            if flip == "still_failing"
            else "not ok (no baseline to compare with)"
        )
        # Reported as xfailed by makereport: raising pytest.xfail here would cost a formatted
        # traceback per dialogue, most of the run time on a fast backend.
        item.stash[XFAIL_KEY] = f"{reason}; {known}"

    # -- reports ----------------------------------------------------------------------------

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
            setattr(report, STATUS_ATTR, self.flip_status(result))
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

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        data = getattr(report, RESULT_ATTR, None)
        if data is not None and not self.is_worker:
            # In one process the result object is at hand; from a worker, only its plain data.
            done = self.done.get(report.nodeid)
            self.results[report.nodeid] = done if done else DialogueResult.from_dict(data)

    # -- end of session -------------------------------------------------------------------

    def run_info(self) -> dict[str, Any]:
        """Plain data describing this process's model, judge and cache: shared with the controller.

        Round-tripped through JSON: only plain data may cross to the xdist controller (a
        backend's fingerprint could otherwise carry a library's own version object).
        """
        import json

        return json.loads(json.dumps(self._run_info(), default=str))

    def _run_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "suites": {k: v.as_dict() for k, v in self.suite_meta.items()},
            "model": self.model_spec,
        }
        if self.shard_info:
            info["shard"] = self.shard_info
        if self._backend is not None and self._judge is not None:
            engines = list(self._engines.values())
            info["fingerprint"] = dict(engines[0].fingerprint) if engines else {}
            info["judge"] = self._judge.identity.as_dict()
            # A cascade's replies judged / escalated / failed there (summed over processes).
            info["judge_counts"] = dict(getattr(self._judge, "counts", None) or {})
            info["model_calls"] = sum(e.model_calls for e in engines)
            # Replicas of an openai: backend that were set aside (for the summary).
            replicas = getattr(self._backend, "replica_summary", None)
            if callable(replicas) and replicas():
                info["replicas"] = list(replicas())
            info["cache"] = {
                "hits": getattr(self._cache, "hits", 0),
                "misses": getattr(self._cache, "misses", 0),
                "writes": getattr(self._cache, "writes", 0),
            }
        return info

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        import gc

        # The results stay alive to the end: spare pytest's final collections from walking them.
        gc.freeze()
        if self._gc_thresholds is not None:
            gc.set_threshold(*self._gc_thresholds)
            self._gc_thresholds = None
        if self._progress is not None:
            self._progress.finish()
        if self.is_worker:
            self.config.workeroutput["mtmcs"] = self.run_info()  # type: ignore[attr-defined]
            return
        from pytest_mtmcs.harness.interrupts import interrupted_summary

        stopped = interrupted_summary(self.config, session, len(self.results))
        if stopped is not None:  # Ctrl-C / SIGTERM: partial numbers; no gate, report, baseline
            self.summary_lines = stopped
            return
        if not self.results:
            return
        from pytest_mtmcs.outcome.finish import Sources, finish, merge_infos

        run = merge_infos([self.run_info(), *self.worker_outputs])
        # An xdist controller never loads the suites: their defaults (buckets) come from the
        # workers.
        for name, m in run.suites.items():
            self.suite_meta.setdefault(name, SuiteMeta(**m))
        from pytest_mtmcs.harness.preflight import EndOfRunFailed

        with EndOfRunFailed(self, session) as failed:
            outcome = finish(
                self.results.values(),
                {name: m.as_dict() for name, m in self.suite_meta.items()},
                self.baselines(),
                self.end_options(),
                run,
                Sources(dialogues=self.dialogues_of, judge=self.judge_for_rejudge),
            )
        if failed.error:  # a full disk, a report folder gone: said, failed, no traceback
            return
        self.summary_lines = outcome.lines
        if outcome.failed and session.exitstatus in (
            pytest.ExitCode.OK,
            pytest.ExitCode.NO_TESTS_COLLECTED,
        ):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        self.gate_failed = outcome.failed

    def end_options(self) -> Any:
        """The options the end of the run reads, as plain data (finish.EndOptions)."""
        from pytest_mtmcs.outcome.finish import EndOptions

        c = self.config
        partial = bool(c.option.keyword or c.option.markexpr) or any("::" in str(a) for a in c.args)
        buckets = opts.raw(c, "--mtmcs-buckets")
        return EndOptions(
            gate=str(opts.value(c, "--mtmcs-gate")),
            max_drop=float(opts.value(c, "--mtmcs-max-drop")),
            alpha=float(opts.value(c, "--mtmcs-alpha")),
            allow_mismatch=bool(opts.value(c, "--mtmcs-allow-mismatch")),
            rejudge=bool(opts.value(c, "--mtmcs-rejudge")),
            max_judge_errors=int(opts.value(c, "--mtmcs-max-judge-errors") or 0),
            thresholds=tuple(opts.raw(c, "--mtmcs-threshold") or ()),
            threshold_origin=(
                "--mtmcs-threshold" if c.getoption("mtmcs_threshold") else "ini mtmcs_threshold"
            ),
            buckets=str(buckets) if buckets else None,
            update_baseline=bool(getattr(c.option, "update_snapshots", False)),
            partial=partial,
            baseline_transcripts=bool(opts.value(c, "--mtmcs-baseline-transcripts")),
            report_dir=opts.value(c, "--mtmcs-report"),
            guard=bool(opts.value(c, "--mtmcs-guard")),
            root=Path(c.rootpath),
            shard=self.shard,
        )

    def dialogues_of(self, suite_name: str) -> dict[str, Any]:
        """A suite's dialogues by id; an xdist controller loads the suite here, from its spec."""
        for loaded in self.suites.values():
            if loaded.name == suite_name:
                return {d.id: d for d in loaded.dialogues}
        meta = self.suite_meta.get(suite_name)
        if meta is None or not meta.spec:
            raise ConfigError(f"cannot find the suite {suite_name!r} to load its dialogues")
        return {d.id: d for d in self.load_suite(meta.spec).dialogues}

    def judge_for_rejudge(self) -> Any:
        """This run's judge; created here on an xdist controller, which runs no dialogues."""
        if self._judge is None:
            from pytest_mtmcs.judges import create_judge

            self._judge = create_judge(
                str(opts.value(self.config, "--mtmcs-judge")), self.judge_options()
            )
        return self._judge

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        # After the summary: a re-judge on the controller may still have used the judge.
        for resource in (self._judge, self._backend, self._cache):
            close = getattr(resource, "close", None)
            if close is not None:
                close()

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.summary_lines:
            return
        terminalreporter.section("mtmcs safety summary", sep="=", bold=True)
        for line in self.summary_lines:
            red = self.gate_failed and ("FAIL" in line or "REGRESS" in line)
            terminalreporter.line(line, red=red)


class XdistHooks:
    """Hooks that exist only when pytest-xdist is installed."""

    def __init__(self, session: MtmcsSession) -> None:
        self.session = session

    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        if config.getvalue("dist") != "load":
            return None
        from pytest_mtmcs.harness.xdist import PartitionScheduling

        return PartitionScheduling(config, log)

    def pytest_configure_node(self, node: Any) -> None:
        if self.session.config.getvalue("dist") == "load":
            node.workerinput["mtmcs_partition"] = True

    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        out = getattr(node, "workeroutput", {}).get("mtmcs")
        if out:
            self.session.worker_outputs.append(out)


def _worker_device() -> str | None:
    """xdist worker i gets GPU i mod the visible count (an outer CUDA_VISIBLE_DEVICES holds)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker is None:
        return None
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available() or torch.cuda.device_count() == 0:
        return "cpu"
    idx = int(worker.removeprefix("gw")) % torch.cuda.device_count()
    return f"cuda:{idx}"


def load_all(session: pytest.Session, specs: Sequence[str]) -> list[pytest.Item]:
    """Collects `--mtmcs-suite` specs as suite collectors under the session."""
    from pytest_mtmcs.harness.items import SuiteCollector

    items: list[pytest.Item] = []
    for spec in specs:
        prefix, sep, rest = spec.partition(":")
        path = Path(rest if sep and len(prefix) > 1 else spec)
        collector = SuiteCollector.for_spec(session, spec, path)
        items.extend(session.genitems(collector))
    return items


__all__ = ["DialogueFailure", "MtmcsError", "MtmcsSession", "XdistHooks", "load_all"]
