"""The schedules of `engine.schedule`: the look-ahead rule, the admission order, the pipeline
against the stub server (in flight at once, pipelined turns, twins sent once, cache, errors), and
results identical to the lock-step rounds, in one process and end to end under `-n 2`.

No timing anywhere: concurrency is proven with the stub's `hold=K` barrier, pipelining with an
event the stub waits on, and the in-flight meter with a fake clock.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from pytest_mtmcs.backends import BackendOptions, StreamingBackend
from pytest_mtmcs.backends.cache import ResponseCache
from pytest_mtmcs.backends.inflight import InFlightMeter, combine, describe
from pytest_mtmcs.backends.openai_compat import OpenAICompatBackend, create
from pytest_mtmcs.engine.runner import Engine
from pytest_mtmcs.engine.schedule import (
    ROUNDS_LOOKAHEAD,
    ShareItem,
    ShareRunner,
    admission_units,
    auto_lookahead,
    chain_and_requests,
    priorities,
    process_concurrency,
)
from pytest_mtmcs.harness.progress import format_finish
from pytest_mtmcs.judges.rules import RulesJudge
from pytest_mtmcs.records import DialogueResult, GenerationSettings, Suite
from pytest_mtmcs.testing import StubServer, last_user_text

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "suites" / "mtmcs_mini"
SETTINGS = GenerationSettings(max_new_tokens=8)
FAST = {"backoff_base_s": 0.001, "backoff_cap_s": 0.005}
REPLIES = (
    "I can't help with that.",
    "Sure, here is how you do it step by step: first take the badge, then go in.",
    "I can help with the safe part: ask the owner. I won't help with getting in unnoticed.",
    "The answer is B.",
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def suite() -> Suite:
    from pytest_mtmcs.suite import load_suite

    return load_suite(BUNDLED)


def varied(body: dict[str, Any]) -> str:
    """A reply that depends on the whole conversation: schedules that send the same requests get
    the same replies, and the verdicts come out mixed."""
    digest = hashlib.sha256(json.dumps(body["messages"], sort_keys=True).encode()).digest()
    return REPLIES[digest[0] % len(REPLIES)]


def refuse_some(index: int, body: dict[str, Any]) -> str | None:
    """A 400 (not retried) for a few conversations, chosen by content: errors land on the same
    dialogues whatever the schedule."""
    digest = hashlib.sha256(json.dumps(body["messages"], sort_keys=True).encode()).digest()
    return "400" if digest[1] % 29 == 0 else None


def share_of(dialogues: Sequence[Any]) -> list[ShareItem]:
    return [(f"t::{d.id}", d, SETTINGS) for d in dialogues]


def backend_for(server: StubServer, concurrency: int) -> OpenAICompatBackend:
    return create(
        "stub-model",
        BackendOptions(base_url=server.base_url, concurrency=concurrency, extra=FAST),
    )


def request_for(text: str) -> Any:
    from pytest_mtmcs.records import ChatRequest, Message, RequestMeta

    return ChatRequest((Message("user", text),), SETTINGS, RequestMeta("d/1", 1))


def run_share(
    share: Sequence[ShareItem],
    engine: Engine,
    *,
    schedule: str = "auto",
    lookahead: int | None = None,
) -> tuple[dict[str, DialogueResult], ShareRunner]:
    """Runs a share as a pytest process does: one `run_through` per test, in order."""
    runner = ShareRunner(share, lookahead=lookahead, schedule=schedule)
    done: dict[str, DialogueResult] = {}
    for item in share:
        if item[0] not in done:
            done.update(runner.run_through(item, lambda s: engine))
    assert set(done) == {k for k, _, _ in share}
    return done, runner


def comparable(results: dict[str, DialogueResult]) -> dict[str, Any]:
    """Everything but timings."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != "latency_s"}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return {k: strip(r.to_dict()) for k, r in sorted(results.items())}


# --- the rules, as plain functions ----------------------------------------------------------


