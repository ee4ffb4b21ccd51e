"""Issue 23, "a verdict you can take at face value": the rows the truth table
(`tests/test_truth_table.py`) does not already prove, end to end through pytest.

Each test names its row of the issue.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pytest_mtmcs.engine.guarded_backend import OUTPUT_REFUSAL
from pytest_mtmcs.outcome.terminal import counts_text
from pytest_mtmcs.testing import StubServer
from tests.test_reliability import no_traceback, small_suite

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "suites" / "mtmcs_mini"
REFERENCE = REPO / "tests" / "data" / "reference"
PASSED, INCONCLUSIVE = "## ✅ pytest-mtmcs: gate passed", "## ⚠️ pytest-mtmcs: gate passed"
NOT_RUN = "## ❌ pytest-mtmcs: gate not run"
NOT_MEASURED = "not measured by this judge"


@pytest.fixture(autouse=True)
def _no_server_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)


def bundled(pytester: pytest.Pytester) -> Path:
    dest = pytester.path / "suites" / "mtmcs_mini"
    shutil.copytree(BUNDLED, dest, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    return dest


def run(pytester: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, str]:
    result = pytester.runpytest_subprocess(
        "suites", "-p", "no:cacheprovider", "--mtmcs-no-cache", *args
    )  # fmt: skip
    return result, "\n".join(result.outlines + result.errlines)


def gate_line(result: pytest.RunResult) -> str:
    lines = [line for line in result.outlines if line.startswith("gate: ")]
    assert lines, "\n".join(result.outlines[-40:])
    return lines[-1]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def visible_text(page: str) -> str:
    """report.html's text as a reader sees it (tags, styles and images left out)."""
    import html

    page = re.sub(r"<style.*?</style>", " ", page, flags=re.S)
    page = re.sub(r"<img[^>]*>", " ", page)
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


# --- row 1: a baseline name that does not exist, a baseline without a suite of the run --------


def test_row1_a_typo_still_records_and_a_missing_suite_is_new_only_when_allowed(
    pytester: pytest.Pytester,
) -> None:
    small_suite(pytester.path / "suites" / "mini")
    recorded, out = run(
        pytester, "--mtmcs-model=scripted:refuse-all", "--mtmcs-baseline=a", "--snapshot-update"
    )
    assert recorded.ret == 0, out[-3000:]
    base = pytester.path / "baselines"
    # --snapshot-update may name a baseline that does not exist yet, beside existing ones.
    typo, out = run(
        pytester, "--mtmcs-model=scripted:refuse-all", "--mtmcs-baseline=release-z",
        "--snapshot-update",
    )  # fmt: skip
    assert typo.ret == 0, out[-3000:]
    assert (base / "release-z" / "mtmcs_mini.ambr").is_file()
    # A baseline that lacks the suite: a usage error unless the option says it may be new.
    (base / "other").mkdir()
    shutil.copy(base / "a" / "mtmcs_mini.ambr", base / "other" / "another_suite.ambr")
    before = sorted(p.name for p in (base / "other").iterdir())
    refused, out = run(pytester, "--mtmcs-model=scripted:refuse-all", "--mtmcs-baseline=other")
    assert refused.ret == pytest.ExitCode.USAGE_ERROR, out[-3000:]
    assert "--mtmcs-allow-missing-suite" in out
    allowed, out = run(
        pytester, "--mtmcs-model=scripted:refuse-all", "--mtmcs-baseline=other",
        "--mtmcs-allow-missing-suite",
    )  # fmt: skip
    assert allowed.ret == 0, out[-3000:]
    assert "baseline 'other': no stored results for suite mtmcs_mini" in out
    assert gate_line(allowed).startswith("gate: passed: ")
    assert sorted(p.name for p in (base / "other").iterdir()) == before  # nothing recorded
    no_traceback(out)


# --- row 2: an inconclusive cell, the gate line in summary.md, the mde legend ------------------


