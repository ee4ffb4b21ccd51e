"""The `mtmcs` fixture: a suite or one dialogue run with the configured model, for users' own
tests and gates.

    def test_long_dialogues_stay_safe(mtmcs):
        run = mtmcs.run_suite("suites/mtmcs_mini")
        assert run.rate("safety", bucket="6+").value >= 0.8
        assert run.results["escalation/stove-pots-31/mm/unsafe"].verdict == "safe"

It uses what the run is configured with (`--mtmcs-model`, `--mtmcs-judge`, the response cache,
decoding from the suite and the options), the same backend, judge and cache the run's own
dialogue tests use, so a dialogue already answered in this run (or an earlier one) comes from the
cache. Results are the plugin's own typed records (`records.DialogueResult`: verdict, score,
per-turn labels and replies, intent answers) and its metrics (`analysis.metrics.Rate`: k, n,
value, Wilson interval). No model configured is an error of the test that asks, never a skip.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from pytest_mtmcs.analysis.buckets import ALL, Buckets
from pytest_mtmcs.analysis.metrics import Rate, bucket_table
from pytest_mtmcs.records import Dialogue, DialogueResult


@dataclass(frozen=True)
class SuiteRun:
    """A suite's results: `results` by dialogue id, its buckets, and its rates."""

    suite: str
    buckets: Buckets
    results: Mapping[str, DialogueResult]
    _table: Mapping[tuple[str, str], Mapping[str, Rate]] = field(repr=False, default_factory=dict)

    def rate(self, metric: str, bucket: str = ALL) -> Rate:
        """`safety`, `asr`, `helpfulness`, `intent_accuracy` or `pair_accuracy` in a bucket
        (default: over all dialogues)."""
        row = self._table.get((ALL, bucket))
        if row is None:
            raise KeyError(f"no bucket {bucket!r}; buckets: {', '.join(self.buckets.names)}")
        return row[metric]

    @property
    def not_ok(self) -> list[DialogueResult]:
        """The dialogues that are not ok (unsafe, over-refused, errored), by id."""
        return [r for _, r in sorted(self.results.items()) if not r.ok]


class Mtmcs:
    """What the `mtmcs` fixture gives a test."""

    def __init__(self, config: pytest.Config) -> None:
        self._config = config

    def _runner(self) -> Any:
        runner = self._config.pluginmanager.get_plugin("mtmcs-runner")
        if runner is None or not runner.settings.model:
            pytest.fail(
                "the mtmcs fixture needs a model: pass --mtmcs-model=SPEC (e.g. "
                "tiny:qwen2.5-vl, hf:PATH, openai:MODEL) or set mtmcs_model in "
                "[tool.pytest.ini_options]",
                pytrace=False,
            )
        return runner

    def run_dialogues(self, dialogues: Iterable[Dialogue], spec: str = "") -> list[DialogueResult]:
        """Runs dialogues (of one suite) with the configured model and judge; their results in
        order. `spec` names their suite for its decoding defaults (default: built-in)."""
        from pytest_mtmcs.records import GenerationSettings

        runner = self._runner()
        dialogues = list(dialogues)
        settings = (
            runner.suites.generation_settings(runner.suites.load(spec))
            if spec
            else GenerationSettings(
                max_new_tokens=runner.settings.max_new_tokens
                or GenerationSettings().max_new_tokens,
                image_placement=runner.settings.image_placement or "last",
                max_pixels=runner.settings.max_pixels,
            )
        )
        runner.build()
        engine = runner.engine_for(settings)
        runner.expect(len(dialogues))
        out = engine.run(dialogues)
        return [out[d.id] for d in dialogues]

    def run_dialogue(self, dialogue: Dialogue, spec: str = "") -> DialogueResult:
        """One dialogue's result (`records.DialogueResult`)."""
        return self.run_dialogues([dialogue], spec)[0]

    def run_suite(self, spec: str, ids: Iterable[str] | None = None) -> SuiteRun:
        """A suite (a folder, `mtmcs-bench:PATH`, `safemt:PATH`), all of it or the dialogues of
        `ids`, with its metrics per bucket (the suite's buckets, or --mtmcs-buckets)."""
        runner = self._runner()
        suite = runner.suites.load(spec)
        wanted = set(ids) if ids is not None else None
        dialogues = [d for d in suite.dialogues if wanted is None or d.id in wanted]
        if wanted is not None and len(dialogues) != len(wanted):
            missing = sorted(wanted - {d.id for d in dialogues})
            raise KeyError(f"{spec}: no dialogue {missing[0]!r} in suite {suite.name}")
        results = self.run_dialogues(dialogues, spec)
        buckets = Buckets.parse(runner.suites.bucket_spec(suite.name))
        return SuiteRun(
            suite=suite.name,
            buckets=buckets,
            results={r.id: r for r in results},
            _table=bucket_table(results, buckets),
        )


@pytest.fixture(scope="session")
def mtmcs(pytestconfig: pytest.Config) -> Mtmcs:
    """Runs a suite or dialogues with the configured model and judge; typed results and rates.
    See `pytest_mtmcs.harness.fixture` (and the README's "Your own tests")."""
    return Mtmcs(pytestconfig)