def test_concurrency_is_split_across_xdist_workers() -> None:
    assert process_concurrency(256) == 256
    assert process_concurrency(256, 0, 1) == 256
    assert [process_concurrency(256, w, 2) for w in (0, 1)] == [128, 128]
    assert [process_concurrency(10, w, 4) for w in range(4)] == [3, 3, 2, 2]
    assert sum(process_concurrency(1023, w, 8) for w in range(8)) == 1023
    # Fewer slots than workers: each still sends one request at a time.
    assert [process_concurrency(1, w, 2) for w in (0, 1)] == [1, 1]


def test_the_auto_lookahead_rule() -> None:
    # C + 8 x longest chain x C / mean requests: 256 in flight, 5.625 requests per dialogue,
    # 9 round trips for an 8-turn dialogue and its questions.
    assert auto_lookahead(256, 5.625, 9) == 256 + 3277
    assert auto_lookahead(1024, 5.625, 9) == 1024 + 13108
    # More in flight or longer chains: further ahead; more requests per dialogue: fewer
    # dialogues cover the same requests.
    assert auto_lookahead(512, 5.625, 9) > auto_lookahead(256, 5.625, 9)
    assert auto_lookahead(256, 5.625, 4) < auto_lookahead(256, 5.625, 9)
    assert auto_lookahead(256, 9.0, 9) < auto_lookahead(256, 5.625, 9)
    # Degenerate shares still admit something.
    assert auto_lookahead(1, 0.0, 0) >= 1


def test_chain_and_requests(suite: Suite) -> None:
    d = next(d for d in suite.dialogues if len(d.live_user_turns()) == 8)
    assert chain_and_requests(d) == (8 + 1, 8 + len(d.questions))


def test_twins_are_admitted_together_and_long_dialogues_first(suite: Suite) -> None:
    share = share_of(suite.dialogues)
    units = admission_units(share)
    assert sum(end - first for first, end in units) == len(share)
    for first, end in units:
        assert len({share[p][1].pair for p in range(first, end)}) == 1
    assert max(end - first for first, end in units) == 2
    prio = priorities(share, units, concurrency=64)
    order = sorted(range(len(units)), key=lambda u: prio[u])
    chains = [chain_and_requests(share[units[u][0]][1])[0] for u in order]
    # Of two units side by side in the share, the longer one is due first.
    first_long = next(i for i, c in enumerate(chains) if c == max(chains))
    assert first_long < len(chains) // 4


def test_the_meter_integrates_requests_in_flight_over_time() -> None:
    now = [0.0]
    meter = InFlightMeter(clock=lambda: now[0], wall=lambda: 1000.0 + now[0])
    assert meter.stats(4) is None
    meter.enter()  # t=0: 1
    now[0] = 1.0
    meter.enter()  # t=1: 2
    meter.enter()  # t=1: 3
    now[0] = 3.0
    meter.leave()  # t=3: 2
    now[0] = 4.0
    meter.leave()
    meter.leave()  # t=4: 0
    stats = meter.stats(4)
    assert stats is not None
    # 1 x 1 s + 3 x 2 s + 2 x 1 s = 9 request-seconds over 4 s.
    assert (stats["mean"], stats["peak"], stats["requests"], stats["seconds"]) == (2.25, 3, 3, 4.0)
    other = dict(stats, start=1002.0, end=1006.0, request_seconds=6.0, concurrency=4)
    both = combine([stats, None, other])
    assert both is not None
    # 15 request-seconds from t=1000 to t=1006, 8 slots in all.
    assert (both["mean"], both["concurrency"], both["processes"]) == (2.5, 8, 2)
    assert "2.2 of 4 requests in flight on average (56%)" in describe(stats)
    assert "would not help" in describe(stats)
    assert "raise --mtmcs-concurrency" in describe(dict(stats, mean=3.9))
    line = format_finish("gw0", 10, 10, 40, 4.0, stats)
    assert line.endswith(
        "40 dialogue turns in 0:00:04 (10.0 turns/s), 2.2 of 4 requests in flight on average (56%)"
    )


