"""Acceptance: a run SIGKILLed at random moments 5 times, then finished, equals an uninterrupted run.

The plugin runs in real subprocesses (`python -m pytest`) on a copy of the whole bundled suite
(128 dialogues: the trained tiny checkpoint answers in short sentences, so a smaller suite can
finish before the fifth kill) with the tiny checkpoint and a response cache file. Two helpers live
in the temporary project, both through public extension points only:

- `conftest.py` dumps every dialogue result the plugin attaches to its call reports
  (`report.mtmcs`) to a JSONL file;
- an `audited:` backend, registered as a third-party backend through a `.dist-info` entry point on
  PYTHONPATH, wraps `tiny:` (same fingerprint, so the same cache keys) and logs every batch it is
  asked to generate, with how many of its requests were already committed to the cache: a
  finished turn sent to the model again would show up there.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "suites" / "mtmcs_mini"
MODEL = "tiny:qwen2.5-vl"
KILLS = 5
# Dialogues generated per chunk: a cache commit after every turn step of every chunk, so kills land
# between and within commits. A multiple of 4: the four twins of a row (mm/text x safe/unsafe) are
# adjacent, so the shared turns of escalation twins always meet in one chunk and are sent once.
LOOKAHEAD = 8
SEED = 20260311
SUMMARY_RE = re.compile(r"(\d+) answers? from cache \(model and judge\), (\d+) model requests?")

CONFTEST = """
import json
import os