def test_row2_an_inconclusive_cell_says_what_would_decide_it_in_terminal_and_summary(
    pytester: pytest.Pytester,
) -> None:
    bundled(pytester)
    recorded, out = run(
        pytester, "--mtmcs-model=scripted:refuse-all", "--mtmcs-baseline=a", "--snapshot-update"
    )
    assert recorded.ret == 0, out[-3000:]
    report = pytester.path / "report"
    result, out = run(
        pytester, "--mtmcs-model=scripted:comply-from=8", "--mtmcs-baseline=a",
        "--mtmcs-buckets=1-7,8+", f"--mtmcs-report={report}",
    )  # fmt: skip
    assert result.ret == 0, out[-3000:]
    sentences = [line for line in result.outlines if "INCONCLUSIVE" in line]
    assert len(sentences) == 1, out[-4000:]
    sentence = sentences[0]
    # One sentence: the pairs, the drop, the mde, what would decide it.
    assert sentence.startswith("8+ safety against a: INCONCLUSIVE: 4 pairs, 1.000 -> 0.000, ")
    assert "a drop of 1.000 (> 0.02) that is not significant" in sentence
    assert "mde)" in sentence
    assert "To decide it: " in sentence and "--mtmcs-threshold='8+:safety>=X'" in sentence
    assert "--mtmcs-fail-inconclusive" in sentence
    gate = gate_line(result)
    assert gate.startswith("gate: passed: ") and "1 cell inconclusive" in gate
    assert "minimum detectable drop shown as 'mde'" in out
    summary = (report / "summary.md").read_text(encoding="utf-8")
    assert summary.splitlines()[0].startswith(f"{INCONCLUSIVE}, 1 cell inconclusive")
    # The terminal's gate line, word for word, in summary.md; the sentence; the legend.
    assert f"**{gate}**" in summary
    assert "**Inconclusive cells**" in summary and f"- {sentence}" in summary
    assert "_mde: minimum detectable drop: " in summary


# --- row 3: an output guard's refusals, without the judge; the transcript keeps both ----------


def _compliance_everywhere(body: dict[str, Any]) -> str:
    """A rubric judge that grades every reply it is shown as compliance (fully helpful on the
    helpfulness rubric, no safety awareness on the safety rubric)."""
    prompt = body["messages"][-1]["content"]
    return "SCORE: 5\nREASON: it helped" if "HELPFULNESS" in prompt else "SCORE: 1\nREASON: it did"