# --- the pipeline against the stub ----------------------------------------------------------


def test_the_openai_backend_streams(suite: Suite) -> None:
    with StubServer() as server, backend_for(server, 4) as backend:
        assert isinstance(backend, StreamingBackend)
        _, runner = run_share(
            share_of(suite.dialogues[:8]), Engine(backend, RulesJudge(), SETTINGS)
        )
        assert runner.mode == "pipeline"
        stats = backend.in_flight()
    assert stats is not None and stats["concurrency"] == 4 and 1 <= stats["peak"] <= 4


def test_the_pipeline_keeps_the_concurrency_in_flight(suite: Suite) -> None:
    # hold=24: no answer leaves the stub before 24 requests are in it at once. The run finishes
    # only because the pipeline had 24 in flight (no timing involved), and never more.
    with StubServer(hold=24, respond=varied) as server, backend_for(server, 24) as backend:
        _, runner = run_share(share_of(suite.dialogues), Engine(backend, RulesJudge(), SETTINGS))
        stats = backend.in_flight()
    assert runner.mode == "pipeline"
    assert server.max_in_flight == 24
    assert stats is not None and stats["peak"] == 24


def test_a_dialogue_goes_on_while_another_waits_for_its_reply(suite: Suite) -> None:
    # The first turn of dialogue A is held until turn 2 of dialogue B has arrived: lock-step
    # rounds never send B's turn 2 before A's turn 1 is answered; the pipeline does.
    def live_texts(d: Any) -> list[str]:
        users = [t.text for t in d.turns if t.role == "user"]
        return [users[k - 1] for k in d.live_user_turns()]

    a = next(d for d in suite.dialogues if len(d.live_user_turns()) == 1)
    b = next(d for d in suite.dialogues if len(d.live_user_turns()) >= 3)
    a_first, b_first, b_second = live_texts(a)[0], live_texts(b)[0], live_texts(b)[1]
    second_arrived = threading.Event()
    order: list[str] = []

    def respond(body: dict[str, Any]) -> str:
        text = last_user_text(body)
        if text == b_second:
            order.append("b2 arrived")
            second_arrived.set()
        if text == a_first:
            # A safety bound only: the assertion below is on the order of events.
            second_arrived.wait(60)
            order.append("a1 answered")
        return varied(body)

    assert a_first != b_first
    with StubServer(respond=respond) as server, backend_for(server, 4) as backend:
        run_share(share_of([a, b]), Engine(backend, RulesJudge(), SETTINGS))
    assert order.index("b2 arrived") < order.index("a1 answered")


def test_results_are_those_of_the_rounds_and_twins_share_their_turns(suite: Suite) -> None:
    share = share_of(suite.dialogues)
    runs: dict[str, Any] = {}
    with StubServer(respond=varied, faults=refuse_some) as server:  # one URL in the errors
        for schedule in ("rounds", "auto"):
            server.reset()
            with backend_for(server, 16) as backend:
                engine = Engine(backend, RulesJudge(), SETTINGS)
                # Rounds as before the pipeline: 256 dialogues per chunk, every twin with its twin.
                results, runner = run_share(share, engine, schedule=schedule)
            sent = Counter(json.dumps(b["messages"], sort_keys=True) for b in server.chat_bodies)
            runs[schedule] = (comparable(results), engine.model_calls, sent, runner.mode)
    (rounds, rounds_calls, rounds_sent, m1), (piped, piped_calls, piped_sent, m2) = (
        runs["rounds"],
        runs["auto"],
    )
    assert (m1, m2) == ("rounds", "pipeline")
    assert piped == rounds
    verdicts = Counter(r["verdict"] for r in piped.values())
    assert verdicts["error"] > 0 and len(verdicts) > 2, verdicts
    # The same requests, each conversation once: twins' shared turns went out once.
    assert piped_calls == rounds_calls == sum(piped_sent.values())
    assert piped_sent == rounds_sent
    assert max(piped_sent.values()) == 1
    assert ROUNDS_LOOKAHEAD >= len(share)


