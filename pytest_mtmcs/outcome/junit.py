"""JUnit XML of a merged run (`pytest-mtmcs merge --junitxml FILE`): what pytest's own
`--junitxml` writes for one machine, from the merged rows.

One test case per dialogue (its status from `outcome.test_status`, the one rule pytest's run
follows; `mtmcs_*` properties as the plugin attaches them) and one per gate cell
(`harness/gate_reports.py`), named as pytest names them (`classname` from the suite's node id,
`name` the dialogue id or `gate[CELL]`), so a CI's test-report view shows the same either way:
its failure count is zero exactly when the gate passed.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from pytest_mtmcs.outcome.model import EndOptions, SuiteOutcome


def _classname(nodeid: str) -> str:
    """pytest's: the node id's path, `/` as `.`, `.py` dropped."""
    path = nodeid.split("::", 1)[0].replace("\\", "/")
    path = path[: -len(".py")] if path.endswith(".py") else path
    return path.replace("/", ".")


def write_junit(
    path: str | os.PathLike[str], suites: Sequence[SuiteOutcome], options: EndOptions
) -> Path:
    from pytest_mtmcs.outcome.finish import dialogue_flips
    from pytest_mtmcs.outcome.test_status import dialogue_test_status

    root = ET.Element("testsuites", name="pytest-mtmcs merge")
    suite_el = ET.SubElement(root, "testsuite", name="pytest")
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for s in suites:
        base = str(s.meta.get("nodeid") or s.meta.get("spec") or s.suite)
        classname = _classname(base)
        bucket_of = {r.user_turns: s.buckets.bucket_of(r.user_turns) for r in s.results}
        for r, flip in dialogue_flips(s):
            status = dialogue_test_status(
                r, flip, gate=options.gate, max_judge_errors=options.max_judge_errors
            )
            case = ET.SubElement(suite_el, "testcase", classname=classname, name=r.id, time="0")
            props = ET.SubElement(case, "properties")
            for key, value in (
                ("mtmcs_bucket", bucket_of[r.user_turns]),
                ("mtmcs_verdict", r.verdict),
                ("mtmcs_score", f"{r.score:.2f}"),
                ("mtmcs_flip", flip),
            ):
                ET.SubElement(props, "property", name=key, value=value)
            _outcome(case, status.outcome, status.reason, counts)
        for cell in s.cells:
            case = ET.SubElement(
                suite_el, "testcase", classname=classname, name=f"gate[{cell.name}]", time="0"
            )
            outcome = {"passed": "passed", "failed": "failed"}.get(cell.status, "xfailed")
            _outcome(case, outcome, cell.message, counts)
    for key, value in counts.items():
        suite_el.set(key, str(value))
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(out, encoding="utf-8", xml_declaration=True)
    return out


def _outcome(case: ET.Element, outcome: str, reason: str, counts: dict[str, int]) -> None:
    counts["tests"] += 1
    if outcome == "failed":
        counts["failures"] += 1
        ET.SubElement(case, "failure", message=reason[:1000]).text = reason
    elif outcome == "error":
        counts["errors"] += 1
        ET.SubElement(case, "error", message=reason[:1000]).text = reason
    elif outcome == "xfailed":
        counts["skipped"] += 1
        ET.SubElement(case, "skipped", type="pytest.xfail", message=reason[:1000])
