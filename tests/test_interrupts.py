"""Interrupts and crashes: Ctrl-C, SIGTERM, a killed xdist worker, two runs sharing one cache.

Each run is a real `python -m pytest` subprocess on a copy of the bundled suite with the
scripted model behind a `gated:` backend (a third-party backend registered through an entry
point on PYTHONPATH). The backend logs every batch with how many of its requests were already
in the cache, and can stop at a known point: after its Nth batch it writes a "ready" file and
waits (for a signal, or for a file that another process writes). The test acts on that file,
never on a clock, so the signal always lands at the same place of the run.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.test_reliability import small_suite

MODEL = "scripted:comply-from=2"
DIALOGUES = 16
LOOKAHEAD = 4
SUMMARY_RE = re.compile(r"(\d+) answers? from cache \(model and judge\), (\d+) model requests?")
# Waiting on a file the other side writes: the bound only catches a hang, it is never reached
# by a healthy run however loaded the machine.
HANG_S = 300

CONFTEST = """
import json
import os


def pytest_runtest_logreport(report):
    data = getattr(report, "mtmcs", None)
    if data is not None:
        with open(os.environ["MTMCS_TEST_RESULTS"], "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"nodeid": report.nodeid, "result": data}) + "\\n")
"""

GATED_BACKEND = '''
"""`gated:SPEC`: SPEC's backend; logs each batch; can wait at a known batch (see the test)."""
import json
import os
import sqlite3
import time

from pytest_mtmcs.backends import create_backend
from pytest_mtmcs.backends.cache import RESPONSE_NAMESPACE, cache_key


def _wait_for(path):
    while not os.path.exists(path):
        time.sleep(0.005)


class Gated:
    def __init__(self, inner):
        self.inner = inner
        self.spec = inner.spec
        self.calls = 0

    def fingerprint(self):
        return self.inner.fingerprint()

    def close(self):
        self.inner.close()

    def generate(self, requests):
        env = os.environ
        self.calls += 1
        fp = dict(self.inner.fingerprint())
        keys = [
            cache_key(namespace=RESPONSE_NAMESPACE, fingerprint=fp,
                      settings=r.settings.as_dict(), messages=r.messages)
            for r in requests
        ]
        conn = sqlite3.connect(env["MTMCS_TEST_CACHE"], timeout=60)
        try:
            cached = sum(
                1 for k in keys
                if conn.execute("SELECT 1 FROM responses WHERE key = ?", (k,)).fetchone()
            )
        finally:
            conn.close()
        line = json.dumps({"pid": os.getpid(), "requests": len(requests), "cached": cached})
        fd = os.open(env["MTMCS_TEST_AUDIT"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, (line + "\\n").encode())
        finally:
            os.close(fd)
        if self.calls == int(env.get("MTMCS_GATE_AT", "0")):
            open(env["MTMCS_GATE_READY"], "w").close()
            action = env.get("MTMCS_GATE_ACTION", "wait")
            if action == "crash" and not os.path.exists(env["MTMCS_GATE_READY"] + ".crashed"):
                open(env["MTMCS_GATE_READY"] + ".crashed", "w").close()
                os._exit(3)
            if action == "wait":
                _wait_for(env["MTMCS_GATE_GO"])
        return self.inner.generate(requests)


def create(rest, options):
    return Gated(create_backend(rest, options))
'''


def make_project(root: Path) -> Path:
    project = root / "project"
    small_suite(project / "suite", DIALOGUES)
    (project / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    (project / "conftest.py").write_text(CONFTEST, encoding="utf-8")
    site = root / "site"
    info = site / "mtmcs_gated-0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mtmcs-gated\nVersion: 0\n")
    (info / "entry_points.txt").write_text("[pytest_mtmcs.backends]\ngated = mtmcs_gated:create\n")
    (site / "mtmcs_gated.py").write_text(GATED_BACKEND, encoding="utf-8")
    return project


# `python -m pytest`, with Python's Ctrl-C handler installed whatever SIGINT disposition the run
# inherits: a process started in the background by a non-interactive shell (`cmd &` in a CI
# script) inherits SIGINT ignored, Python then installs no handler, and the SIGINT case would
# wait forever for an interrupt that never comes (seen on a loaded run started that way).
BOOT = (
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.argv[0] = 'pytest'; runpy.run_module('pytest', run_name='__main__', alter_sys=True)"
)


class Run:
    def __init__(self, project: Path, name: str, cache: str, *extra: str, **env: str) -> None:
        self.project = project
        self.results = project / f"{name}.jsonl"
        self.audit = project / f"{cache}-audit.jsonl"
        self.ready = project / f"{name}.ready"
        self.go = project / f"{name}.go"
        e = dict(os.environ)
        e["PYTHONPATH"] = os.pathsep.join(
            [str(project.parent / "site"), str(Path(__file__).resolve().parents[1])]
        )
        for k in ("PYTEST_ADDOPTS", "PYTEST_XDIST_WORKER", "OPENAI_BASE_URL"):
            e.pop(k, None)
        e.update(
            # A hung run is aborted by `output` with SIGABRT: this prints every thread's stack.
            PYTHONFAULTHANDLER="1",
            MTMCS_TEST_RESULTS=str(self.results),
            MTMCS_TEST_CACHE=str(project / f"{cache}.sqlite"),
            MTMCS_TEST_AUDIT=str(self.audit),
            MTMCS_GATE_READY=str(self.ready),
            MTMCS_GATE_GO=str(self.go),
            **env,
        )
        cmd = [
            sys.executable, "-c", BOOT, "suite", "-q", "-p", "no:cacheprovider",
            "-p", "no:randomly", f"--mtmcs-model=gated:{MODEL}",
            f"--mtmcs-cache={project / f'{cache}.sqlite'}", f"--mtmcs-lookahead={LOOKAHEAD}",
            *extra,
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd, cwd=project, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )

    def wait_ready(self) -> None:
        # Polls a file the run writes at a known batch; the bound only catches a hang.
        import time

        end = time.monotonic() + HANG_S
        while not self.ready.exists():
            assert self.proc.poll() is None, self.output()
            assert time.monotonic() < end, "the run never reached its gate"
            time.sleep(0.01)

    def output(self) -> str:
        try:
            out, _ = self.proc.communicate(timeout=HANG_S)
        except subprocess.TimeoutExpired:
            # A hang, not a slow machine (HANG_S is far beyond any healthy run): show where.
            self.proc.send_signal(signal.SIGABRT)
            out, _ = self.proc.communicate()
            text = out.decode("utf-8", "replace")
            raise AssertionError(f"the run hung; its output and stacks:\n{text[-8000:]}") from None
        return out.decode("utf-8", "replace")

    def read_results(self) -> dict[str, Any]:
        if not self.results.exists():
            return {}
        rows = [json.loads(line) for line in self.results.read_text().splitlines()]
        return {r["nodeid"]: comparable(r["result"]) for r in rows}


def comparable(result: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in result.items() if k not in ("cache_hits", "latency_s")}
    out["replies"] = [
        {k: v for k, v in r.items() if k not in ("cached", "latency_s")} for r in result["replies"]
    ]
    return out


def rows(path: Path) -> int:
    conn = sqlite3.connect(path, timeout=60)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return int(conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0])
    finally:
        conn.close()


def counts(output: str) -> tuple[int, int]:
    m = SUMMARY_RE.search(output)
    assert m, output[-3000:]
    return int(m.group(1)), int(m.group(2))


def audit(run: Run) -> list[dict[str, Any]]:
    return [json.loads(line) for line in run.audit.read_text().splitlines()]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path)


def reference(project: Path) -> tuple[dict[str, Any], int, int]:
    """The uninterrupted run's results, its distinct generations and its number of batches."""
    ref = Run(project, "reference", "reference")
    out = ref.output()
    assert ref.proc.returncode == 0, out[-3000:]
    results = ref.read_results()
    assert len(results) == DIALOGUES
    hits, generated = counts(out)
    assert hits == 0 and generated == rows(project / "reference.sqlite")
    batches = len(audit(ref))
    assert batches >= 4
    return results, generated, batches


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_mid_run_keeps_the_cache_writes_nothing_and_resumes(project, sig):
    expected, distinct, batches = reference(project)
    baseline = project / "baselines" / "b" / "mtmcs_mini.ambr"
    report = project / "rep"
    run = Run(
        project, "cut", "shared", "--mtmcs-baseline=b", "--snapshot-update",
        f"--mtmcs-report={report}", MTMCS_GATE_AT=str(batches - 1),
    )  # fmt: skip
    run.wait_ready()
    run.proc.send_signal(sig)
    out = run.output()
    assert run.proc.returncode == pytest.ExitCode.INTERRUPTED, out[-3000:]
    finished = len(run.read_results())
    assert 0 < finished < DIALOGUES
    how = "SIGTERM" if sig == signal.SIGTERM else "Ctrl-C"
    assert f"run INTERRUPTED ({how}): {finished} of {DIALOGUES} dialogues finished" in out, out
    assert "Traceback" not in out and "INTERNALERROR" not in out
    assert not baseline.exists()
    # No report of a partial run, but a summary.md whose first line says the gate did not run
    # (a CI page must never show an earlier run's green summary for this one).
    assert sorted(p.name for p in report.iterdir()) == ["summary.md"]
    summary = (report / "summary.md").read_text(encoding="utf-8")
    assert summary.startswith(f"## ❌ pytest-mtmcs: gate not run: interrupted ({how})\n"), summary
    assert f"gate: NOT RUN: interrupted ({how}): {finished} of {DIALOGUES}" in out, out[-2000:]
    kept = rows(project / "shared.sqlite")  # integrity_check ok
    assert 0 < kept < distinct

    again = Run(project, "resumed", "shared")
    out2 = again.output()
    assert again.proc.returncode == 0, out2[-3000:]
    assert again.read_results() == expected
    hits, generated = counts(out2)
    # Nothing finished was generated again.
    assert generated == distinct - kept and hits == kept
    assert all(b["cached"] == 0 for b in audit(again))


def test_killed_xdist_worker_loses_nothing_on_rerun(project):
    expected, distinct, batches = reference(project)
    # The worker that reaches a quarter of the reference's batches dies there (once), mid-run; xdist replaces it.
    run = Run(
        project, "crash", "shared", "-n", "2", "--max-worker-restart=2",
        MTMCS_GATE_AT=str(batches // 4), MTMCS_GATE_ACTION="crash",
    )  # fmt: skip
    out = run.output()
    assert (run.ready.parent / (run.ready.name + ".crashed")).exists(), out[-3000:]
    assert "crashed" in out or "replacing crashed worker" in out, out[-3000:]
    kept = rows(project / "shared.sqlite")
    assert kept > 0

    again = Run(project, "resumed", "shared")
    out2 = again.output()
    assert again.proc.returncode == 0, out2[-3000:]
    assert again.read_results() == expected
    hits, generated = counts(out2)
    assert generated == distinct - kept and hits == kept
    assert all(b["cached"] == 0 for b in audit(again))


def test_two_runs_sharing_one_cache_both_finish_with_correct_results(project):
    expected, distinct, _ = reference(project)
    # Both runs reach their 2nd batch, then each waits for the other: from there on they write
    # to the one cache file at the same time.
    a = Run(project, "a", "shared", MTMCS_GATE_AT="2")
    b = Run(project, "b", "shared", MTMCS_GATE_AT="2")
    a.wait_ready()
    b.wait_ready()
    a.go.touch()
    b.go.touch()
    out_a, out_b = a.output(), b.output()
    for run, out in ((a, out_a), (b, out_b)):
        assert run.proc.returncode == 0, out[-3000:]
        assert "locked" not in out and "Traceback" not in out
        assert run.read_results() == expected
    assert rows(project / "shared.sqlite") == distinct


def test_sigterm_handler_is_restored_after_the_session(pytester):
    small_suite(pytester.path / "suites" / "mini", 4)
    before = signal.getsignal(signal.SIGTERM)
    result = pytester.runpytest(
        "suites", "-p", "no:cacheprovider", "--mtmcs-model=scripted:refuse-all"
    )
    assert result.ret == pytest.ExitCode.OK
    assert signal.getsignal(signal.SIGTERM) is before