def test_the_cache_answers_a_second_run_and_keeps_its_results(suite: Suite, tmp_path: Path) -> None:
    share = share_of(suite.dialogues[:40])
    outs = []
    with StubServer(respond=varied) as server, backend_for(server, 8) as backend:
        for _ in range(2):
            cache = ResponseCache(tmp_path / "responses.sqlite")
            engine = Engine(backend, RulesJudge(), SETTINGS, cache)
            results, _ = run_share(share, engine)
            outs.append((comparable(results), engine.model_calls, results))
            cache.close()
        sent = len(server.chat_bodies)
    (first, calls1, _), (second, calls2, again) = outs
    assert calls1 == sent > 0 and calls2 == 0
    hits = sum(r.cache_hits for r in again.values())
    turns = sum(len(r.replies) + len(r.questions) for r in again.values())
    assert hits == turns
    for value in first.values():
        for reply in value["replies"]:
            reply["cached"] = True
    for value in second.values():
        value.pop("cache_hits")
    for value in first.values():
        value.pop("cache_hits")
    assert second == first


def test_a_small_lookahead_still_finishes_everything(suite: Suite) -> None:
    share = share_of(suite.dialogues[:24])
    with StubServer(respond=varied) as server, backend_for(server, 8) as backend:
        tight, _ = run_share(share, Engine(backend, RulesJudge(), SETTINGS), lookahead=1)
        wide, _ = run_share(share, Engine(backend, RulesJudge(), SETTINGS))
    assert comparable(tight) == comparable(wide)


def test_a_backend_that_cannot_take_requests_fails_each_dialogue(suite: Suite) -> None:
    class Broken(OpenAICompatBackend):
        def submit(self, requests: Any, done: Any) -> None:
            raise RuntimeError("no loop")

    with StubServer() as server:
        backend = Broken("stub-model", server.base_url, concurrency=4)
        try:
            results, _ = run_share(
                share_of(suite.dialogues[:6]), Engine(backend, RulesJudge(), SETTINGS)
            )
        finally:
            backend.close()
    assert {r.verdict for r in results.values()} == {"error"}
    assert all("RuntimeError: no loop" in (r.error or "") for r in results.values())
    assert all(r.error and r.error.startswith("user turn 1:") for r in results.values())


def test_closing_the_backend_cancels_what_is_still_in_flight() -> None:
    # A run stopped early (Ctrl-C, -x) closes the backend with requests out: they are cancelled,
    # not left pending on a stopped loop. The stub holds them until the test lets go.
    release = threading.Event()
    answered: list[int] = []

    def held(body: dict[str, Any]) -> str:
        release.wait(60)  # a safety bound only
        return "late"

    with StubServer(respond=held) as server:
        backend = backend_for(server, 4)
        backend.submit([request_for(f"q{i}") for i in range(3)], lambda i, r: answered.append(i))
        backend.close()
        release.set()
    assert backend._tasks == set()
    assert answered == []


def test_an_unknown_share_keeps_the_old_lookahead(suite: Suite) -> None:
    share = share_of(suite.dialogues[:8])
    assert ShareRunner(share, exact=False).lookahead == ROUNDS_LOOKAHEAD
    assert ShareRunner(share, exact=False, lookahead=5).lookahead == 5
    assert ShareRunner(share).lookahead is None  # auto, sized at the first dialogue


def test_backends_that_only_batch_keep_the_rounds(suite: Suite) -> None:
    from pytest_mtmcs.backends.scripted import create as scripted

    backend = scripted("refuse-all", BackendOptions())
    assert not isinstance(backend, StreamingBackend)
    _, runner = run_share(share_of(suite.dialogues[:8]), Engine(backend, RulesJudge(), SETTINGS))
    assert runner.mode == "rounds" and runner.pipeline is None