def pytest_runtest_logreport(report):
    data = getattr(report, "mtmcs", None)
    if data is not None:
        with open(os.environ["MTMCS_TEST_RESULTS"], "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"nodeid": report.nodeid, "result": data}) + "\\n")
"""

AUDIT_BACKEND = '''
"""`audited:SPEC`: SPEC's backend, logging each batch and how much of it was already cached."""
import json
import os
import sqlite3

from pytest_mtmcs.backends import create_backend
from pytest_mtmcs.backends.cache import RESPONSE_NAMESPACE, cache_key


class Audited:
    def __init__(self, inner):
        self.inner = inner
        self.spec = inner.spec

    def fingerprint(self):
        return self.inner.fingerprint()

    def close(self):
        self.inner.close()

    def generate(self, requests):
        fp = dict(self.inner.fingerprint())
        keys = [
            cache_key(namespace=RESPONSE_NAMESPACE, fingerprint=fp,
                      settings=r.settings.as_dict(), messages=r.messages)
            for r in requests
        ]
        conn = sqlite3.connect(os.environ["MTMCS_TEST_CACHE"], timeout=30)
        try:
            cached = sum(
                1 for k in keys
                if conn.execute("SELECT 1 FROM responses WHERE key = ?", (k,)).fetchone()
            )
        finally:
            conn.close()
        line = json.dumps({"pid": os.getpid(), "requests": len(requests), "cached": cached})
        fd = os.open(os.environ["MTMCS_TEST_AUDIT"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, (line + "\\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        return self.inner.generate(requests)


def create(rest, options):
    return Audited(create_backend(rest, options))
'''


def plugin_args() -> list[str]:
    installed = any(ep.value == "pytest_mtmcs.plugin" for ep in entry_points(group="pytest11"))
    return [] if installed else ["-p", "pytest_mtmcs.plugin"]


def copy_suite(dest: Path) -> int:
    """The bundled suite, dialogues in file order; returns how many.

    Escalation twins share their turns before the risk turn: the engine sends such identical
    conversations once per batch. With twins inside one look-ahead chunk, an uninterrupted run
    never meets a conversation twice in two chunks, so its model calls equal its new cache rows.
    """
    from pytest_mtmcs.records import Suite
    from pytest_mtmcs.suite import load_suite, write_suite

    suite = load_suite(BUNDLED)
    chunk_of: dict[str | None, set[int]] = {}
    for i, d in enumerate(suite.dialogues):
        chunk_of.setdefault(d.pair, set()).add(i // LOOKAHEAD)
    assert all(len(chunks) == 1 for chunks in chunk_of.values()), "twins split across chunks"
    assert {d.setting for d in suite.dialogues} == {"escalation", "context_switch"}
    write_suite(
        Suite(suite.name, suite.version, str(dest), suite.dialogues, "", defaults=suite.defaults),
        dest,
    )
    return len(suite.dialogues)


def make_project(root: Path) -> tuple[Path, int]:
    project = root / "project"
    dialogues = copy_suite(project / "suite")

    (project / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    (project / "conftest.py").write_text(CONFTEST, encoding="utf-8")
    site = root / "site"
    (site / "mtmcs_audit-0.dist-info").mkdir(parents=True)
    (site / "mtmcs_audit-0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: mtmcs-audit\nVersion: 0\n", encoding="utf-8"
    )
    (site / "mtmcs_audit-0.dist-info" / "entry_points.txt").write_text(
        "[pytest_mtmcs.backends]\naudited = mtmcs_audit:create\n", encoding="utf-8"
    )
    (site / "mtmcs_audit.py").write_text(AUDIT_BACKEND, encoding="utf-8")
    return project, dialogues


def start(project: Path, name: str) -> tuple[subprocess.Popen[bytes], Path]:
    """Starts one plugin run with its own results file; all runs of a name share a cache."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(project.parent / "site"), str(REPO), *filter(None, [env.get("PYTHONPATH")])]
    )
    env.pop("PYTEST_ADDOPTS", None)
    env.pop("PYTEST_XDIST_WORKER", None)
    results = project / f"{name}-{time.monotonic_ns()}.jsonl"
    env["MTMCS_TEST_RESULTS"] = str(results)
    env["MTMCS_TEST_CACHE"] = str(project / f"{name}.sqlite")
    env["MTMCS_TEST_AUDIT"] = str(project / f"{name}-audit.jsonl")
    cmd = [
        sys.executable, "-m", "pytest", "suite", "-q", "-p", "no:cacheprovider", *plugin_args(),
        f"--mtmcs-model=audited:{MODEL}", "--mtmcs-max-new-tokens=8",
        f"--mtmcs-cache={project / f'{name}.sqlite'}",
        f"--mtmcs-lookahead={LOOKAHEAD}",
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    return proc, results


def cached_rows(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            return int(conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:  # not created yet
        return 0


def audit(project: Path, name: str) -> list[dict[str, Any]]:
    path = project / f"{name}-audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def comparable(result: dict[str, Any]) -> dict[str, Any]:
    """A result without what legitimately differs between runs: timing and cache provenance."""
    out = {k: v for k, v in result.items() if k not in ("cache_hits", "latency_s")}
    out["replies"] = [
        {k: v for k, v in r.items() if k not in ("cached", "latency_s")} for r in result["replies"]
    ]
    return out


def read_results(path: Path) -> dict[str, dict[str, Any]]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return {row["nodeid"]: comparable(row["result"]) for row in rows}


def requests_in(results: dict[str, dict[str, Any]]) -> int:
    """Model requests the results stand for: one per live turn and one per intent question."""
    return sum(len(r["replies"]) + len(r["questions"]) for r in results.values())


def summary(output: str) -> tuple[tuple[int, int], list[str]]:
    """(from cache, generated), and the summary section without that line."""
    m = SUMMARY_RE.search(output)
    assert m, output[-3000:]
    lines = output.split("mtmcs safety summary", 1)[1].splitlines()[1:]
    table = [ln for ln in lines if not SUMMARY_RE.search(ln) and not re.search(r" in [\d.]+s", ln)]
    return (int(m.group(1)), int(m.group(2))), table


def finish(proc: subprocess.Popen[bytes], timeout: float = 900) -> str:
    out, _ = proc.communicate(timeout=timeout)
    text = out.decode("utf-8", "replace")
    assert proc.returncode == 0, text[-3000:]
    return text


@pytest.mark.slow
def test_sigkill_five_times_then_finish_equals_uninterrupted_run(tmp_path: Path) -> None:
    project, dialogues = make_project(tmp_path)
    rng = random.Random(SEED)

    # The reference runs alongside the interrupted ones (its own cache): half the wall time.
    ref_proc, ref_results = start(project, "reference")

    cache = project / "resumed.sqlite"
    kills = 0
    for _ in range(KILLS):
        before = cached_rows(cache)
        proc, _results = start(project, "resumed")
        # A random moment once this run has committed something of its own: early kills in
        # start-up would only repeat start-up; later ones land anywhere in generation, judging
        # or commits.
        # A hang guard only: a loaded CI machine may take minutes to import torch.
        deadline = time.monotonic() + 600
        while proc.poll() is None and cached_rows(cache) <= before:
            assert time.monotonic() < deadline, "the run made no progress in 600 s"
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.4))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.communicate(timeout=300)
    assert kills == KILLS, "a run finished before it could be killed: the suite is too small"
    rows_before_final = cached_rows(cache)

    proc, final_results = start(project, "resumed")
    final_out = finish(proc)
    ref_out = finish(ref_proc)

    # Same results and the same summary tables as the uninterrupted run.
    reference = read_results(ref_results)
    assert len(reference) == dialogues
    assert read_results(final_results) == reference
    (ref_hits, ref_generated), ref_table = summary(ref_out)
    (hits, generated), table = summary(final_out)
    assert table == ref_table
    assert ref_hits == 0

    # Nothing finished was generated again: no batch ever held an already committed request, the
    # final run generated exactly what the killed runs had not committed, and the only extra work
    # is the batch each kill cut short.
    distinct = ref_generated
    assert cached_rows(project / "reference.sqlite") == distinct
    # The twins' shared turns were generated once, not once per dialogue.
    assert distinct < requests_in(reference)
    assert cached_rows(cache) == distinct
    assert 0 < rows_before_final < distinct
    assert generated == distinct - rows_before_final
    assert hits == rows_before_final
    batches = audit(project, "resumed")
    assert batches and all(b["cached"] == 0 for b in batches), batches
    sent = sum(b["requests"] for b in batches)
    killed_pids = list(dict.fromkeys(b["pid"] for b in batches))[:KILLS]
    in_flight = sum([b for b in batches if b["pid"] == pid][-1]["requests"] for pid in killed_pids)
    assert distinct <= sent <= distinct + in_flight
