"""Acceptance: `-n 0` and `-n 2` give identical results and summary on the tiny checkpoint, and
each xdist worker generates only its own share of the dialogues.

Both runs are real subprocesses (`python -m pytest`) on a 32-dialogue copy of the bundled suite,
started together. A `conftest.py` in the temporary project records, on the controller, every
dialogue result the plugin attaches to its call reports (`report.mtmcs`) with the worker that ran
it, and each worker's `workeroutput["mtmcs"]` (its model calls) when the worker shuts down.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "suites" / "mtmcs_mini"
MODEL = "tiny:qwen2.5-vl"
DIALOGUES = 32
SUMMARY_RE = re.compile(r"(\d+) answers? from cache \(model and judge\), (\d+) model requests?")
HEADER = "mtmcs safety summary"

CONFTEST = """
import json
import os


def _write(record):
    with open(os.environ["MTMCS_TEST_OUT"], "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\\n")


def pytest_runtest_logreport(report):
    data = getattr(report, "mtmcs", None)
    if data is None or os.environ.get("PYTEST_XDIST_WORKER"):
        return
    node = getattr(report, "node", None)
    worker = node.gateway.id if node is not None else "main"
    _write({"kind": "result", "nodeid": report.nodeid, "worker": worker, "result": data})


def pytest_testnodedown(node, error):
    out = getattr(node, "workeroutput", {}).get("mtmcs", {})
    _write({"kind": "worker", "worker": node.gateway.id, "model_calls": out.get("model_calls")})
"""


def plugin_args() -> list[str]:
    installed = any(ep.value == "pytest_mtmcs.plugin" for ep in entry_points(group="pytest11"))
    return [] if installed else ["-p", "pytest_mtmcs.plugin"]


def make_project(root: Path) -> Path:
    from pytest_mtmcs.records import Suite
    from pytest_mtmcs.suite import load_suite, write_suite

    suite = load_suite(BUNDLED)
    chosen = suite.dialogues[:DIALOGUES]
    assert all(sum(1 for d in chosen if d.pair == x.pair) == 2 for x in chosen)  # whole twins
    write_suite(
        Suite(suite.name, suite.version, "", chosen, "", defaults=suite.defaults), root / "suite"
    )
    (root / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    (root / "conftest.py").write_text(CONFTEST, encoding="utf-8")
    return root


def start(project: Path, name: str, *args: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env.pop("PYTEST_ADDOPTS", None)
    env.pop("PYTEST_XDIST_WORKER", None)
    env["MTMCS_TEST_OUT"] = str(project / f"{name}.jsonl")
    cmd = [
        sys.executable, "-m", "pytest", "suite", "-q", "-p", "no:cacheprovider", *plugin_args(),
        f"--mtmcs-model={MODEL}", "--mtmcs-max-new-tokens=8", "--mtmcs-no-cache", *args,
    ]  # fmt: skip
    return subprocess.Popen(
        cmd, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def finish(proc: subprocess.Popen[bytes]) -> str:
    out, _ = proc.communicate(timeout=300)
    text = out.decode("utf-8", "replace")
    assert proc.returncode == 0, text[-3000:]
    return text


def summary_section(output: str) -> list[str]:
    """The plugin's summary section, without pytest's own closing line (it holds a duration)."""
    assert HEADER in output, output[-3000:]
    lines = output.split(HEADER, 1)[1].splitlines()[1:]
    return [ln for ln in lines if not re.search(r"\bin [\d.]+s\b", ln)]


def records(project: Path, name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (project / f"{name}.jsonl").read_text().splitlines()]


def comparable(result: dict[str, Any]) -> dict[str, Any]:
    """A result without its timings (wall-clock shares differ between runs)."""
    out = {k: v for k, v in result.items() if k != "latency_s"}
    out["replies"] = [{k: v for k, v in r.items() if k != "latency_s"} for r in result["replies"]]
    return out


def generations(result: dict[str, Any]) -> int:
    """Model calls a dialogue needs without a cache: one per live reply and per intent question."""
    return len(result["replies"]) + len(result["questions"])


@pytest.mark.slow
def test_n2_equals_n0_and_each_worker_generates_only_its_share(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    serial_proc = start(project, "serial", "-n", "0")
    xdist_proc = start(project, "xdist", "-n", "2")
    serial_out, xdist_out = finish(serial_proc), finish(xdist_proc)

    serial = {r["nodeid"]: r for r in records(project, "serial") if r["kind"] == "result"}
    xdist_rows = records(project, "xdist")
    parallel = {r["nodeid"]: r for r in xdist_rows if r["kind"] == "result"}
    assert len(serial) == DIALOGUES
    assert {k: comparable(v["result"]) for k, v in parallel.items()} == {
        k: comparable(v["result"]) for k, v in serial.items()
    }
    assert not any(r["result"]["error"] for r in serial.values())

    # Each worker ran half the dialogues and generated exactly what they need: no worker generated
    # ahead for dialogues another worker runs, and together they made the serial run's calls.
    m = SUMMARY_RE.search(serial_out)
    assert m, serial_out[-3000:]
    serial_calls = int(m.group(2))
    assert serial_calls == sum(generations(r["result"]) for r in serial.values())
    ran = Counter(r["worker"] for r in parallel.values())
    assert ran == {"gw0": DIALOGUES // 2, "gw1": DIALOGUES // 2}
    calls = {r["worker"]: r["model_calls"] for r in xdist_rows if r["kind"] == "worker"}
    # A worker whose workeroutput cannot be sent (not plain data) goes down at session end and
    # xdist starts a replacement: then there are more than two entries, or calls are missing.
    assert set(calls) == {"gw0", "gw1"} and None not in calls.values(), (
        f"worker outputs {calls}; xdist output:\n{xdist_out[-3000:]}"
    )
    needed: Counter[str] = Counter()
    for r in parallel.values():
        needed[r["worker"]] += generations(serial[r["nodeid"]]["result"])
    assert calls == dict(needed)
    assert sum(calls.values()) == serial_calls

    # The whole summary (tables, flips, the cache/generation line) is identical.
    assert summary_section(xdist_out) == summary_section(serial_out)
