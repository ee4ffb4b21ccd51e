"""Acceptance: `pytest-mtmcs merge` of shards 1/3, 2/3, 3/3 (one of them under `-n 2`) equals one
run on one machine: summary.md, the results table, transcripts, run.json, report.html and the
recorded baseline file byte for byte (timings aside), the same exit status when a regression fails
the gate; missing, duplicated and mismatched shards are one clear error (exit 4, a usage error).

Runs are real subprocesses (`python -m pytest`), started together, on a 32-dialogue copy of the
bundled suite (whole twins).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_mtmcs.cli.main import main as cli_main

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "suites" / "mtmcs_mini"
DIALOGUES = 32
SCRIPTED = "scripted:comply-from=4"
TINY = "tiny:qwen2.5-vl"
SAME_FILES = ("summary.md", "run.json", "report.html")
# 32 dialogues are too few for a significant bucket drop: the gate fails on a threshold.
THRESHOLD = "--mtmcs-threshold=6+:safety>=0.8"


def make_project(root: Path) -> Path:
    from pytest_mtmcs.records import Suite
    from pytest_mtmcs.suite import load_suite, write_suite

    suite = load_suite(BUNDLED)
    # The shortest and the longest dialogues: every bucket, whole twins.
    chosen = suite.dialogues[: DIALOGUES // 2] + suite.dialogues[-DIALOGUES // 2 :]
    assert all(sum(1 for d in chosen if d.pair == x.pair) == 2 for x in chosen)
    write_suite(
        Suite(suite.name, suite.version, "", chosen, "", defaults=suite.defaults), root / "suite"
    )
    (root / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    return root


def plugin_args() -> list[str]:
    from importlib.metadata import entry_points

    installed = any(ep.value == "pytest_mtmcs.plugin" for ep in entry_points(group="pytest11"))
    return [] if installed else ["-p", "pytest_mtmcs.plugin"]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [e.get("PYTHONPATH")])])
    for k in ("PYTEST_ADDOPTS", "PYTEST_XDIST_WORKER", "GITHUB_STEP_SUMMARY"):
        e.pop(k, None)
    return e


def start(project: Path, model: str, *args: str) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable, "-m", "pytest", "suite", "-q", "-p", "no:cacheprovider", *plugin_args(),
        f"--mtmcs-model={model}", "--mtmcs-max-new-tokens=8", "--mtmcs-no-cache", *args,
    ]  # fmt: skip
    return subprocess.Popen(
        cmd, cwd=project, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def wait(proc: subprocess.Popen[bytes], rc: int) -> str:
    out, _ = proc.communicate(timeout=600)
    text = out.decode("utf-8", "replace")
    assert proc.returncode == rc, text[-3000:]
    return text


def merge(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest_mtmcs", "merge", *args],
        cwd=project,
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def shard_args(k: int) -> list[str]:
    xdist = ["-n", "2"] if k == 2 else []
    return [f"--mtmcs-shard={k}/3", f"--mtmcs-report=s{k}", *xdist]


def without_timings(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k != "latency_s"}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def assert_same_report(a: Path, b: Path) -> None:
    import pandas as pd

    for name in SAME_FILES:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    left, right = pd.read_parquet(a / "results.parquet"), pd.read_parquet(b / "results.parquet")
    assert len(left) == DIALOGUES
    pd.testing.assert_frame_equal(left.drop(columns="latency_s"), right.drop(columns="latency_s"))
    csv = [pd.read_csv(p / "results.csv").drop(columns="latency_s") for p in (a, b)]
    pd.testing.assert_frame_equal(*csv)
    rows = [
        [without_timings(json.loads(x)) for x in (p / "transcripts.jsonl").read_text().splitlines()]
        for p in (a, b)
    ]
    assert rows[0] == rows[1] and rows[0]


@pytest.fixture(scope="module")
def scripted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A baseline `base` of a model that refuses everything; then, all at once, one run of a
    model complying from turn 4 against it (a threshold fails the gate), one run recording it as
    `rec`, and its three shards against `base`."""
    project = make_project(tmp_path_factory.mktemp("scripted"))
    wait(start(project, "scripted:refuse-all", "--mtmcs-baseline=base", "--snapshot-update"), 0)
    procs = [
        (start(project, SCRIPTED, "--mtmcs-baseline=base", THRESHOLD, "--mtmcs-report=single"), 1),
        (start(project, SCRIPTED, "--mtmcs-baseline=rec,base", "--snapshot-update", THRESHOLD), 1),
        *(
            (start(project, SCRIPTED, "--mtmcs-baseline=base", THRESHOLD, *shard_args(k)), 0)
            for k in (1, 2, 3)
        ),
    ]
    outputs = [wait(p, rc) for p, rc in procs]
    # A shard gates nothing on buckets, and says what it is.
    assert "shard 2 of 3: per-bucket numbers are partial" in outputs[3]
    assert not any("FAIL:" in out for out in outputs[2:])
    return project


