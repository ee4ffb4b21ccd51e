"""`hf:` out of memory in a batch, end to end: the batch is split and retried, every dialogue
finishes with the results of a run that never ran out of memory; a request that does not fit even
alone is an ERROR counted by the gate, and a re-run generates only what was missing.

The out-of-memory is simulated in the run's own conftest (the tiny checkpoint on CPU cannot run
out), at the one call where the GPU would: `HFBackend._generate_batch`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.test_reliability import small_suite

SUMMARY_RE = re.compile(r"(\d+) answers? from cache \(model and judge\), (\d+) model requests?")
DIALOGUES = 8

CONFTEST = """
import json
import os

import torch

from pytest_mtmcs.backends import hf

_real = hf.HFBackend._generate_batch


def _oom(self, conversations, settings):
    mode = os.environ.get("MTMCS_OOM", "")
    with open(os.environ["MTMCS_OOM_LOG"], "a", encoding="utf-8") as fh:
        fh.write(f"{len(conversations)}\\n")
    if mode in ("big", "both") and len(conversations) > 2:
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
    if mode in ("poison", "both") and os.environ["MTMCS_OOM_TEXT"] in json.dumps(conversations, default=str):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
    return _real(self, conversations, settings)


hf.HFBackend._generate_batch = _oom


def pytest_runtest_logreport(report):
    data = getattr(report, "mtmcs", None)
    if data is not None:
        with open(os.environ["MTMCS_TEST_RESULTS"], "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"nodeid": report.nodeid, "result": data}) + "\\n")
"""


def comparable(result: dict) -> dict:
    out = {k: v for k, v in result.items() if k not in ("cache_hits", "latency_s")}
    out["replies"] = [
        {k: v for k, v in r.items() if k not in ("cached", "latency_s")} for r in result["replies"]
    ]
    return out


def run(pytester, name: str, cache: str, monkeypatch, **env: str):
    results = pytester.path / f"{name}.jsonl"
    monkeypatch.setenv("MTMCS_TEST_RESULTS", str(results))
    monkeypatch.setenv("MTMCS_OOM_LOG", str(pytester.path / f"{name}.oom"))
    for k in ("MTMCS_OOM", "MTMCS_OOM_TEXT"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    out = pytester.runpytest_subprocess(
        "suites", "-p", "no:cacheprovider", "-p", "no:randomly", "--mtmcs-model=tiny:qwen2.5-vl",
        "--mtmcs-max-new-tokens=8", "--mtmcs-batch-size=8", "--mtmcs-lookahead=8",
        f"--mtmcs-cache={pytester.path / cache}",
    )  # fmt: skip
    rows = [json.loads(x) for x in results.read_text().splitlines()] if results.exists() else []
    batches = [int(x) for x in (pytester.path / f"{name}.oom").read_text().split()]
    return out, {r["nodeid"]: comparable(r["result"]) for r in rows}, batches


def rows(path: Path) -> int:
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0])
    finally:
        conn.close()


def counts(text: str) -> tuple[int, int]:
    m = SUMMARY_RE.search(text)
    assert m, text[-3000:]
    return int(m.group(1)), int(m.group(2))


@pytest.mark.slow
def test_oom_in_a_batch_is_split_and_only_what_was_missing_is_rerun(pytester, monkeypatch):
    suite = small_suite(pytester.path / "suites" / "mini", DIALOGUES)
    pytester.makeconftest(CONFTEST)
    first = json.loads((suite / "dialogues.jsonl").read_text().splitlines()[0])
    poison = first["turns"][0]["content"]

    ref, expected, ref_batches = run(pytester, "ref", "ref.sqlite", monkeypatch)
    assert ref.ret in (0, 1), ref.stdout.str()[-3000:]
    assert len(expected) == DIALOGUES and max(ref_batches) > 2
    _, distinct = counts(ref.stdout.str())

    # Every batch over 2 runs out of memory (split and retried), and one dialogue's first turn
    # never fits even alone: that dialogue is an ERROR, every other finishes as in the reference.
    poisoned, got, batches = run(
        pytester, "poison", "resume.sqlite", monkeypatch, MTMCS_OOM="both", MTMCS_OOM_TEXT=poison
    )
    text = poisoned.stdout.str()
    assert max(batches) > 2 and any(b <= 2 for b in batches)
    errors = [k for k, r in got.items() if r["verdict"] == "error"]
    assert len(got) == DIALOGUES
    assert len(errors) == 1 and "out of memory" in text, text[-3000:]
    assert poisoned.ret != 0  # errors count against the gate
    assert {k: v for k, v in got.items() if k not in errors} == {
        k: v for k, v in expected.items() if k not in errors
    }
    kept = rows(pytester.path / "resume.sqlite")
    assert rows(pytester.path / "ref.sqlite") == distinct

    # The re-run generates only what the poisoned run could not.
    again, got, _ = run(pytester, "again", "resume.sqlite", monkeypatch)
    assert got == expected
    hits, generated = counts(again.stdout.str())
    assert (hits, generated) == (kept, distinct - kept)
    assert Path(pytester.path / "resume.sqlite").exists()
