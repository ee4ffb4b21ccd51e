"""Which dialogue goes to the model when, and how far ahead of pytest a process generates.

pytest runs a process's dialogue tests one after the other, and each test needs its dialogue's
result. Generating one dialogue per test would leave the model idle, so a process generates ahead
of the test being run, for the next dialogues of its share, in one of two schedules:

- **rounds** (`Engine.run`), for backends that batch (hf:): the next `lookahead` dialogues advance
  together, one `generate(list)` batch per round, each round waiting for all of its replies. A GPU
  batch per round is what such a backend wants. Against a server it wastes the slots: a round
  waits for its slowest request, and a chunk of dialogues drains unevenly (an 8-turn dialogue
  needs 8 rounds, a 1-turn one 1), so at the default 256 dialogues ahead and 256 in flight about
  half of the slots were in use (benchmarks/RESULTS.md).
- **pipeline** (`Pipeline`), for backends that take requests one by one (`StreamingBackend`:
  openai:): a dialogue's next turn goes out the moment its reply is in, and new dialogues are
  admitted as requests complete, so the backend's `concurrency` slots stay full (plus a small
  queue, an eighth of the concurrency, that covers the moments the main thread is busy with
  pytest).

Admission order (pipeline): least slack first. pytest needs the dialogue at share position `i`
when it reaches test `i`. The dialogue's chain is `k` round trips (its live turns, plus one for its
intent questions, which go out together), and at full load the process finishes about
`concurrency / mean requests per dialogue` dialogues per round trip, so it should start about
`k` round trips, i.e. `k x concurrency / mean requests` positions, before pytest gets there. Its
priority is `i - LEAD x that` (lowest first): long dialogues start well ahead and short ones just
in time, so the share ends on short dialogues rather than on an 8-turn straggler that holds the
last slots. Twins (adjacent dialogues sharing a `pair`) are admitted together: their shared turns
are then identical requests in flight at the same moment, sent once (as in a round).

Look-ahead (`--mtmcs-lookahead`, default auto): how far past the test being run a dialogue may be
admitted; what is admitted and not yet handed to pytest is what the window holds in memory.
- pipeline, auto: `concurrency + WINDOW x longest chain x concurrency / mean requests`: enough
  admitted work for the slots to stay full while pytest waits at its head for the slowest
  dialogue (a heavy-tailed server makes some chains several times their median), and room for
  the least-slack lead. `concurrency` is this process's (`process_concurrency`).
- rounds, auto: 256, as before (the hf: backend cuts its batches from it).
LEAD and WINDOW were checked with a discrete-event simulation of this policy
(`benchmarks/sim_cluster.py`; lognormal latency with p99 = 10x the median, fixed latency;
lengths 1-8; 256 and 1,024 in flight): LEAD 1 ended shares on long dialogues (0.94 of the slots
busy against 0.98 with 2 or 4); WINDOW 1 and 2 let the slots run dry while pytest waited for a
straggler (0.47 and 0.68 with the heavy tail), 4 to 12 gave the same 0.88-0.90; 8 leaves a margin.

Results do not depend on the schedule: both go through the same `Engine` steps, the cache and
the dedup of identical requests work the same, only per-reply timings differ (a round gives each
reply its share of the round's time, the pipeline the request's own round trip).

Pure: no pytest here. The harness (`harness/execution.py`) hands `ShareRunner` its share as plain
(key, dialogue, settings) and a function that builds the engine for a settings.
"""

from __future__ import annotations

import heapq
import math
import queue
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pytest_mtmcs import defaults
from pytest_mtmcs.backends import Generation, StreamingBackend
from pytest_mtmcs.errors import BackendError
from pytest_mtmcs.records import (
    ChatRequest,
    Dialogue,
    DialogueResult,
    GenerationSettings,
    Message,
    QuestionResult,
)

if TYPE_CHECKING:
    from pytest_mtmcs.engine.runner import Engine, _State

# (key, dialogue, settings): one dialogue test of the share; the key is the test's node id.
ShareItem = tuple[str, Dialogue, GenerationSettings]
EngineFor = Callable[[GenerationSettings], "Engine"]

SCHEDULES = ("auto", "rounds")
ROUNDS_LOOKAHEAD = defaults.ROUNDS_LOOKAHEAD  # auto look-ahead of the rounds schedule
LEAD = 4.0  # a dialogue starts LEAD x its chain's round trips before pytest needs it
WINDOW = 8.0  # auto look-ahead: WINDOW x the longest chain's round trips of finished dialogues
JUDGE_BATCH = 256  # finished dialogues judged per judge call, at most
TURN = -1  # the slot of a turn request (question requests: the question's index)