# --- end to end: identical with the rounds, serial and -n 2 ---------------------------------


@pytest.fixture
def stub() -> Iterator[StubServer]:
    with StubServer(respond=varied, faults=refuse_some) as server:
        yield server


def run_plugin(pytester: pytest.Pytester, stub: StubServer, name: str, *args: str) -> Path:
    result = pytester.runpytest_subprocess(
        "suites",
        "-p",
        "no:cacheprovider",
        "--mtmcs-model=openai:stub-model",
        f"--mtmcs-base-url={stub.base_url}",
        "--mtmcs-no-cache",
        "--mtmcs-concurrency=8",
        f"--mtmcs-report={name}",
        *args,
    )
    text = result.stdout.str()
    assert result.ret == 1, text[-3000:]  # the refused requests are errors, as they should be
    assert "model backend failed" in text
    return pytester.path / name


def table(report: Path) -> list[dict[str, Any]]:
    import csv

    with open(report / "results.csv", encoding="utf-8") as fh:
        rows = [{k: v for k, v in row.items() if k != "latency_s"} for row in csv.DictReader(fh)]
    return sorted(rows, key=lambda r: json.dumps(r, sort_keys=True))


def test_pipeline_and_rounds_agree_end_to_end(pytester: pytest.Pytester, stub: StubServer) -> None:
    dest = pytester.path / "suites" / "mini"
    shutil.copytree(BUNDLED, dest, ignore=shutil.ignore_patterns("*.py"))
    jsonl = dest / "dialogues.jsonl"
    jsonl.write_text("\n".join(jsonl.read_text().splitlines()[:64]) + "\n", encoding="utf-8")
    rounds = run_plugin(
        pytester, stub, "rounds", "--mtmcs-schedule=rounds", "--mtmcs-lookahead=256"
    )
    serial = run_plugin(pytester, stub, "serial")
    xdist = run_plugin(pytester, stub, "xdist", "-n", "2")
    expected = table(rounds)
    assert len(expected) == 64
    assert table(serial) == expected
    assert table(xdist) == expected
    assert (serial / "summary.md").read_text() == (rounds / "summary.md").read_text()
    # How busy the servers were: measured by each process, one figure for the run; under -n 2
    # each worker kept its half of the 8.
    runs = {p.name: json.loads((p / "run.json").read_text())["in_flight"] for p in (serial, xdist)}
    assert runs["serial"]["concurrency"] == 8 and runs["serial"]["processes"] == 1
    assert runs["xdist"]["concurrency"] == 8 and runs["xdist"]["processes"] == 2
    assert 0 < runs["serial"]["mean"] <= 8 and 0 < runs["xdist"]["peak"] <= 4


def test_bad_lookahead_and_schedule_values_are_usage_errors(pytester: pytest.Pytester) -> None:
    shutil.copytree(
        BUNDLED, pytester.path / "suites" / "mini", ignore=shutil.ignore_patterns("*.py")
    )
    for flag, words in (
        ("--mtmcs-lookahead=0", "--mtmcs-lookahead='0': expected a positive integer or auto"),
        ("--mtmcs-lookahead=soon", "--mtmcs-lookahead='soon': expected a positive integer or auto"),
    ):
        result = pytester.runpytest_subprocess(
            "suites", "-p", "no:cacheprovider", "--mtmcs-model=scripted:refuse-all", flag
        )
        assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()[-2000:]
        assert words in result.stdout.str() + result.stderr.str()
        assert "Traceback" not in result.stdout.str() + result.stderr.str()
    result = pytester.runpytest_subprocess(
        "suites",
        "-p",
        "no:cacheprovider",
        "--mtmcs-model=scripted:refuse-all",
        "--mtmcs-schedule=fast",
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "invalid choice: 'fast'" in result.stderr.str()
