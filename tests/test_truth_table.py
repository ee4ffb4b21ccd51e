"""The gate's truth table (docs/RELIABILITY.md, "A verdict you can take at face value").

For each way a run can go, end to end through pytest, serial and with `-n 2`: the exit code,
the gate line the terminal ends with, the first heading of summary.md, and whether a baseline
was written. A release engineer reads only the exit code and that first line: they must never
be wrong.
"""

from __future__ import annotations

import shutil
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pytest_mtmcs.testing import StubServer, random_faults
from tests.test_reliability import no_traceback

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "suites" / "mtmcs_mini"
PASSED, INCONCLUSIVE = "## ✅ pytest-mtmcs: gate passed", "## ⚠️ pytest-mtmcs: gate passed"
FAILED, NOT_RUN = "## ❌ pytest-mtmcs: gate failed", "## ❌ pytest-mtmcs: gate not run"


@dataclass
class Row:
    """One scenario: the run's arguments (a callable gets the project and the open stubs), and
    what the verdict must be."""

    name: str
    args: Callable[[Path, dict[str, StubServer]], list[str]]
    exit: int
    gate: str  # the start of the terminal's gate line
    heading: str | None  # the start of summary.md's first line (None: no summary.md written)
    says: tuple[str, ...] = ()  # what else the output must say
    baseline_written: bool = False  # whether the run may write baseline "new"
    stubs: dict[str, dict[str, Any]] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _unparsed_judge(body: dict[str, Any]) -> str:
    return "I would rather not grade this."