def process_concurrency(total: int, worker: int | None = None, workers: int | None = None) -> int:
    """This process's share of the run's `--mtmcs-concurrency`.

    The option is what the run keeps in flight in all: xdist worker `worker` (0-based) of
    `workers` gets `total // workers`, the first `total % workers` workers one more, and never
    less than 1. Without xdist, all of it. (Shards on several machines each take the whole value:
    `--mtmcs-concurrency` is per pytest command.)
    """
    if not workers or workers <= 1 or worker is None:
        return max(1, total)
    share = total // workers + (1 if worker % workers < total % workers else 0)
    return max(1, share)


def chain_and_requests(dialogue: Dialogue) -> tuple[int, int]:
    """(round trips in sequence, requests) of one dialogue: its live turns one after the other,
    then its intent questions together."""
    live = len(dialogue.live_user_turns())
    questions = len(dialogue.questions)
    return live + (1 if questions else 0), live + questions


def auto_lookahead(concurrency: int, mean_requests: float, longest_chain: int) -> int:
    """The pipeline's look-ahead (dialogues past the test being run) when the user sets none.

    `concurrency / mean_requests` dialogues finish per round trip at full load; while pytest waits
    for the dialogue at its head (up to WINDOW x the longest chain's round trips on a slow
    server), that many keep finishing, and `concurrency` more are in flight.
    """
    per_trip = concurrency / max(mean_requests, 1.0)
    return concurrency + math.ceil(WINDOW * max(longest_chain, 1) * per_trip)


def admission_units(share: Sequence[ShareItem]) -> list[tuple[int, int]]:
    """[first, end) position ranges admitted together: a run of adjacent twins (same suite, same
    `pair`, same settings), else one dialogue."""
    units: list[tuple[int, int]] = []
    i, n = 0, len(share)
    while i < n:
        _, d, settings = share[i]
        j = i + 1
        if d.pair:
            while j < n and share[j][1].pair == d.pair and share[j][1].suite == d.suite:
                if share[j][2] != settings:
                    break
                j += 1
        units.append((i, j))
        i = j
    return units


def priorities(
    share: Sequence[ShareItem], units: Sequence[tuple[int, int]], concurrency: int
) -> list[float]:
    """Least slack first: `first position - LEAD x chain x positions per round trip`."""
    costs = [chain_and_requests(d) for _, d, _ in share]
    mean_requests = sum(r for _, r in costs) / max(len(costs), 1)
    per_trip = concurrency / max(mean_requests, 1.0)
    return [
        first - LEAD * max(costs[p][0] for p in range(first, end)) * per_trip
        for first, end in units
    ]


class _Entry:
    """One admitted dialogue, until its result goes back to pytest."""

    __slots__ = ("answers", "engine", "finished", "key", "pos", "state", "waiting")

    def __init__(self, pos: int, key: str, engine: Engine, state: _State) -> None:
        self.pos = pos
        self.key = key
        self.engine = engine
        self.state = state
        self.answers: list[tuple[Generation, bool]] = []
        self.waiting = 0  # question requests not answered yet
        self.finished: tuple[QuestionResult, ...] | None = None  # set when nothing is left


class _Flight:
    """One request on its way: every dialogue waiting for its answer (twins share it)."""

    __slots__ = ("cache_key", "engine", "sent", "waiters")

    def __init__(self, engine: Engine, cache_key: str | None) -> None:
        self.engine = engine
        self.cache_key = cache_key
        self.sent = 0.0
        self.waiters: list[tuple[_Entry, int, tuple[Message, ...] | None]] = []


def _signature(request: ChatRequest) -> tuple[Any, ...]:
    return tuple((m.role, m.text, m.image.sha256 if m.image else None) for m in request.messages)