@pytest.mark.slow
def test_merged_scripted_shards_equal_one_run_and_fail_the_same_gate(scripted: Path) -> None:
    res = merge(scripted, "s1", "s2", "s3", "--baseline", "base", "--out", "merged")
    assert res.returncode == 1, res.stdout + res.stderr
    # The shards' options (the threshold) are the merge's defaults.
    assert "FAIL: 6+ safety 0.000 breaches threshold" in res.stdout, res.stdout
    assert_same_report(scripted / "single", scripted / "merged")
    # The shards' order on the command line does not matter.
    res = merge(scripted, "s3", "s1", "s2", "--baseline=base", "--out", "merged2")
    assert res.returncode == 1
    assert (scripted / "merged2" / "summary.md").read_bytes() == (
        scripted / "single" / "summary.md"
    ).read_bytes()


@pytest.mark.slow
def test_merge_records_the_same_baseline_file(scripted: Path) -> None:
    # As the one-machine recording run: the shards' threshold fails the gate, the file is written.
    res = merge(scripted, "s1", "s2", "s3", "--update-baseline", "rec", "--baseline-dir", "mb")
    assert res.returncode == 1, res.stdout + res.stderr
    one = scripted / "baselines" / "rec" / "mtmcs_mini.ambr"
    merged = scripted / "mb" / "rec" / "mtmcs_mini.ambr"
    assert merged.read_bytes() == one.read_bytes()
    assert "baseline 'rec': 32 dialogues written to" in res.stdout
    assert not list((scripted / "mb" / "rec").glob(".*tmp"))  # written atomically


@pytest.mark.slow
def test_merged_tiny_shards_equal_one_run(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    procs = [
        (start(project, TINY, "--mtmcs-baseline=rec", "--snapshot-update", "--mtmcs-report=single"), 0),
        *((start(project, TINY, *shard_args(k)), 0) for k in (1, 2, 3)),
    ]  # fmt: skip
    for p, rc in procs:
        wait(p, rc)
    res = merge(project, "s1", "s2", "s3", "--update-baseline=rec", "--baselines-dir=mb", "--out=m")
    assert res.returncode == 0, res.stdout + res.stderr
    assert_same_report(project / "single", project / "m")
    assert (project / "mb" / "rec" / "mtmcs_mini.ambr").read_bytes() == (
        project / "baselines" / "rec" / "mtmcs_mini.ambr"
    ).read_bytes()


def run_cli(capsys: pytest.CaptureFixture[str], cwd: Path, *args: str) -> tuple[int, str]:
    old = Path.cwd()
    os.chdir(cwd)
    try:
        rc = cli_main(["merge", *args])
    finally:
        os.chdir(old)
    return rc, capsys.readouterr().err


@pytest.mark.slow
def test_missing_duplicated_and_mismatched_shards_are_named(
    scripted: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rc, err = run_cli(capsys, scripted, "s1", "s3")
    assert rc == 4 and "missing shard 2/3" in err, err

    rc, err = run_cli(capsys, scripted, "s1", "s2", "s3", "s2")
    assert rc == 4 and "s2: shard 2/3 given twice" in err, err

    bad = tmp_path / "s3-other-judge"
    shutil.copytree(scripted / "s3", bad)
    doc = json.loads((bad / "shard.json").read_text())
    doc["judge"]["name"] = "another-judge"
    (bad / "shard.json").write_text(json.dumps(doc))
    rc, err = run_cli(capsys, scripted, "s1", "s2", str(bad))
    assert rc == 4 and f"{bad}: field judge.name is 'another-judge'" in err, err

    doc["judge"]["name"] = json.loads((scripted / "s3" / "shard.json").read_text())["judge"]["name"]
    doc["suites"]["mtmcs_mini"]["content_hash"] = "0" * 16
    (bad / "shard.json").write_text(json.dumps(doc))
    rc, err = run_cli(capsys, scripted, "s1", "s2", str(bad))
    assert rc == 4 and "field suites.mtmcs_mini.content_hash" in err, err

    # A shard that did not finish: fewer results than it selected.
    cut = tmp_path / "s1-cut"
    shutil.copytree(scripted / "s1", cut)
    lines = (cut / "results.jsonl").read_text().splitlines(keepends=True)
    (cut / "results.jsonl").write_text("".join(lines[:-1]))
    rc, err = run_cli(capsys, scripted, str(cut), "s2", "s3")
    assert rc == 4 and "interrupted run?" in err and str(cut) in err, err

    # A report folder of a run that was not a shard.
    rc, err = run_cli(capsys, scripted, "single", "s2", "s3")
    assert rc == 4 and "no shard.json (a report folder of a run without --mtmcs-shard" in err