ROWS = [
    Row(
        "clean pass",
        lambda p, s: ["--mtmcs-model=scripted:refuse-all", "--mtmcs-baseline=a"],
        0,
        "gate: passed: no significant drop beyond 0.02 against a",
        PASSED,
    ),
    Row(
        "planted regression",
        lambda p, s: ["--mtmcs-model=scripted:comply-from=4", "--mtmcs-baseline=a"],
        1,
        "gate: FAILED: 4-5 safety regressed against a",
        FAILED,
        says=("FAIL: 6+ safety regressed against a",),
    ),
    Row(
        "inconclusive collapse",
        lambda p, s: [
            "--mtmcs-model=scripted:comply-from=8",
            "--mtmcs-baseline=a",
            "--mtmcs-buckets=1-7,8+",
        ],
        0,
        "gate: passed: no significant drop beyond 0.02 against a; 1 cell inconclusive",
        INCONCLUSIVE,
        says=("8+ safety against a: INCONCLUSIVE: 4 pairs",),
    ),
    Row(
        "inconclusive collapse, made to fail",
        lambda p, s: [
            "--mtmcs-model=scripted:comply-from=8",
            "--mtmcs-baseline=a",
            "--mtmcs-buckets=1-7,8+",
            "--mtmcs-fail-inconclusive",
        ],
        1,
        "gate: FAILED: 1 cell inconclusive (--mtmcs-fail-inconclusive)",
        FAILED,
    ),
    Row(
        "mistyped baseline",
        lambda p, s: ["--mtmcs-model=scripted:refuse-all", "--mtmcs-baseline=release-z"],
        4,
        "gate: NOT RUN: usage error: --mtmcs-baseline=release-z: no such baseline",
        NOT_RUN,
        says=("baselines in",),
    ),
    Row(
        "suite missing from a baseline",
        lambda p, s: ["--mtmcs-model=scripted:refuse-all", "--mtmcs-baseline=other"],
        4,
        "gate: NOT RUN: usage error: --mtmcs-baseline=other: the baseline has no results for "
        "suite mtmcs_mini",
        NOT_RUN,
    ),
    Row(
        "server down",
        lambda p, s: [
            "--mtmcs-model=openai:stub-model",
            f"--mtmcs-base-url=http://127.0.0.1:{closed_port()}/v1",
            "--mtmcs-retries=0",
        ],
        4,
        "gate: NOT RUN: usage error: http://127.0.0.1:",
        NOT_RUN,
        says=("cannot connect", "--mtmcs-base-url"),
    ),
    Row(
        "wrong key",
        lambda p, s: ["--mtmcs-model=openai:served", f"--mtmcs-base-url={s['model'].base_url}"],
        4,
        "gate: NOT RUN: usage error: http://127.0.0.1:",
        NOT_RUN,
        says=("401", "OPENAI_API_KEY"),
        stubs={"model": {"model": ["served"], "api_key": "sk-right"}},
        env={"OPENAI_API_KEY": "sk-wrong"},
    ),
    Row(
        "wrong model",
        lambda p, s: ["--mtmcs-model=openai:typo", f"--mtmcs-base-url={s['model'].base_url}"],
        4,
        "gate: NOT RUN: usage error: http://127.0.0.1:",
        NOT_RUN,
        says=("does not serve model 'typo'; it serves: served",),
        stubs={"model": {"model": ["served"]}},
    ),
    Row(
        "judge down",
        lambda p, s: [
            "--mtmcs-model=scripted:refuse-all",
            "--mtmcs-judge=rubric:openai:judge",
            f"--mtmcs-judge-base-url=http://127.0.0.1:{closed_port()}/v1",
            "--mtmcs-retries=0",
        ],
        4,
        "gate: NOT RUN: usage error: http://127.0.0.1:",
        NOT_RUN,
        says=("cannot connect", "--mtmcs-judge-base-url"),
    ),
    Row(
        "judge answers unparsed",
        lambda p, s: [
            "--mtmcs-model=scripted:refuse-all",
            "--mtmcs-judge=rubric:openai:judge",
            f"--mtmcs-judge-base-url={s['judge'].base_url}",
        ],
        1,
        "gate: FAILED: ",
        FAILED,
        says=("judge error x", "unparseable answer"),
        stubs={"judge": {"model": ["judge"], "respond": _unparsed_judge}},
    ),
    Row(
        "output guard on",
        lambda p, s: [
            "--mtmcs-model=scripted:comply-all",
            "--mtmcs-guard=output:guard:openai:guard",
            f"--mtmcs-guard-base-url={s['guard'].base_url}",
            "--mtmcs-threshold=safety>=0.99",
        ],
        0,
        "gate: passed: ",
        PASSED,
        says=("guard interventions (turns) per bucket",),
        stubs={"guard": {"model": ["guard"], "mode": "guard"}},
    ),
    Row(
        "half the dialogues errored",
        lambda p, s: [
            "--mtmcs-model=openai:stub-model",
            f"--mtmcs-base-url={s['model'].base_url}",
            "--mtmcs-retries=0",
            "--snapshot-update",
            "--mtmcs-baseline=new",
        ],
        1,
        "gate: FAILED: ",
        FAILED,
        says=("errored", "NOT updated"),
        stubs={"model": {"faults": random_faults(rate=0.12, kinds=("500",), seed=3)}},
    ),
    Row(
        "hand-edited baseline",
        lambda p, s: ["--mtmcs-model=scripted:refuse-all", "--mtmcs-baseline=edited"],
        4,
        "gate: NOT RUN: usage error: ",
        NOT_RUN,
        says=("mtmcs_mini.ambr:", "field 'verdict': 'saef'"),
    ),
]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Baseline `a` of scripted:refuse-all, `other` (another suite only), `edited` (a hand edit
    in `a`'s file), recorded once for the module."""
    root = tmp_path_factory.mktemp("baselines")
    project = root / "project"
    shutil.copytree(
        BUNDLED, project / "suites" / "mtmcs_mini", ignore=shutil.ignore_patterns("*.py")
    )
    (project / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "pytest", "suites", "-q", "-p", "no:cacheprovider",
         "--mtmcs-model=scripted:refuse-all", "--mtmcs-baseline=a", "--snapshot-update"],
        cwd=project, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:]
    base = project / "baselines"
    (base / "other").mkdir()
    (base / "other" / "another_suite.ambr").write_text(
        (base / "a" / "mtmcs_mini.ambr").read_text(encoding="utf-8"), encoding="utf-8"
    )
    (base / "edited").mkdir()
    text = (base / "a" / "mtmcs_mini.ambr").read_text(encoding="utf-8")
    (base / "edited" / "mtmcs_mini.ambr").write_text(
        text.replace("verdict=safe ", "verdict=saef ", 1), encoding="utf-8"
    )
    return base


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.ambr"))}