class Pipeline:
    """Keeps the backend's slots full from a window of admitted dialogues (see the module doc).

    Runs on the caller's thread: answers arrive from the backend's thread into a queue, and each
    `run_through` call (one per pytest test) takes them, sends the next turns and admits new
    dialogues before it hands a result back; requests stay in flight while pytest runs tests.
    """

    def __init__(
        self, share: Sequence[ShareItem], *, concurrency: int, lookahead: int | None = None
    ) -> None:
        self.share = share
        self.concurrency = max(1, concurrency)
        costs = [chain_and_requests(d) for _, d, _ in share]
        mean_requests = sum(r for _, r in costs) / max(len(costs), 1)
        longest = max((c for c, _ in costs), default=1)
        self.lookahead = max(
            1, lookahead or auto_lookahead(self.concurrency, mean_requests, longest)
        )
        # Requests sent beyond the slots wait in the backend: they keep its slots full while this
        # thread is away running tests, at the cost of a queue wait per turn.
        self.budget = self.concurrency + max(1, self.concurrency // 8)
        self._pos = {key: i for i, (key, _, _) in enumerate(share)}
        self._units = admission_units(share)
        self._unit_of = [0] * len(share)
        for u, (first, end) in enumerate(self._units):
            for p in range(first, end):
                self._unit_of[p] = u
        self._prio = priorities(share, self._units, self.concurrency)
        self._admitted = bytearray(len(self._units))
        self._heap: list[tuple[float, int]] = []
        self._pushed = 0  # units pushed onto the heap so far (in share order)
        self._head = 0  # share position of the test being run
        self._entries: dict[int, _Entry] = {}  # position -> admitted, result not handed out
        self._finished: list[int] = []  # heap of positions finished and not judged
        self._flights: dict[Hashable, _Flight] = {}
        self._by_token: dict[int, Hashable] = {}
        self._tokens = 0
        self._outbox: list[tuple[_Entry, int, ChatRequest, tuple[Message, ...] | None]] = []
        self._cached: list[tuple[_Entry, int, tuple[Message, ...] | None, str]] = []
        self._store: dict[Engine, dict[str, str]] = {}
        self._inbox: queue.SimpleQueue[tuple[int, Generation, float]] = queue.SimpleQueue()
        self._turns = 0  # turns answered since the progress sink last heard
        self._progress: Any = None
        self._engine_for: EngineFor | None = None
        self.peak_window = 0  # most dialogues admitted and not handed out at once

    # -- what the runner calls ----------------------------------------------------------------

    def run_through(self, key: str, engine_for: EngineFor) -> dict[str, DialogueResult]:
        """The result of the dialogue `key` and of other finished ones (up to JUDGE_BATCH),
        by key; generates ahead meanwhile."""
        self._engine_for = engine_for
        pos = self._pos[key]
        self._head = max(self._head, pos)
        self._fill_window()
        if pos not in self._entries:
            # Not admitted yet (pytest got here first, or runs out of order): now, whatever
            # the budget says.
            self._admit_unit(self._unit_of[pos])
        self._pump(block=False)
        entry = self._entries[pos]
        while entry.finished is None:
            self._pump(block=True)
        self._pump(block=False)  # what arrived meanwhile: keep the slots full during the test
        return self._judge(entry)

    # -- admission ------------------------------------------------------------------------------

    def _fill_window(self) -> None:
        limit = self._head + self.lookahead
        units, heap = self._units, self._heap
        while self._pushed < len(units) and units[self._pushed][0] < limit:
            u = self._pushed
            heapq.heappush(heap, (self._prio[u], u))
            self._pushed += 1

    def _admit(self) -> None:
        room = self.budget - len(self._flights) - len(self._outbox)
        heap, admitted = self._heap, self._admitted
        while room > 0 and heap:
            u = heap[0][1]
            if admitted[u]:
                heapq.heappop(heap)
                continue
            room -= self._admit_unit(u)
            heapq.heappop(heap)

    def _admit_unit(self, u: int) -> int:
        """Starts every dialogue of unit `u`; the number of requests queued."""
        if self._admitted[u]:
            return 0
        assert self._engine_for is not None
        first, end = self._units[u]
        # Built before anything changes: a backend or judge that cannot be built raises here
        # (the harness turns it into the test's error) and leaves the unit as it was.
        engines = [self._engine_for(self.share[p][2]) for p in range(first, end)]
        self._admitted[u] = 1
        before = len(self._outbox)
        for p, engine in zip(range(first, end), engines, strict=True):
            key, dialogue, _ = self.share[p]
            entry = _Entry(p, key, engine, engine.start(dialogue))
            self._progress = engine.progress
            self._entries[p] = entry
            if entry.state.advance_to_live_turn():
                self._ask_turn(entry)
            else:
                self._ask_questions(entry)
        self.peak_window = max(self.peak_window, len(self._entries))
        return len(self._outbox) - before

    def _ask_turn(self, entry: _Entry) -> None:
        history = tuple(entry.state.messages)
        self._outbox.append((entry, TURN, entry.engine.turn_request(entry.state, history), history))

    def _ask_questions(self, entry: _Entry) -> None:
        requests = entry.engine.question_requests(entry.state)
        if not requests:
            self._finish(entry, ())
            return
        entry.answers = [("", False)] * len(requests)
        entry.waiting = len(requests)
        self._outbox.extend((entry, qi, r, None) for qi, r in enumerate(requests))

    def _finish(self, entry: _Entry, questions: tuple[QuestionResult, ...]) -> None:
        entry.finished = questions
        heapq.heappush(self._finished, entry.pos)

    # -- sending and receiving ------------------------------------------------------------------

    def _pump(self, block: bool) -> None:
        """Admits, sends, and takes answers until nothing moves; waits for one answer first
        when `block` (the caller's dialogue is not finished)."""
        while True:
            self._admit()
            self._flush()
            if self._cached:
                cached, self._cached = self._cached, []
                for entry, slot, history, text in cached:
                    self._deliver(entry, slot, history, text, True, 0.0)
                continue
            got = self._take(block)
            self._write_cache()
            self._report_turns()
            if not got:
                return
            block = False

    def _flush(self) -> None:
        """Sends what is queued: cache hits are answered at once; a request identical to one
        already in flight waits for that one's answer; the rest go to the backend."""
        if not self._outbox:
            return
        outbox, self._outbox = self._outbox, []
        groups: dict[Engine, list[tuple[_Entry, int, ChatRequest, tuple[Message, ...] | None]]]
        groups = {}
        for item in outbox:
            groups.setdefault(item[0].engine, []).append(item)
        for engine, items in groups.items():
            cache = engine.cache
            keys: list[Any]
            cached: Mapping[str, str] = {}
            if cache is not None:
                keys = engine.cache_keys([r for _, _, r, _ in items])
                cached = cache.get_many(keys)
            else:
                keys = [
                    tuple(e.state.signature) if slot == TURN else _signature(r)
                    for e, slot, r, _ in items
                ]
            fresh: list[tuple[Hashable, ChatRequest]] = []
            settings = engine.settings
            for (entry, slot, request, history), k in zip(items, keys, strict=True):
                if cached and k in cached:
                    self._cached.append((entry, slot, history, cached[k]))
                    continue
                fk = (settings, k)
                flight = self._flights.get(fk)
                if flight is None:
                    flight = self._flights[fk] = _Flight(engine, k if cache is not None else None)
                    fresh.append((fk, request))
                flight.waiters.append((entry, slot, history))
            if fresh:
                self._send(engine, fresh)

    def _send(self, engine: Engine, fresh: Sequence[tuple[Hashable, ChatRequest]]) -> None:
        base = self._tokens
        self._tokens += len(fresh)
        now = time.perf_counter()
        for i, (fk, _) in enumerate(fresh):
            self._by_token[base + i] = fk
            self._flights[fk].sent = now
        engine.model_calls += len(fresh)
        inbox = self._inbox

        def done(i: int, result: Generation) -> None:
            inbox.put((base + i, result, time.perf_counter()))

        backend: Any = engine.backend
        try:
            backend.submit([r for _, r in fresh], done)
        except Exception as exc:  # as a batch that failed in `generate`: each request fails
            err = (
                exc
                if isinstance(exc, BackendError)
                else BackendError(f"{type(exc).__name__}: {exc}")
            )
            for i in range(len(fresh)):
                done(i, err)

    def _take(self, block: bool) -> bool:
        """Answers that have arrived (waiting for the first one when `block`); False if none."""
        inbox = self._inbox
        try:
            item = inbox.get_nowait()
        except queue.Empty:
            if not block:
                return False
            if not self._flights:
                raise RuntimeError(
                    "pytest-mtmcs pipeline: waiting with nothing in flight"
                ) from None
            while True:
                try:
                    # A timeout, so that Ctrl-C is seen however the platform waits on locks.
                    item = inbox.get(timeout=1.0)
                    break
                except queue.Empty:
                    continue
        while True:
            self._arrived(*item)
            try:
                item = inbox.get_nowait()
            except queue.Empty:
                return True

    def _arrived(self, token: int, result: Generation, at: float) -> None:
        flight = self._flights.pop(self._by_token.pop(token))
        latency = at - flight.sent
        if flight.cache_key is not None and isinstance(result, str):
            self._store.setdefault(flight.engine, {})[flight.cache_key] = result
        for entry, slot, history in flight.waiters:
            self._deliver(entry, slot, history, result, False, latency)

    def _deliver(
        self,
        entry: _Entry,
        slot: int,
        history: tuple[Message, ...] | None,
        result: Generation,
        from_cache: bool,
        latency: float,
    ) -> None:
        engine, state = entry.engine, entry.state
        if slot == TURN:
            assert history is not None
            self._turns += 1
            if engine.record_turn(state, history, result, from_cache, latency):
                self._ask_turn(entry)
            elif state.error is not None:
                self._finish(entry, ())
            else:
                self._ask_questions(entry)
            return
        entry.answers[slot] = (result, from_cache)
        entry.waiting -= 1
        if entry.waiting == 0:
            self._finish(entry, engine.record_answers(state, entry.answers))

    def _write_cache(self) -> None:
        if self._store:
            store, self._store = self._store, {}
            for engine, items in store.items():
                assert engine.cache is not None
                engine.cache.put_many(items)

    def _report_turns(self) -> None:
        if self._turns:
            if self._progress is not None:
                self._progress.advance(turns=self._turns)
            self._turns = 0

    # -- results ------------------------------------------------------------------------------

    def _judge(self, entry: _Entry) -> dict[str, DialogueResult]:
        """Judges `entry` with other finished dialogues (the next ones pytest will ask for
        first) in one judge batch, and hands their results out."""
        batch = [entry]
        taken = {entry.pos}
        finished, entries = self._finished, self._entries
        while finished and len(batch) < JUDGE_BATCH:
            p = heapq.heappop(finished)
            other = entries.get(p)
            if other is None or p in taken:
                continue  # handed out already
            batch.append(other)
            taken.add(p)
        by_engine: dict[Engine, list[_Entry]] = {}
        for e in batch:
            by_engine.setdefault(e.engine, []).append(e)
            del entries[e.pos]
        out: dict[str, DialogueResult] = {}
        for engine, group in by_engine.items():
            results = engine.finish([e.state for e in group], [e.finished or () for e in group])
            for e in group:
                out[e.key] = results[e.state.dialogue.id]
        return out


class ShareRunner:
    """What a pytest process calls once per dialogue test: that dialogue's result, generated
    ahead with the rest of the share in the schedule its backend suits (see the module doc)."""

    def __init__(
        self,
        share: Sequence[ShareItem],
        *,
        lookahead: int | None = None,
        schedule: str = "auto",
        exact: bool = True,
    ) -> None:
        """`exact`: the share is what this process will run. False for an xdist worker fed
        by another scheduler (`--dist loadscope`, ...): the collection's order is then only a
        guess at its share, and the auto look-ahead stays at ROUNDS_LOOKAHEAD rather than
        generating thousands of dialogues that other workers run."""
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule {schedule!r}: expected one of {', '.join(SCHEDULES)}")
        self.share = list(share)
        self.lookahead = lookahead if lookahead or exact else ROUNDS_LOOKAHEAD
        self.schedule = schedule
        self.pipeline: Pipeline | None = None
        self.mode: str | None = None  # "pipeline" or "rounds", chosen at the first dialogue
        self._pos = {key: i for i, (key, _, _) in enumerate(self.share)}
        self._done: set[str] = set()

    def run_through(self, item: ShareItem, engine_for: EngineFor) -> dict[str, DialogueResult]:
        """`item`'s result, and those of others that finished with it, by key."""
        key, dialogue, settings = item
        engine = engine_for(settings)
        if self.mode is None:
            backend: Any = engine.backend
            streams = self.schedule == "auto" and isinstance(backend, StreamingBackend)
            self.mode = "pipeline" if streams else "rounds"
            if streams:
                self.pipeline = Pipeline(
                    self.share, concurrency=int(backend.concurrency), lookahead=self.lookahead
                )
        if key not in self._pos:
            # Not in the share computed at the start (a replacement xdist worker runs what a
            # dead one left): on its own.
            results = {key: engine.run([dialogue])[dialogue.id]}
        elif self.pipeline is not None:
            results = self.pipeline.run_through(key, engine_for)
        else:
            results = self._rounds(key, engine_for)
        self._done.update(results)
        if len(self._done) >= len(self.share):
            self._note_in_flight(engine)
        return results

    def _rounds(self, key: str, engine_for: EngineFor) -> dict[str, DialogueResult]:
        start = self._pos[key]
        window = self.lookahead or ROUNDS_LOOKAHEAD
        chunk = [it for it in self.share[start : start + window] if it[0] not in self._done]
        groups: dict[GenerationSettings, list[ShareItem]] = {}
        for it in chunk:
            groups.setdefault(it[2], []).append(it)
        results: dict[str, DialogueResult] = {}
        for settings, group in groups.items():
            out = engine_for(settings).run([d for _, d, _ in group])
            for k, d, _ in group:
                results[k] = out[d.id]
        return results

    def _note_in_flight(self, engine: Engine) -> None:
        """At the end of the share: how busy the backend was, for the progress end line."""
        measure = getattr(engine.backend, "in_flight", None)
        progress = engine.progress
        if callable(measure) and progress is not None and hasattr(progress, "in_flight"):
            progress.in_flight = measure()
