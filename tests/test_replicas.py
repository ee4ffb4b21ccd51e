"""Several servers behind one `openai:` backend: choice, circuit breaker, a replica killed mid-run.

No timing: the kill is triggered by the stub's own request counter, the other replicas hold their
answers until the test has restarted it (events), and the cool-down runs on a fake clock.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pytest_mtmcs.backends import BackendOptions
from pytest_mtmcs.backends.cache import ResponseCache
from pytest_mtmcs.backends.openai_compat import create
from pytest_mtmcs.backends.replicas import Replica, ReplicaSet
from pytest_mtmcs.engine.runner import Engine
from pytest_mtmcs.judges.rules import RulesJudge
from pytest_mtmcs.records import GenerationSettings
from pytest_mtmcs.suite import load_suite
from pytest_mtmcs.testing import DEFAULT_ANSWER, StubServer

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "suites" / "mtmcs_mini"
FAST = {"backoff_base_s": 0.001, "backoff_cap_s": 0.005}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)


def replica_set(n: int = 3, clock: Callable[[], float] | None = None) -> ReplicaSet[str]:
    return ReplicaSet(
        [Replica(f"http://r{i}/v1", f"pool{i}") for i in range(n)],
        failures_to_trip=3,
        cooldown_s=10.0,
        clock=clock or FakeClock(),
    )


# --- the policy ------------------------------------------------------------------------------


def test_fewest_in_flight_first_then_listed_order() -> None:
    rs = replica_set()
    a, b, c = rs.replicas
    assert rs.pick() is a
    a.in_flight, b.in_flight, c.in_flight = 2, 1, 1
    assert rs.pick() is b
    assert rs.pick(avoid=b) is c


def test_trips_after_repeated_failures_and_comes_back_after_the_cool_down() -> None:
    clock = FakeClock()
    rs = replica_set(clock=clock)
    a, b, _ = rs.replicas
    rs.failed(a, "connection refused")
    rs.failed(a, "connection refused")
    assert rs.pick() is a  # two failures: still in use
    rs.succeeded(a)  # a success resets the count
    for _ in range(3):
        rs.failed(a, "connection refused")
    assert a.down_until == clock.now + 10.0
    assert all(rs.pick() is b for _ in range(5))  # b and c idle: the first listed
    clock.now += 10.0
    assert rs.pick() is a  # back on probation
    rs.failed(a, "503 Service Unavailable")  # one failure on probation: aside again
    assert a.trips == 2 and rs.pick() is b
    clock.now += 10.0
    rs.succeeded(a)
    assert a.restored and a.down_until is None
    assert rs.summary() == [
        "replica http://r0/v1 set aside 2x (connection refused; 503 Service Unavailable), restored"
    ]
    assert rs.events[-1] == "replica http://r0/v1 restored"


def test_all_set_aside_the_one_due_first_is_tried() -> None:
    clock = FakeClock()
    rs = replica_set(clock=clock)
    for r in rs.replicas:
        for _ in range(3):
            rs.failed(r, "connection refused")
        clock.now += 1.0
    assert rs.pick() is rs.replicas[0]
    assert all(r.trips == 1 for r in rs.replicas)
    assert rs.summary()[0].endswith("still set aside at the end")


def test_one_server_never_trips() -> None:
    rs = replica_set(n=1)
    for _ in range(10):
        rs.failed(rs.replicas[0], "connection refused")
    assert rs.replicas[0].trips == 0 and rs.summary() == []


def test_the_fingerprint_names_the_set_not_the_replica_that_answered() -> None:
    one = create("m", BackendOptions(base_url="http://b:1/v1,http://a:1/v1"))
    other = create("m", BackendOptions(base_url="http://a:1/v1, http://b:1/v1/"))
    assert one._host == other._host == "a:1,b:1"
    single = create("m", BackendOptions(base_url="http://a:1/v1"))
    assert single._host == "a:1"  # one server: as before, caches stay valid


# --- three stubs, one killed mid-run and restarted ---------------------------------------------


def body_key(body: dict[str, Any]) -> str:
    return json.dumps(body, sort_keys=True)


def test_a_replica_killed_mid_run_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    restarted = threading.Event()
    victim = StubServer(kill_after=20)

    def hold_while_down(body: dict[str, Any]) -> str:
        # Once the victim is dead, the others answer only after it is back: the rest of the
        # run then has it in the rotation again (events, not time).
        if victim.killed.is_set():
            restarted.wait(60)
        return DEFAULT_ANSWER

    a = StubServer(respond=hold_while_down)
    c = StubServer(respond=hold_while_down)
    clock = FakeClock()
    set_aside = threading.Event()

    def on_event(text: str) -> None:
        if "set aside" in text:
            set_aside.set()

    suite = load_suite(BUNDLED)
    settings = GenerationSettings(max_new_tokens=64)
    with a, victim, c:
        urls = ",".join(s.base_url for s in (a, victim, c))
        options = BackendOptions(
            base_url=urls,
            concurrency=16,
            extra={**FAST, "clock": clock, "replica_cooldown_s": 5, "on_replica_event": on_event},
        )
        out: dict[str, Any] = {}
        with create("stub-model", options) as backend:
            cache = ResponseCache(tmp_path / "responses.sqlite")
            engine = Engine(backend, RulesJudge(), settings, cache)
            worker = threading.Thread(target=lambda: out.update(engine.run(suite.dialogues)))
            worker.start()
            assert victim.killed.wait(120), "the victim never reached its 20th request"
            victim.start()  # same port
            # The others hold their answers, so the backend keeps trying the dead one (it has the
            # fewest in flight) until it is set aside; only then does the cool-down run out.
            assert set_aside.wait(120), "the dead replica was never set aside"
            clock.now += 10.0
            restarted.set()
            worker.join(300)
            assert not worker.is_alive()
            summary = backend.replica_summary()
        answered = [body_key(b) for s in (a, victim, c) for b in s.answered_bodies]
    assert len(out) == len(suite.dialogues)
    assert [r.id for r in out.values() if r.error is not None] == []
    duplicates = [k for k, n in Counter(answered).items() if n > 1]
    assert duplicates == []
    assert len(answered) == engine.model_calls == cache.writes
    assert victim.counts["drop"] >= 1  # it did die with requests on it
    assert victim.answered_bodies  # and served again after its restart
    # "(connection refused)" or "(connection lost)": whichever failure tripped it.
    assert len(summary) == 1, summary
    assert re.fullmatch(
        re.escape(f"replica {victim.base_url} set aside 1x (connection ") + r"[a-z; ]+\), restored",
        summary[0],
    ), summary
    # A re-run generates nothing: every turn comes from the cache, whichever replica made it.
    for s in (a, victim, c):
        s.reset()
    with a, victim, c:
        options = BackendOptions(base_url=urls, extra=FAST)
        with create("stub-model", options) as backend:
            again = Engine(backend, RulesJudge(), settings, cache).run(suite.dialogues)
        assert [len(s.chat_requests) for s in (a, victim, c)] == [0, 0, 0]
    assert [r.verdict for r in again.values()] == [r.verdict for r in out.values()]


# --- end to end: the run summary names the replica ---------------------------------------------


def small_suite(dest: Path, lines: int = 16) -> Path:
    shutil.copytree(BUNDLED, dest, ignore=shutil.ignore_patterns("*.py"))
    jsonl = dest / "dialogues.jsonl"
    kept = jsonl.read_text(encoding="utf-8").splitlines()[:lines]
    jsonl.write_text("\n".join(kept) + "\n", encoding="utf-8")
    return dest


def test_the_summary_names_a_set_aside_replica(pytester: pytest.Pytester) -> None:
    small_suite(pytester.path / "suites" / "mini")
    victim = StubServer(kill_after=3)
    with StubServer() as a, victim, StubServer() as c:
        urls = ",".join(s.base_url for s in (a, victim, c))
        result = pytester.runpytest(
            "suites",
            "-p",
            "no:cacheprovider",
            "--mtmcs-model=openai:stub-model",
            f"--mtmcs-base-url={urls}",
            "--mtmcs-concurrency=4",
            "--mtmcs-retries=8",
        )
        answered = [body_key(b) for s in (a, victim, c) for b in s.answered_bodies]
    text = result.stdout.str()
    assert victim.killed.is_set()
    assert f"replica {victim.base_url} set aside 1x (connection" in text, text[-3000:]
    assert result.parseoutcomes().get("error", 0) == 0, text[-3000:]
    assert "model backend failed" not in text
    assert [k for k, n in Counter(answered).items() if n > 1] == []
