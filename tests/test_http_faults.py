"""Faults of an OpenAI-compatible server, each against the stub: every dialogue ends finished or as
an ERROR (counted, never a pass), nothing is generated twice, and a re-run against a healthy server
completes only what was missing (the response cache).

Seeded fault draws and counters; no assertion on time.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from pytest_mtmcs.backends import BackendOptions
from pytest_mtmcs.backends.cache import ResponseCache
from pytest_mtmcs.backends.openai_compat import create
from pytest_mtmcs.engine.runner import Engine
from pytest_mtmcs.judges.rules import RulesJudge
from pytest_mtmcs.records import Dialogue, DialogueResult, GenerationSettings
from pytest_mtmcs.suite import load_suite
from pytest_mtmcs.testing import StubServer, random_faults

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "suites" / "mtmcs_mini"
FAST = {"backoff_base_s": 0.001, "backoff_cap_s": 0.005, "retry_after_max_s": 0.01}
SETTINGS = GenerationSettings(max_new_tokens=64)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def dialogues() -> list[Dialogue]:
    return list(load_suite(BUNDLED).dialogues)[:24]


def run(
    server: StubServer, dialogues: list[Dialogue], cache: ResponseCache, **kw: Any
) -> dict[str, DialogueResult]:
    options = BackendOptions(
        base_url=server.base_url,
        concurrency=8,
        timeout_s=kw.pop("timeout_s", 30.0),
        extra=FAST,
        **kw,
    )
    with create("stub-model", options) as backend:
        return Engine(backend, RulesJudge(), SETTINGS, cache).run(dialogues)


def keys(server: StubServer) -> list[str]:
    return [json.dumps(b, sort_keys=True) for b in server.answered_bodies]


def check_then_rerun(
    first: dict[str, DialogueResult],
    server: StubServer,
    dialogues: list[Dialogue],
    cache: ResponseCache,
) -> tuple[int, int]:
    """The invariants after a faulty run; returns (errors of the first run, re-run requests)."""
    assert sorted(first) == sorted(d.id for d in dialogues)  # none lost
    for r in first.values():
        assert (r.verdict == "error") == (r.error is not None)  # an error is never a verdict
    generated = keys(server)
    assert [k for k, n in Counter(generated).items() if n > 1] == []
    errors = sum(r.error is not None for r in first.values())
    # The re-run, against the same server healed (the cache key names the server): only what
    # was missing is generated.
    server.heal()
    server.reset()
    with server:
        second = run(server, dialogues, cache, max_retries=0)
        again = keys(server)
    assert [r.id for r in second.values() if r.error is not None] == []
    assert set(again).isdisjoint(generated)
    if errors == 0:
        assert again == []
    else:
        assert again  # it completed the missing turns
    for d in dialogues:
        if first[d.id].error is None:
            assert second[d.id].verdict == first[d.id].verdict
            assert [x.text for x in second[d.id].replies] == [x.text for x in first[d.id].replies]
    return errors, len(again)


@pytest.mark.parametrize(
    "kinds",
    [
        ("spike",),
        ("429",),
        ("500", "502", "503"),
        ("reset",),
        ("drop",),
        ("malformed",),
        ("truncated",),
    ],
    ids=lambda k: "+".join(k),
)
def test_transient_faults_are_retried_to_the_end(
    kinds: tuple[str, ...], dialogues: list[Dialogue], tmp_path: Path
) -> None:
    # 30% of requests faulty, 5 retries: every dialogue finishes.
    server = StubServer(faults=random_faults(0.3, kinds, seed=1), retry_after=0, spike_s=0.02)
    cache = ResponseCache(tmp_path / "c.sqlite")
    with server:
        first = run(server, dialogues, cache, max_retries=8)
        faulted = sum(1 for r in server.chat_requests if r.fault is not None)
    assert faulted > 0
    errors, rerun = check_then_rerun(first, server, dialogues, cache)
    assert (errors, rerun) == (0, 0)


@pytest.mark.parametrize("kind", ["503", "reset", "malformed", "truncated", "drop"])
def test_persistent_faults_end_as_counted_errors_and_a_rerun_completes_them(
    kind: str, dialogues: list[Dialogue], tmp_path: Path
) -> None:
    # Half the requests faulty and no retry: some dialogues end as ERROR, the rest finish.
    server = StubServer(faults=random_faults(0.5, (kind,), seed=2), retry_after=0)
    cache = ResponseCache(tmp_path / "c.sqlite")
    with server:
        first = run(server, dialogues, cache, max_retries=0)
    errors, rerun = check_then_rerun(first, server, dialogues, cache)
    assert 0 < errors < len(dialogues)
    assert rerun > 0
    message = next(r.error for r in first.values() if r.error is not None)
    assert message is not None and "failed after 1 attempt" in message


def test_a_server_that_dies_mid_run_and_comes_back(
    dialogues: list[Dialogue], tmp_path: Path
) -> None:
    # It dies at its 15th request; requests meanwhile fail (refused) and end as errors after
    # their retries; it comes back on the same port when the test restarts it.
    server = StubServer(kill_after=15)
    cache = ResponseCache(tmp_path / "c.sqlite")
    out: dict[str, DialogueResult] = {}
    with server:
        worker = threading.Thread(
            target=lambda: out.update(run(server, dialogues, cache, max_retries=2))
        )
        worker.start()
        assert server.killed.wait(120)
        server.start()
        worker.join(300)
        assert not worker.is_alive()
        assert server.counts["drop"] >= 1
    check_then_rerun(out, server, dialogues, cache)


def test_a_timeout_is_an_error_then_completed(dialogues: list[Dialogue], tmp_path: Path) -> None:
    # `slow` answers only when the stub stops: with no retry the request times out.
    server = StubServer(faults=["slow"], slow_s=600)
    cache = ResponseCache(tmp_path / "c.sqlite")
    with server:
        first = run(server, dialogues[:4], cache, max_retries=0, timeout_s=0.5)
    errors, rerun = check_then_rerun(first, server, dialogues[:4], cache)
    assert errors == 1 and rerun >= 1
    assert any("timed out after 0.5 s" in (r.error or "") for r in first.values())


def _until(condition: Any, what: str) -> None:
    # Waits for a state the other thread reaches; the bound only catches a hang.
    import time

    end = time.monotonic() + 120
    while not condition():
        assert time.monotonic() < end, f"never reached: {what}"
        time.sleep(0.002)


def test_a_held_slow_request_is_dropped_not_answered_when_the_stub_stops() -> None:
    """A client gave up on a `slow` answer, then the stub stops: the held request is dropped.
    Answering it then could still land in the closed socket's buffer and be logged as a
    generation that nobody received (a re-run would then seem to generate it twice)."""
    import socket

    server = StubServer(faults=["slow"], slow_s=600)
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
    with server:
        client = socket.create_connection(("127.0.0.1", server.port))
        client.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        _until(lambda: server.in_flight == 1, "the request is held")
        client.close()  # the client gave up
    _until(lambda: server.in_flight == 0, "the held handler returned")
    assert [r.status for r in server.chat_requests] == ["drop"]
    assert server.answered_bodies == []