def test_row3_guard_refusals_are_refusals_without_the_judge_and_the_transcript_keeps_the_reply(
    pytester: pytest.Pytester,
) -> None:
    bundled(pytester)
    report = pytester.path / "report"
    with (
        StubServer(model=["guard"], mode="guard") as guard,
        StubServer(_compliance_everywhere, model=["judge"]) as judge,
    ):
        result, out = run(
            pytester, "--mtmcs-model=scripted:comply-all",
            "--mtmcs-guard=output:guard:openai:guard", f"--mtmcs-guard-base-url={guard.base_url}",
            "--mtmcs-judge=rubric:openai:judge", f"--mtmcs-judge-base-url={judge.base_url}",
            f"--mtmcs-report={report}",
        )  # fmt: skip
        judged = list(judge.chat_bodies)
    assert result.ret == 0, out[-4000:]
    rows = [
        json.loads(line)
        for line in (report / "transcripts.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    turns = [r for r in rows if r["kind"] == "turn"]
    withheld = [r for r in turns if r.get("guard")]
    assert 0 < len(withheld) < len(turns)
    for r in withheld:
        # The guard's refusal is what the dialogue got, and a refusal whatever the judge says;
        # the model's own reply and the guard's action are kept beside it.
        assert r["guard"] == "output" and r["label"] == "refusal", r
        assert r["text"] == OUTPUT_REFUSAL and r["withheld"] and r["withheld"] != r["text"], r
    assert all(r["label"] == "compliance" for r in turns if not r.get("guard"))
    # The judge was asked about every other reply, and about none of the withheld ones.
    assert len(judged) == len(turns) - len(withheld)
    assert not any(OUTPUT_REFUSAL in json.dumps(b) for b in judged)
    summary = (report / "summary.md").read_text(encoding="utf-8")
    counts = [line for line in out.splitlines() if "guard interventions (turns) per bucket" in line]
    assert counts and f"- {counts[0]}" in summary
    output = sum(int(n) for n in re.findall(r"(\d+) output", counts[0]))
    assert output == len(withheld)


# --- row 4: errored dialogues counted beside the metrics; a cell under half measured ----------


def _six_turns_fail(index: int, body: dict[str, Any]) -> str | None:
    """A 500 for every request of a sixth or later user turn: the 6+ bucket's dialogues error."""
    users = sum(1 for m in body.get("messages") or () if m.get("role") == "user")
    return "500" if users >= 6 else None


def test_row4_errored_dialogues_are_counted_and_a_cell_without_measurements_shows_no_number(
    pytester: pytest.Pytester,
) -> None:
    bundled(pytester)
    report = pytester.path / "report"
    with StubServer(faults=_six_turns_fail) as model:
        result, out = run(
            pytester, "--mtmcs-model=openai:stub-model", f"--mtmcs-base-url={model.base_url}",
            "--mtmcs-retries=0", f"--mtmcs-report={report}",
        )  # fmt: skip
    assert result.ret == 1, out[-4000:]
    errors = result.parseoutcomes().get("errors")
    assert errors and errors > 0, out[-3000:]
    note = f"errors: {errors} backend, 0 judge (those dialogues were not measured"
    assert note in out, out[-4000:]
    # `6+  0 (+16 errored)  safety  -  ...`: no number where nothing was measured.
    assert re.search(r"^6\+\s+0 \(\+\d+ errored\)\s+safety\s+-\s", out, re.M), out[-4000:]
    assert re.search(r"^1\s+\d+\s+safety\s+\d\.\d{3}\s", out, re.M), out[-4000:]
    summary = (report / "summary.md").read_text(encoding="utf-8")
    assert f"- {note}" in summary
    assert re.search(r"^\| 6\+ \| 0 \(\+\d+ errored\) \| safety \| - \|", summary, re.M), summary
    assert re.search(r"^\| 1 \| \d+ \| safety \| \d\.\d{3} \|", summary, re.M), summary


# --- row 5: a configuration error is a usage error, never an interrupt --------------------------


@pytest.mark.parametrize("xdist", [(), ("-n", "2")], ids=["serial", "xdist"])
@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (("--mtmcs-model=tiny:nope",), {}, "unknown tiny checkpoint 'nope'"),
        (
            ("--mtmcs-model=openai:m", "--mtmcs-base-url=https://models.example/v1"),
            {"HTTPS_PROXY": "socks5://proxy.corp:1080"},
            "HTTPS_PROXY='socks5://proxy.corp:1080'",
        ),
    ],
    ids=["unknown-tiny", "proxy"],
)
def test_row5_a_configuration_error_is_not_an_interrupt(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    args: tuple[str, ...],
    env: dict[str, str],
    says: str,
    xdist: tuple[str, ...],
) -> None:
    small_suite(pytester.path / "suites" / "mini")
    for name in ("HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    result, out = run(pytester, *args, *xdist)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, out[-3000:]
    assert gate_line(result).startswith("gate: NOT RUN: usage error: ")
    assert says in out
    assert "INTERRUPTED" not in out and "re-run to resume" not in out
    no_traceback(out)


def test_row5_a_missing_suite_folder_is_not_called_an_interrupt_to_resume(
    pytester: pytest.Pytester,
) -> None:
    pytester.mkdir("elsewhere")
    result = pytester.runpytest_subprocess(
        "elsewhere", "-p", "no:cacheprovider", "--mtmcs-no-cache",
        "--mtmcs-model=scripted:refuse-all", "--mtmcs-suite=no/such/folder",
    )  # fmt: skip
    out = "\n".join(result.outlines + result.errlines)
    assert "no/such/folder: no such suite folder" in out
    assert "run INTERRUPTED" not in out and "re-run to resume" not in out
    no_traceback(out)


@pytest.mark.parametrize("xdist", [(), ("-n", "2")], ids=["serial", "xdist"])
def test_row5_a_missing_suite_folder_ends_with_a_gate_line_and_replaces_summary(
    pytester: pytest.Pytester, xdist: tuple[str, ...]
) -> None:
    pytester.mkdir("elsewhere")
    report = pytester.mkdir("report")
    (report / "summary.md").write_text(f"{PASSED}\n(stale)\n", encoding="utf-8")
    result = pytester.runpytest_subprocess(
        "elsewhere", "-p", "no:cacheprovider", "--mtmcs-no-cache", *xdist,
        "--mtmcs-model=scripted:refuse-all", "--mtmcs-suite=no/such/folder",
        f"--mtmcs-report={report}",
    )  # fmt: skip
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert gate_line(result) == "gate: NOT RUN: usage error: no/such/folder: no such suite folder"
    assert (report / "summary.md").read_text(encoding="utf-8").startswith(NOT_RUN)


# --- row 6: intent answers that do not parse ---------------------------------------------------


UNPARSED = re.compile(
    r"intent answers: (\d+) of \1 unparsed \(100%; counted wrong\) - WARNING: more than half of "
    r"the model's intent answers do not parse"
)


@pytest.fixture
def unparsed_run(pytester: pytest.Pytester) -> tuple[pytest.RunResult, str, Path]:
    """The bundled suite against a server whose every answer is the stub's fixed sentence: no
    intent answer parses."""
    small_suite(pytester.path / "suites" / "mini", 16)
    report = pytester.path / "report"
    with StubServer() as model:
        result, out = run(
            pytester, "--mtmcs-model=openai:stub-model", f"--mtmcs-base-url={model.base_url}",
            f"--mtmcs-report={report}",
        )  # fmt: skip
    return result, out, report


def test_row6_unparsed_intent_answers_are_counted_with_a_warning_in_terminal_and_summary(
    unparsed_run: tuple[pytest.RunResult, str, Path],
) -> None:
    result, out, report = unparsed_run
    assert result.ret == 0, out[-3000:]
    found = UNPARSED.search(out)
    assert found and int(found.group(1)) > 0, out[-3000:]
    assert f"- {found.group(0)}" in (report / "summary.md").read_text(encoding="utf-8")


def test_row6_unparsed_intent_answers_are_counted_in_the_html_report(
    unparsed_run: tuple[pytest.RunResult, str, Path],
) -> None:
    _, out, report = unparsed_run
    found = UNPARSED.search(out)
    assert found is not None
    page = visible_text((report / "report.html").read_text(encoding="utf-8"))
    assert f"{found.group(1)} of {found.group(1)} unparsed" in page
    assert "do not parse" in page


# --- row 7: a rubric judge whose answers do not parse -----------------------------------------


def _unparseable(body: dict[str, Any]) -> str:
    return "I would rather not grade this."


def _every_fifth_fails(index: int, body: dict[str, Any]) -> str | None:
    return "500" if index % 5 == 0 else None


def test_row7_judge_errors_are_test_errors_and_their_reasons_are_grouped(
    pytester: pytest.Pytester,
) -> None:
    small_suite(pytester.path / "suites" / "mini", 16)
    report = pytester.path / "report"
    with StubServer(_unparseable, model=["judge"], faults=_every_fifth_fails) as judge:
        result, out = run(
            pytester, "--mtmcs-model=scripted:refuse-all", "--mtmcs-judge=rubric:openai:judge",
            f"--mtmcs-judge-base-url={judge.base_url}", "--mtmcs-retries=0",
            f"--mtmcs-report={report}",
        )  # fmt: skip
    assert result.ret == 1, out[-3000:]
    outcomes = result.parseoutcomes()
    assert outcomes.get("errors") == 16 and not outcomes.get("xfailed"), outcomes
    assert not outcomes.get("passed"), outcomes
    assert "judge errors (more than --mtmcs-max-judge-errors=0)" in gate_line(result)
    groups = [line.strip() for line in result.outlines if line.startswith("  judge error x")]
    assert len(groups) == 2, groups
    assert any("unparseable answer" in g for g in groups), groups
    assert any("backend failed" in g for g in groups), groups
    summary = (report / "summary.md").read_text(encoding="utf-8")
    for g in groups:
        assert f"- {g}" in summary, g


# --- row 8: a harm-only judge measures no helpfulness ------------------------------------------


@pytest.mark.parametrize("judge", ["guard", "safe-unsafe"])
def test_row8_a_metric_the_judge_cannot_measure_says_so(
    pytester: pytest.Pytester, judge: str
) -> None:
    small_suite(pytester.path / "suites" / "mini", 16)
    report = pytester.path / "report"
    with StubServer(model=["j"], mode=judge) as stub:
        result, out = run(
            pytester, "--mtmcs-model=scripted:comply-from=2", f"--mtmcs-judge={judge}:openai:j",
            f"--mtmcs-judge-base-url={stub.base_url}", f"--mtmcs-report={report}",
        )  # fmt: skip
    assert result.ret == 0, out[-3000:]
    helpfulness = [line.split() for line in result.outlines if " helpfulness " in line[:30]]
    assert helpfulness, out[-3000:]
    for row in helpfulness:
        assert row[3] == "-" and " ".join(row[-5:]) == NOT_MEASURED, row
    assert f"helpfulness, pair_accuracy: {NOT_MEASURED}" in out
    summary = (report / "summary.md").read_text(encoding="utf-8")
    assert re.search(
        rf"^\| all \| \d+ \| helpfulness \| - \|.*\| {NOT_MEASURED} \|$", summary, re.M
    )
    assert f"- helpfulness, pair_accuracy: {NOT_MEASURED}" in summary
    page = visible_text((report / "report.html").read_text(encoding="utf-8"))
    assert NOT_MEASURED in page


def test_row8_the_per_setting_tables_show_no_number_for_an_unmeasured_metric(
    pytester: pytest.Pytester,
) -> None:
    small_suite(pytester.path / "suites" / "mini", 16)
    with StubServer(model=["j"], mode="guard") as stub:
        result, out = run(
            pytester, "--mtmcs-model=scripted:comply-from=2", "--mtmcs-judge=guard:openai:j",
            f"--mtmcs-judge-base-url={stub.base_url}",
        )  # fmt: skip
    assert result.ret == 0, out[-3000:]
    header = next(i for i, line in enumerate(result.outlines) if line.startswith("group "))
    # The column under `helpfulness`, by the dashes under the header.
    spans = [m.span() for m in re.finditer(r"-+", result.outlines[header + 1])]
    start, end = next(sp for sp in spans if sp[0] == result.outlines[header].index("helpfulness"))
    cells = [line[start:end].strip() for line in result.outlines[header + 2 : header + 6]]
    assert cells and not any(re.match(r"\d\.\d\d", c) for c in cells), cells


def test_row8_a_threshold_on_an_unmeasured_metric_does_not_pass(
    pytester: pytest.Pytester,
) -> None:
    small_suite(pytester.path / "suites" / "mini", 16)
    with StubServer(model=["j"], mode="guard") as stub:
        result, out = run(
            pytester, "--mtmcs-model=scripted:comply-from=2", "--mtmcs-judge=guard:openai:j",
            f"--mtmcs-judge-base-url={stub.base_url}", "--mtmcs-threshold=helpfulness>=0.99",
        )  # fmt: skip
    assert result.ret == pytest.ExitCode.TESTS_FAILED, out[-3000:]
    line = gate_line(result)
    assert line.startswith("gate: FAILED: "), out[-3000:]
    assert (
        "helpfulness: threshold helpfulness>=0.99 cannot be checked: helpfulness is not "
        "measured by this judge" in line
    ), line
    assert "threshold checks met" not in out


# --- rows 10 and 11: signals -------------------------------------------------------------------


# `python -m pytest` started as `pytest ... &` from a non-interactive shell starts it: with SIGINT
# ignored, so that Python installs no Ctrl-C handler of its own.
BOOT_SIGINT_IGNORED = (
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
    "sys.argv[0] = 'pytest'; runpy.run_module('pytest', run_name='__main__', alter_sys=True)"
)


def test_row10_kill_int_stops_a_run_started_with_sigint_ignored_and_writes_no_baseline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tests.test_interrupts as ti

    monkeypatch.setattr(ti, "BOOT", BOOT_SIGINT_IGNORED)
    project = ti.make_project(tmp_path)
    report = project / "report"
    report.mkdir()
    (report / "summary.md").write_text(f"{PASSED}\n(stale)\n", encoding="utf-8")
    run_ = ti.Run(
        project, "cut", "shared", "--mtmcs-baseline=b", "--snapshot-update",
        f"--mtmcs-report={report}", MTMCS_GATE_AT="2",
    )  # fmt: skip
    try:
        run_.wait_ready()
        # The backend now waits for a file nobody writes: only the signal can end the run (a run
        # that ignored it would hang, and `output` reports the hang).
        run_.proc.send_signal(signal.SIGINT)
        out = run_.output()
    finally:
        run_.go.touch()
    from tests.test_truth_table import assert_interrupted_by_ctrl_c

    assert_interrupted_by_ctrl_c(run_.proc.returncode, out, report, project)


RECORDING_CONFTEST = """
import json
import os


def pytest_runtest_logreport(report):
    data = getattr(report, "mtmcs", None)
    if data is not None:
        side = "worker" if os.environ.get("PYTEST_XDIST_WORKER") else "controller"
        with open(os.environ["MTMCS_TEST_RESULTS"] + "." + side, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"nodeid": report.nodeid}) + "\\n")
"""


def _ids(path: Path) -> set[str]:
    if not path.exists():
        return set()
    return {json.loads(line)["nodeid"] for line in path.read_text().splitlines() if line}


def _wait_until(check: Any, what: str, proc: subprocess.Popen[bytes]) -> None:
    # Polls files the run writes at known points; the bound only catches a hang.
    end = time.monotonic() + 300
    while not check():
        assert proc.poll() is None, f"the run ended before {what}"
        assert time.monotonic() < end, f"never reached: {what}"
        time.sleep(0.01)


def test_row11_sigterm_under_xdist_counts_what_reached_the_controller_against_the_selection(
    tmp_path: Path,
) -> None:
    from tests.test_interrupts import DIALOGUES, Run, make_project

    project = make_project(tmp_path)
    (project / "conftest.py").write_text(RECORDING_CONFTEST, encoding="utf-8")
    run_ = Run(
        project, "cut", "shared", "--mtmcs-baseline=b", "--snapshot-update", "-n", "2",
        MTMCS_GATE_AT="3",
    )  # fmt: skip
    workers = Path(str(run_.results) + ".worker")
    controller = Path(str(run_.results) + ".controller")
    try:
        run_.wait_ready()

        def both_workers_wait() -> bool:
            batches: dict[int, int] = {}
            for line in run_.audit.read_text().splitlines():
                pid = json.loads(line)["pid"]
                batches[pid] = batches.get(pid, 0) + 1
            return len(batches) == 2 and all(n >= 3 for n in batches.values())

        # Both workers wait at their third batch (for a file nobody writes), and every dialogue
        # they finished has reached the controller: nothing is in flight when the signal lands.
        _wait_until(both_workers_wait, "both workers waiting", run_.proc)
        _wait_until(lambda: _ids(controller) == _ids(workers), "the reports arrived", run_.proc)
        finished = len(_ids(workers))
        assert 0 < finished < DIALOGUES
        run_.proc.send_signal(signal.SIGTERM)
        out = run_.output()
    finally:
        run_.go.touch()
    assert run_.proc.returncode == pytest.ExitCode.INTERRUPTED, out[-3000:]
    assert f"run INTERRUPTED (SIGTERM): {finished} of {DIALOGUES} dialogues finished" in out, out
    gate = [line for line in out.splitlines() if line.startswith("gate: ")]
    assert gate and gate[-1] == (
        f"gate: NOT RUN: interrupted (SIGTERM): {finished} of {DIALOGUES} dialogues finished"
    ), out[-3000:]
    assert "UserWarning" not in out and "syrupy" not in out, out[-3000:]
    assert not (project / "baselines").exists()
    no_traceback(out)


# --- row 13: `~` and environment variables in paths and specs ----------------------------------


def test_row13_tilde_and_variables_are_expanded_in_every_path_option_and_spec(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    shutil.copytree(REFERENCE / "mtmcs", home / "data" / "MTMCS-Bench")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("MTMCS_OUT", str(tmp_path / "out"))
    pytester.mkdir("elsewhere")
    result = pytester.runpytest_subprocess(
        "elsewhere", "-p", "no:cacheprovider", "--mtmcs-model=scripted:refuse-all",
        "--mtmcs-suite=mtmcs-bench:~/data/MTMCS-Bench", "--mtmcs-report=$MTMCS_OUT/report",
        "--mtmcs-baseline-dir=~/baselines", "--mtmcs-cache=${MTMCS_OUT}/cache.sqlite",
        "--mtmcs-baseline=x", "--snapshot-update",
    )  # fmt: skip
    out = "\n".join(result.outlines + result.errlines)
    assert result.ret == 0, out[-3000:]
    assert (home / "baselines" / "x" / "mtmcs-bench.ambr").is_file()
    assert (tmp_path / "out" / "report" / "summary.md").is_file()
    assert (tmp_path / "out" / "cache.sqlite").is_file()
    # Nothing was created under the literal names.
    left = [p.name for p in pytester.path.iterdir() if p.name.startswith(("~", "$"))]
    assert left == []


# --- row 15: the small ones --------------------------------------------------------------------


def test_row15_a_judges_proxy_error_names_the_judges_base_url_option(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    small_suite(pytester.path / "suites" / "mini", 8)
    for name in ("HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{closed_port()}")
    with StubServer(model=["judge"], mode="rubric") as judge:
        result, out = run(
            pytester, "--mtmcs-model=scripted:refuse-all", "--mtmcs-judge=rubric:openai:judge",
            f"--mtmcs-judge-base-url={judge.base_url}", "--mtmcs-retries=0",
        )  # fmt: skip
        assert judge.chat_bodies == []
    assert result.ret == pytest.ExitCode.USAGE_ERROR, out[-3000:]
    gate = gate_line(result)
    assert "cannot connect to the proxy" in gate and "HTTP_PROXY" in gate, gate
    assert "--mtmcs-judge-base-url" in gate and "--mtmcs-base-url" not in gate, gate


def test_row15_the_header_comes_first_in_a_baseline_whose_ids_sort_before_it(
    pytester: pytest.Pytester,
) -> None:
    shutil.copytree(REFERENCE / "safemt", pytester.path / "ref")
    pytester.mkdir("elsewhere")
    result = pytester.runpytest_subprocess(
        "elsewhere", "-p", "no:cacheprovider", "--mtmcs-no-cache",
        "--mtmcs-model=scripted:refuse-all", "--mtmcs-suite=safemt:ref/Data",
        "--mtmcs-baseline=s", "--snapshot-update",
    )  # fmt: skip
    assert result.ret == 0, result.stdout.str()[-3000:]
    (path,) = (pytester.path / "baselines" / "s").glob("*.ambr")
    names = [
        line[len("# name: ") :]
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.startswith("# name: ")
    ]
    # SafeMT's ids start with a digit: in plain sorted order they would come first.
    assert any(n < "__header__" for n in names[1:]), names[:5]
    assert names[0] == "__header__", names[:5]
    assert names[1:] == sorted(names[1:])


def test_row15_counts_are_singular_for_one_and_say_what_they_count() -> None:
    assert counts_text(1, 1) == (
        "1 answer from cache (model and judge), 1 model request (turns and intent questions)"
    )
    assert counts_text(2, 0).startswith("2 answers from cache (model and judge), 0 model requests")


def _merged_output(cwd: Path, *args: str) -> str:
    """stdout and stderr in one stream, as a CI log shows them."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "PYTEST_XDIST_WORKER")
    }
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "suites", "-p", "no:cacheprovider", "--mtmcs-no-cache",
         "--mtmcs-model=scripted:refuse-all", "--mtmcs-progress=on", *args],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:]
    return done.stdout


def test_row15_the_progress_line_does_not_run_into_pytests_percentage(
    pytester: pytest.Pytester,
) -> None:
    small_suite(pytester.path / "suites" / "mini", 16)
    out = _merged_output(pytester.path)
    done = [line for line in out.splitlines() if "[mtmcs] done: " in line]
    assert len(done) == 1 and done[0].startswith("[mtmcs] done: 16/16 dialogues, "), out[-3000:]
    # It counts the dialogues' turns; the summary counts model requests, and says so.
    assert re.search(r"done: 16/16 dialogues, \d+ dialogue turns in ", done[0]), done[0]
    assert "model requests (turns and intent questions)" in out
    assert not any("%]" in line and "[mtmcs" in line for line in out.splitlines()), out[-3000:]


def test_row15_the_workers_progress_lines_do_not_run_into_pytests_progress(
    pytester: pytest.Pytester,
) -> None:
    small_suite(pytester.path / "suites" / "mini", 16)
    out = _merged_output(pytester.path, "-n", "2")
    done = [line for line in out.splitlines() if "done: " in line and "[mtmcs gw" in line]
    assert len(done) == 2, out[-3000:]
    assert all(line.startswith("[mtmcs gw") for line in done), done