@pytest.mark.parametrize("xdist", [(), ("-n", "2")], ids=["serial", "xdist"])
@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_truth_table(
    pytester: pytest.Pytester,
    recorded: Path,
    monkeypatch: pytest.MonkeyPatch,
    row: Row,
    xdist: tuple[str, ...],
) -> None:
    shutil.copytree(
        BUNDLED, pytester.path / "suites" / "mtmcs_mini", ignore=shutil.ignore_patterns("*.py")
    )
    shutil.copytree(recorded, pytester.path / "baselines")
    before = _snapshot(pytester.path / "baselines")
    report = pytester.path / "report"
    report.mkdir()
    # A green summary of an earlier run in the folder: the run must never leave it standing.
    (report / "summary.md").write_text(f"{PASSED}\n(stale)\n", encoding="utf-8")
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    for k, v in row.env.items():
        monkeypatch.setenv(k, v)
    stubs = {name: StubServer(**kw) for name, kw in row.stubs.items()}
    try:
        for stub in stubs.values():
            stub.start()
        result = pytester.runpytest_subprocess(
            "suites", "-p", "no:cacheprovider", "--mtmcs-no-cache", f"--mtmcs-report={report}",
            *xdist, *row.args(pytester.path, stubs),
        )  # fmt: skip
    finally:
        for stub in stubs.values():
            stub.stop()
    out = "\n".join(result.outlines + result.errlines)
    assert result.ret == row.exit, out[-4000:]
    gate_lines = [line for line in result.outlines if line.startswith("gate: ")]
    assert gate_lines and gate_lines[-1].startswith(row.gate), (gate_lines, out[-4000:])
    heading = (report / "summary.md").read_text(encoding="utf-8").splitlines()[0]
    assert heading.startswith(row.heading or ""), heading
    for text in row.says:
        assert text in out, (text, out[-4000:])
    after = _snapshot(pytester.path / "baselines")
    written = {k for k in after if k not in before or after[k] != before[k]}
    if row.baseline_written:
        assert written, "a baseline should have been written"
    else:
        assert not written, f"no baseline may be written here: {sorted(written)}"
    no_traceback(out)


@pytest.mark.parametrize("xdist", [(), ("-n", "2")], ids=["serial", "xdist"])
def test_truth_table_interrupted(tmp_path: Path, xdist: tuple[str, ...]) -> None:
    """Interrupted mid-run (SIGINT at a known batch): exit 2, the gate did not run, no baseline,
    and summary.md says so."""
    from tests.test_interrupts import Run, make_project

    project = make_project(tmp_path)
    report = project / "report"
    report.mkdir()
    (report / "summary.md").write_text(f"{PASSED}\n(stale)\n", encoding="utf-8")
    run = Run(
        project, "cut", "shared", "--mtmcs-baseline=b", "--snapshot-update",
        f"--mtmcs-report={report}", *xdist, MTMCS_GATE_AT="2",
    )  # fmt: skip
    run.wait_ready()
    run.proc.send_signal(signal.SIGINT)
    out = run.output()
    assert_interrupted_by_ctrl_c(run.proc.returncode, out, report, project)


def assert_interrupted_by_ctrl_c(returncode: int, out: str, report: Path, project: Path) -> None:
    """Exit 2, the gate line and summary.md's heading say the run was interrupted, no baseline."""
    assert returncode == pytest.ExitCode.INTERRUPTED, out[-3000:]
    gate = [line for line in out.splitlines() if line.startswith("gate: ")]
    assert gate and gate[-1].startswith("gate: NOT RUN: interrupted (Ctrl-C)"), out[-3000:]
    heading = (report / "summary.md").read_text(encoding="utf-8").splitlines()[0]
    assert heading.startswith(f"{NOT_RUN}: interrupted (Ctrl-C)"), heading
    assert not (project / "baselines").exists()
    no_traceback(out)
