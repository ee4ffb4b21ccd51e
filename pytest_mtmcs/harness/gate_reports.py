"""The gate's cells as test reports: what pytest users read (the counts line, `-r`, JUnit XML,
`--lf`) agrees with the gate's verdict.

Each cell the gate checked (`outcome.model.GateCell`: a bucket cell against a baseline, a
threshold, the judge-error budget, a refused comparison, a baseline that could not be recorded)
becomes a test report under its suite's node id, `SUITE::gate[6+:safety:vs:NAME]`, logged
through pytest's own `pytest_runtest_logreport` on the process that ends the run: the terminal
counts it, junitxml writes it as a test case (a failure when the cell failed, skipped with
`pytest.xfail` when it is inconclusive), and the last-failed cache records it. The XML's failure
count is zero exactly when the gate passed (with dialogue tests that errored counted as errors).

`--lf` after a failing gate: the failed cells' node ids are in pytest's last-failed cache, which
knows no such items; this plugin stores which dialogues each failing cell stands for (its not-ok
dialogues in that bucket) and, under `--lf`, adds them to the last-failed set before pytest
selects, so the re-run runs those dialogues and reports the cells again.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest

from pytest_mtmcs.outcome.model import GateCell, SuiteOutcome

CACHE_KEY = "mtmcs/gate-cells"


def cell_nodeid(suite_nodeid: str, cell: GateCell) -> str:
    return f"{suite_nodeid}::gate[{cell.name}]"


def report_cells(config: pytest.Config, suites: Iterable[SuiteOutcome]) -> None:
    """Logs each suite's gate cells as test reports; remembers what failing cells re-run."""
    from _pytest.reports import TestReport

    rerun: dict[str, list[str]] = {}
    for s in suites:
        base = str(s.meta.get("nodeid") or s.meta.get("spec") or s.suite)
        path = base.split("::", 1)[0]
        for cell in s.cells:
            nodeid = cell_nodeid(base, cell)
            outcome = {"passed": "passed", "failed": "failed"}.get(cell.status, "skipped")
            report = TestReport(
                nodeid=nodeid,
                location=(path, None, f"gate[{cell.name}]"),
                keywords={"mtmcs": 1, "gate": 1, s.suite: 1},
                outcome=outcome,  # type: ignore[arg-type]
                longrepr=cell.message if outcome == "failed" else None,
                when="call",
                user_properties=[("mtmcs_gate", cell.status), ("mtmcs_gate_detail", cell.message)],
            )
            report.mtmcs_gate = cell.status  # type: ignore[attr-defined]
            if cell.status == "inconclusive":
                # Shown as pytest shows an expected failure: neither a pass nor a failure.
                report.wasxfail = f"INCONCLUSIVE: {cell.message}"  # type: ignore[attr-defined]
            config.hook.pytest_runtest_logreport(report=report)
            if cell.status == "failed" and cell.dialogues:
                rerun[nodeid] = [f"{base}::{d}" for d in cell.dialogues]
    cache: Any = getattr(config, "cache", None)
    if cache is not None:
        stored = dict(cache.get(CACHE_KEY, {}))
        stored.update(rerun)
        cache.set(CACHE_KEY, stored)


def expand_last_failed(config: pytest.Config) -> None:
    """Under `--lf`: the dialogues behind each gate cell that failed last time join pytest's
    last-failed set (the cells themselves are not items it can select)."""
    if not getattr(config.option, "lf", False):
        return
    lf: Any = config.pluginmanager.get_plugin("lfplugin")
    cache: Any = getattr(config, "cache", None)
    if lf is None or cache is None:
        return
    cells: dict[str, list[str]] = cache.get(CACHE_KEY, {})
    for nodeid in [str(n) for n in lf.lastfailed if str(n) in cells]:
        for dialogue in cells[nodeid]:
            lf.lastfailed.setdefault(_key(dialogue), True)


def _key(nodeid: str) -> Any:
    """A key of pytest's last-failed set: a structured node id from pytest 9 on, else the
    string."""
    try:
        from _pytest.nodes import NodeId  # type: ignore[attr-defined]
    except ImportError:
        return nodeid
    return NodeId.parse(nodeid)
