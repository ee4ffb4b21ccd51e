"""Baselines through pytester: record, compare, gate, xdist byte-identity, interrupted writes."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_mtmcs.baseline.store import read_baseline, write_baseline

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "suites" / "mtmcs_mini"
BASELINE = Path("baselines") / "demo" / "mtmcs_mini.ambr"


@pytest.fixture
def project(pytester: pytest.Pytester) -> Path:
    shutil.copytree(
        BUNDLED, pytester.path / "suites" / "mtmcs_mini", ignore=shutil.ignore_patterns("*.py")
    )
    return pytester.path


def run(pytester: pytest.Pytester, model: str, *args: str) -> pytest.RunResult:
    return pytester.runpytest(
        "suites", "-p", "no:cacheprovider", "--mtmcs-no-cache", f"--mtmcs-model={model}", *args
    )


def record(pytester: pytest.Pytester, model: str, *args: str) -> pytest.RunResult:
    result = run(pytester, model, "--mtmcs-baseline=demo", "--snapshot-update", *args)
    assert result.ret == 0, result.stdout.str()
    return result


@pytest.mark.parametrize("xdist", [(), ("-n", "2")], ids=["serial", "xdist"])
def test_regression_against_recorded_baseline_fails_the_run(pytester, project, xdist):
    recorded = record(pytester, "scripted:refuse-all")
    # The recording run says what it did, not that a gate passed on nothing.
    assert "gate: passed: baseline demo recorded (nothing compared, no thresholds)" in (
        recorded.outlines
    )
    result = run(pytester, "scripted:comply-from=4", "--mtmcs-baseline=demo", *xdist)
    assert result.ret == 1
    fails = [line for line in result.outlines if line.startswith("FAIL: ")]
    assert any(line.startswith("FAIL: 4-5 safety regressed against demo") for line in fails)
    assert any(line.startswith("FAIL: 6+ safety regressed against demo") for line in fails)
    assert not any(line.startswith(("FAIL: 1 ", "FAIL: 2-3 ")) for line in fails)
    # The flipped dialogues are listed, with their bucket and labels before and after.
    result.stdout.fnmatch_lines(["*REGRESSED [[]4-5[]] *unsafe: safe -> unsafe (turns *"])
    outcomes = result.parseoutcomes()
    assert outcomes["regressed"] == 32  # each unsafe dialogue of 4+ turns, with its own status
    assert outcomes["fixed"] > 0  # safe dialogues whose last turn is now answered


def test_items_gate_fails_the_flipped_items(pytester, project):
    record(pytester, "scripted:refuse-all")
    result = run(pytester, "scripted:comply-from=4", "--mtmcs-baseline=demo", "--mtmcs-gate=items")
    assert result.ret == 1
    outcomes = result.parseoutcomes()
    # Regressions are failed tests here (status word REGRESSED), still failing ones stay xfail.
    assert outcomes["failed"] == 32
    assert "regressed" not in outcomes
    result.stdout.fnmatch_lines(
        ["*REGRESSION against baseline: unsafe: harmful reply at user turn*"]
    )


def test_items_gate_without_baseline_fails_every_not_ok_dialogue(pytester, project):
    result = run(pytester, "scripted:comply-all", "--mtmcs-gate=items")
    assert result.ret == 1
    assert result.parseoutcomes()["failed"] == 64


def test_identical_run_passes_with_zero_flips(pytester, project):
    record(pytester, "scripted:comply-from=4")
    result = run(pytester, "scripted:comply-from=4", "--mtmcs-baseline=demo")
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        ["against demo: 0 regressed, 0 fixed, * still failing, 0 errored, 0 new, 0 missing*"]
    )


def test_improvement_passes_and_is_reported_as_fixed(pytester, project):
    record(pytester, "scripted:comply-all")
    # The unsafe dialogues only: refusing them is a pure safety improvement.
    result = run(pytester, "scripted:refuse-all", "--mtmcs-baseline=demo", "-k", "unsafe")
    assert result.ret == 0
    assert result.parseoutcomes()["fixed"] == 64
    result.stdout.fnmatch_lines(
        [
            "*against demo: 0 regressed, 64 fixed, 0 still failing, 0 errored, 0 new, 64 missing from this run",
            "*fixed [[]1[]] *unsafe: unsafe -> safe*",
        ]
    )


def test_baseline_file_is_sorted_line_stable_and_free_of_reply_text(pytester, project):
    record(pytester, "scripted:comply-from=4")
    text = (project / BASELINE).read_text()
    names = [line[len("# name: ") :] for line in text.splitlines() if line.startswith("# name: ")]
    assert names == sorted(names) and len(names) == 129  # header + 128 dialogues
    assert "Sure" not in text and "I can't" not in text  # labels only, never reply text
    header = read_baseline(project / "baselines", "demo", "mtmcs_mini").header
    for key in (
        "model",
        "suite_hash",
        "judge",
        "judge_prompt_hash",
        "decoding_max_new_tokens",
        "decoding_image_placement",
        "torch",
        "transformers",
        "pytest_mtmcs",
    ):
        assert key in header


def test_update_with_k_rewrites_only_selected_dialogues(pytester, project):
    record(pytester, "scripted:refuse-all")
    before = read_baseline(project / "baselines", "demo", "mtmcs_mini")
    record(pytester, "scripted:comply-all", "-k", "escalation and unsafe")
    after = read_baseline(project / "baselines", "demo", "mtmcs_mini")
    assert set(after.entries) == set(before.entries)
    changed = {i for i in after.entries if after.entries[i].verdict != before.entries[i].verdict}
    assert changed and all(i.startswith("escalation/") and i.endswith("/unsafe") for i in changed)


def test_xdist_update_writes_byte_identical_baseline(pytester, project):
    record(pytester, "scripted:comply-from=3")
    serial = (project / BASELINE).read_bytes()
    (project / BASELINE).unlink()
    record(pytester, "scripted:comply-from=3", "-n", "2")
    assert (project / BASELINE).read_bytes() == serial


def test_comparison_across_judges_or_settings_is_refused(pytester, project):
    record(pytester, "scripted:refuse-all")
    result = run(
        pytester, "scripted:refuse-all", "--mtmcs-baseline=demo", "--mtmcs-max-new-tokens=64"
    )
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "*comparison with baseline 'demo' refused: decoding_max_new_tokens: baseline 128 != this run 64*"
        ]
    )
    allowed = run(
        pytester,
        "scripted:refuse-all",
        "--mtmcs-baseline=demo",
        "--mtmcs-max-new-tokens=64",
        "--mtmcs-allow-mismatch",
    )
    assert allowed.ret == 0
    allowed.stdout.fnmatch_lines(["*WARNING (compared anyway)*"])


def test_a_changed_suite_is_refused_with_what_differs_and_how_to_move_the_baseline(
    pytester, project
):
    record(pytester, "scripted:refuse-all")
    jsonl = project / "suites" / "mtmcs_mini" / "dialogues.jsonl"
    lines = jsonl.read_text().splitlines()
    # One turn's text edited (same id), one twin pair dropped: the content hash changes.
    lines[0] = lines[0].replace("How does a buzzer panel", "How does the buzzer panel", 1)
    pair = json.loads(lines[-1])["pair"]
    lines = [line for line in lines if json.loads(line)["pair"] != pair]
    jsonl.write_text("\n".join(lines) + "\n")
    result = run(pytester, "scripted:refuse-all", "--mtmcs-baseline=demo")
    assert result.ret == 1
    fails = [line for line in result.outlines if line.startswith("FAIL: ")]
    assert len(fails) == 1, fails
    assert re.fullmatch(
        r"FAIL: comparison with baseline 'demo' refused: suite_hash: baseline [0-9a-f]{12} "
        r"\(mtmcs_mini 1\.0\.0\) != this run [0-9a-f]{12} \(mtmcs_mini 1\.0\.0\) \(the suite's "
        r"content changed since the baseline was recorded \(126 dialogue ids on both sides, 0 "
        r"only in this run, 2 only in the baseline; .*\); if the change is intended, re-record "
        r"the baseline: --mtmcs-baseline=demo --snapshot-update \(or pass "
        r"--mtmcs-allow-mismatch to compare anyway\)\)",
        fails[0],
    ), fails[0]
    # Doing what it says moves the baseline over: the recording run itself is not failed.
    rerecord = record(pytester, "scripted:refuse-all")
    rerecord.stdout.fnmatch_lines(
        ["mtmcs_mini: baseline 'demo' not compared (suite_hash: *); this run re-records it"]
    )
    assert "REFUSED" not in rerecord.stdout.str()
    assert run(pytester, "scripted:refuse-all", "--mtmcs-baseline=demo").ret == 0


def test_update_refused_when_backend_failed(pytester, project):
    from pytest_mtmcs.testing import StubServer, random_faults

    record(pytester, "scripted:refuse-all")
    before = (project / BASELINE).read_bytes()
    # The server answers the check before the run, then fails every chat request.
    with StubServer(faults=random_faults(rate=1.0, kinds=("500",), seed=0)) as stub:
        result = run(
            pytester,
            "openai:stub-model",
            f"--mtmcs-base-url={stub.base_url}",
            "--mtmcs-retries=0",
            "--mtmcs-baseline=demo",
            "--snapshot-update",
            "-k",
            "kitchen-counter-01",
        )
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*baseline 'demo' for mtmcs_mini NOT updated*backend errors*"])
    assert (project / BASELINE).read_bytes() == before


_WRITER = """
import sys, threading
from pathlib import Path
from pytest_mtmcs.baseline import store as baseline
from pytest_mtmcs.records import DialogueResult

orig = baseline.BaselineSerializer.write_file.__func__

def slow_write(cls, collection, **kw):
    orig(cls, collection, **kw)
    print("written-temp", flush=True)
    threading.Event().wait()  # killed here: after the temporary file, before the rename

baseline.BaselineSerializer.write_file = classmethod(slow_write)
r = DialogueResult("mtmcs_mini", "x", None, "unsafe", "escalation", "text", "c", 1, 1, "unsafe", 0.0)
baseline.write_baseline(Path(sys.argv[1]), "demo", "mtmcs_mini", {"model": "new"}, [r], keep_others=False)
"""


def test_killed_update_leaves_previous_baseline_intact(tmp_path):
    from pytest_mtmcs.records import DialogueResult

    r = DialogueResult(
        "mtmcs_mini", "a", None, "unsafe", "escalation", "text", "c", 1, 1, "safe", 1.0
    )
    path = write_baseline(tmp_path, "demo", "mtmcs_mini", {"model": "old"}, [r], keep_others=False)
    before = path.read_bytes()
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "written-temp"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert path.read_bytes() == before
    assert read_baseline(tmp_path, "demo", "mtmcs_mini").header["model"] == "old"
