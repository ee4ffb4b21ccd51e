"""Runs dialogues through a model, turn by turn, many dialogues at once.

The engine advances a set of dialogues in rounds: each round sends the next live user turn of every
unfinished dialogue to the backend as one batch (the hf backend pads them into GPU batches, the
openai backend keeps them in flight concurrently). Completed turns go to the response cache at once,
so an interrupted run resumes where it stopped. After the last round, the intent questions of all
dialogues go out as one batch, then every reply is judged.

That is `Engine.run`, the lock-step path, which batching backends (hf:) need. Backends that take
requests one by one (`StreamingBackend`, openai:) are driven by `engine.schedule.Pipeline`
instead, which sends each dialogue's next turn as soon as its reply is in. Both go through the
same steps here (`start`, `turn_request`, `record_turn`, `question_requests`, `record_answers`,
`finish`), so a dialogue's result does not depend on the schedule.

No pytest here: the plugin asks the engine for results; tests drive it as plain Python.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pytest_mtmcs.backends import Backend
from pytest_mtmcs.engine.adjudicated import HumanLabel, exchange_keys
from pytest_mtmcs.engine.escalation import FlipEscalation
from pytest_mtmcs.engine.grading import grade
from pytest_mtmcs.errors import BackendError
from pytest_mtmcs.judges import Judge, JudgeInput, Judgment, in_scope
from pytest_mtmcs.records import (
    ChatRequest,
    Dialogue,
    DialogueResult,
    GenerationSettings,
    Message,
    Question,
    QuestionResult,
    ReplyResult,
    RequestMeta,
)
from pytest_mtmcs.suite.questions import parse_answer, question_prompt, transcript_text

_UNSEEN = object()
_PARSED_MAX = 65536


class Cache(Protocol):
    hits: int
    misses: int
    writes: int

    def get_many(self, keys: Sequence[str]) -> dict[str, str]: ...

    def put_many(self, items: Mapping[str, str]) -> None: ...


class ProgressSink(Protocol):
    def advance(self, dialogues: int = 0, turns: int = 0) -> None: ...


@dataclass
class _State:
    """One dialogue in flight."""

    dialogue: Dialogue
    with_image: frozenset[int]
    messages: list[Message] = field(default_factory=list)
    # Per message, what makes two conversations the same (role, text, image hash): requests
    # without a cache key are deduplicated on it.
    signature: list[tuple[str, str, str | None]] = field(default_factory=list)
    pos: int = 0  # index into dialogue.turns of the next turn to consume
    user_turn: int = 0
    # Per live reply, before judging: (user turn, text, from cache, latency share).
    raw: list[tuple[int, str, bool, float]] = field(default_factory=list)
    replies: list[ReplyResult] = field(default_factory=list)  # judged, after the last round
    contexts: list[tuple[Message, ...]] = field(default_factory=list)  # history per reply
    error: str | None = None
    cache_hits: int = 0
    latency_s: float = 0.0

    def advance_to_live_turn(self) -> bool:
        """Consumes scripted turns; stops after the next live user turn. False when done."""
        turns = self.dialogue.turns
        n = len(turns)
        while self.pos < n:
            turn = turns[self.pos]
            self.pos += 1
            if turn.role == "assistant":
                self.messages.append(Message("assistant", turn.text))
                self.signature.append(("assistant", turn.text, None))
                continue
            self.user_turn += 1
            image = self.dialogue.image if self.user_turn in self.with_image else None
            self.messages.append(Message("user", turn.text, image))
            self.signature.append(("user", turn.text, image.sha256 if image else None))
            if self.pos >= n or turns[self.pos].role != "assistant":
                return True
        return False


def _signature(request: ChatRequest) -> tuple[Any, ...]:
    """What makes two requests the same conversation, when there is no cache key."""
    return tuple((m.role, m.text, m.image.sha256 if m.image else None) for m in request.messages)


def _token(j: Judgment) -> str:
    """A judgment in one word (`ReplyResult.token`)."""
    return ReplyResult(0, "", j.label, harm=j.harm, off_target=j.off_target).token


def _cache_key_fn() -> Callable[..., str]:
    from pytest_mtmcs.backends.cache import cache_key

    return cache_key


class Engine:
    """Generates, caches and judges; returns plain `DialogueResult`s."""

    def __init__(
        self,
        backend: Backend,
        judge: Judge,
        settings: GenerationSettings,
        cache: Cache | None = None,
        progress: ProgressSink | None = None,
        *,
        adjudications: Mapping[str, HumanLabel] | None = None,
        escalation: FlipEscalation | None = None,
        flip: Callable[[DialogueResult], str] | None = None,
        keys: bool = True,
    ) -> None:
        """`adjudications`: people's labels by exchange key (`engine.adjudicated`), applied
        instead of judging those replies; `escalation` with `flip` (the flip rule against the
        baseline, from the process that holds it): the replies deciding a regressed or fixed
        dialogue go to the escalation's model judge and the dialogue is graded again before it
        is returned (`engine.escalation`); `keys`: give each
        reply its exchange key even without adjudications (a report's transcripts carry them for
        `pytest-mtmcs review`; about 1.5 us a reply otherwise saved)."""
        self.backend = backend
        self.judge = judge
        self.settings = settings
        self.cache = cache
        self.progress = progress
        self.adjudications = adjudications or {}
        self.escalation = escalation if flip is not None else None
        self.flip = flip
        self.keys = keys or bool(self.adjudications)
        # Replies labelled by an adjudication, and the keys of the adjudications that matched.
        self.adjudications_applied = 0
        self.adjudications_matched: set[str] = set()
        self._fingerprint: Mapping[str, Any] | None = None
        self.model_calls = 0  # requests actually sent to the backend
        self.generated_turns = 0
        # Parsed intent answers by (kind, options, answer text): answers repeat on fast backends.
        self._parsed: dict[tuple[str, tuple[str, ...], str], str | None] = {}

    @property
    def fingerprint(self) -> Mapping[str, Any]:
        if self._fingerprint is None:
            self._fingerprint = dict(self.backend.fingerprint())
        return self._fingerprint

    # -- generation with the cache in front --------------------------------------------------

    def cache_keys(self, requests: Sequence[ChatRequest]) -> list[str]:
        """The response cache's key of each request (needs a cache)."""
        key_fn = _cache_key_fn()
        settings = self.settings.as_dict()
        return [
            key_fn(
                namespace="response",
                fingerprint=self.fingerprint,
                settings=settings,
                messages=r.messages,
            )
            for r in requests
        ]

    def _generate(
        self,
        requests: Sequence[ChatRequest],
        signatures: Sequence[tuple[Any, ...]] | None = None,
    ) -> list[tuple[str | BackendError, bool]]:
        """Results per request, with whether each came from the cache.

        `signatures` (one per request, as `_signature` would compute it) saves recomputing them.
        """
        keys: list[str] = []
        cached: dict[str, str] = {}
        if self.cache is not None:
            keys = self.cache_keys(requests)
            cached = self.cache.get_many(keys)
        out: list[tuple[str | BackendError, bool]] = [("", True)] * len(requests)
        # Identical conversations (the shared turns of twins) are sent once per batch.
        first: dict[Any, int] = {}
        copies: dict[int, list[int]] = {}
        todo: list[int] = []
        for i, request in enumerate(requests):
            if keys and keys[i] in cached:
                out[i] = (cached[keys[i]], True)
                continue
            if keys:
                same: Any = keys[i]
            elif signatures is not None:
                same = signatures[i]
            else:
                same = _signature(request)
            if same in first:
                copies[first[same]].append(i)
                continue
            first[same] = i
            copies[i] = []
            todo.append(i)
        if todo:
            self.model_calls += len(todo)
            try:
                fresh = self.backend.generate([requests[i] for i in todo])
            except BackendError as exc:
                fresh = [exc] * len(todo)
            except Exception as exc:
                err = BackendError(f"{type(exc).__name__}: {exc}")
                fresh = [err] * len(todo)
            if len(fresh) != len(todo):
                err = BackendError(
                    f"backend {self.backend.spec} returned {len(fresh)} results for "
                    f"{len(todo)} requests"
                )
                fresh = [err] * len(todo)
            to_store: dict[str, str] = {}
            for i, res in zip(todo, fresh, strict=True):
                for j in (i, *copies[i]):
                    out[j] = (res, False)
                if keys and isinstance(res, str):
                    to_store[keys[i]] = res
            if to_store and self.cache is not None:
                self.cache.put_many(to_store)
        return out

    # -- the dialogue loop -------------------------------------------------------------------

    def run(self, dialogues: Iterable[Dialogue]) -> dict[str, DialogueResult]:
        """The lock-step schedule: every unfinished dialogue's next live turn in one batch per
        round, then all intent questions in one batch, then judging."""
        states = [self.start(d) for d in dialogues]
        active = [s for s in states if s.advance_to_live_turn()]
        while active:
            histories = [tuple(s.messages) for s in active]
            requests = [self.turn_request(s, h) for s, h in zip(active, histories, strict=True)]
            signatures = None if self.cache is not None else [tuple(s.signature) for s in active]
            started = time.perf_counter()
            results = self._generate(requests, signatures)
            elapsed = time.perf_counter() - started
            share = elapsed / max(1, len(results))
            still: list[_State] = []
            for s, history, (res, from_cache) in zip(active, histories, results, strict=True):
                if self.record_turn(s, history, res, from_cache, share):
                    still.append(s)
            if self.progress is not None:
                self.progress.advance(turns=len(active))
            active = still
        questions = self._ask_questions(states)
        return self.finish(states, [questions.get(id(s), ()) for s in states])

    # -- the steps of one dialogue, shared by both schedules ---------------------------------

    def start(self, dialogue: Dialogue) -> _State:
        """A dialogue about to run; `advance_to_live_turn` moves it to its first live turn."""
        return _State(dialogue, dialogue.image_turns(self.settings.image_placement))

    def turn_request(self, s: _State, history: tuple[Message, ...]) -> ChatRequest:
        return ChatRequest(history, self.settings, RequestMeta(s.dialogue.id, s.user_turn, "turn"))

    def record_turn(
        self,
        s: _State,
        history: tuple[Message, ...],
        res: str | BackendError,
        from_cache: bool,
        latency: float,
    ) -> bool:
        """Takes the reply to the live turn asked with `history`; True when another live turn
        follows (the state is then at it). A failed turn ends the dialogue as an error."""
        if isinstance(res, BackendError):
            s.error = f"user turn {s.user_turn}: {res}"
            return False
        s.contexts.append(history)
        if from_cache:
            s.raw.append((s.user_turn, res, True, 0.0))
            s.cache_hits += 1
        else:
            s.raw.append((s.user_turn, res, False, round(latency, 4)))
            s.latency_s += latency
            self.generated_turns += 1
        s.messages.append(Message("assistant", res))
        s.signature.append(("assistant", res, None))
        return s.advance_to_live_turn()

    def question_requests(self, s: _State) -> list[ChatRequest]:
        """The dialogue's intent questions (none after a failed turn), one request each."""
        d = s.dialogue
        if s.error is not None or not d.questions:
            return []
        transcript = transcript_text(s.messages)
        return [
            ChatRequest(
                (Message("user", question_prompt(transcript, q), d.image),),
                self.settings,
                RequestMeta(d.id, s.user_turn, "question", q.answer, q.kind),
            )
            for q in d.questions
        ]

    def record_answers(
        self, s: _State, results: Sequence[tuple[str | BackendError, bool]]
    ) -> tuple[QuestionResult, ...]:
        """The parsed answers, one per question in order; the first failed question (in
        question order, whatever order the answers came in) makes the dialogue an error."""
        answers: list[QuestionResult] = []
        for qi, (res, from_cache) in enumerate(results):
            q = s.dialogue.questions[qi]
            if isinstance(res, BackendError):
                s.error = s.error or f"intent question {qi + 1}: {res}"
                continue
            s.cache_hits += int(from_cache)
            answers.append(QuestionResult(q.kind, q.answer, self._parse_answer(q, res), res, q.tag))
        return tuple(answers)

    def finish(
        self, states: Sequence[_State], questions: Sequence[tuple[QuestionResult, ...]]
    ) -> dict[str, DialogueResult]:
        """Judges the dialogues' replies (one judge batch) and returns their results by id."""
        self._judge(states)
        results_by_id: dict[str, DialogueResult] = {}
        for s, answered in zip(states, questions, strict=True):
            results_by_id[s.dialogue.id] = self._result(s, answered)
        if self.escalation is not None and self.flip is not None:
            results_by_id = self.escalation.review(
                results_by_id,
                {
                    s.dialogue.id: (
                        s.dialogue,
                        {raw[0]: ctx for raw, ctx in zip(s.raw, s.contexts, strict=True)},
                    )
                    for s in states
                    if s.error is None
                },
                self.flip,
            )
        if self.progress is not None:
            self.progress.advance(dialogues=len(states), turns=0)
        return results_by_id

    def _ask_questions(self, states: Sequence[_State]) -> dict[int, tuple[QuestionResult, ...]]:
        """Every dialogue's intent questions in one batch; answers by `id(state)`."""
        owners: list[tuple[_State, int, int]] = []  # (state, first request, question count)
        requests: list[ChatRequest] = []
        for s in states:
            mine = self.question_requests(s)
            if mine:
                owners.append((s, len(requests), len(mine)))
                requests.extend(mine)
        if not requests:
            return {}
        results = self._generate(requests)
        return {id(s): self.record_answers(s, results[first : first + n]) for s, first, n in owners}

    def _parse_answer(self, question: Question, text: str) -> str | None:
        """`parse_answer`, remembered: it reads only the kind, the options and the text."""
        key = (question.kind, question.options, text)
        parsed = self._parsed.get(key, _UNSEEN)
        if parsed is _UNSEEN:
            parsed = parse_answer(question, text)
            if len(self._parsed) < _PARSED_MAX:
                self._parsed[key] = parsed
        return parsed  # type: ignore[return-value]

    def _judge(self, states: Sequence[_State]) -> None:
        """Judges every reply of the dialogues that did not fail; fills `replies`."""
        inputs: list[JudgeInput] = []
        where: list[tuple[_State, tuple[int, str, bool, float], str | None]] = []
        # Our own guard's refusals (`--mtmcs-guard`) are refusals by construction: not judged.
        guard_action = getattr(self.backend, "guard_action", None)
        for s in states:
            if s.error is not None:
                # Not judged: the replies it got, unlabelled.
                s.replies = [ReplyResult(t, text, None, c, lat) for t, text, c, lat in s.raw]
                continue
            d = s.dialogue
            keys: list[str | None] = (
                list(exchange_keys([(c, raw[1]) for raw, c in zip(s.raw, s.contexts, strict=True)]))
                if self.keys
                else [None] * len(s.raw)
            )
            for raw, ctx, key in zip(s.raw, s.contexts, keys, strict=True):
                stage = guard_action(raw[1]) if guard_action is not None else None
                if stage is not None:
                    withheld = self.backend.withheld_reply(d.id, raw[0])
                    user_turn, text, cached, latency = raw
                    s.replies.append(
                        ReplyResult(
                            user_turn,
                            text,
                            "refusal",
                            cached,
                            latency,
                            harm=False,
                            off_target=False,
                            guard=stage,
                            withheld=withheld,
                        )
                    )
                    continue
                item = JudgeInput(d, ctx, raw[1], raw[0])
                human = self.adjudications.get(key) if key and self.adjudications else None
                if key is not None and human is not None:
                    # A person's label outranks every judge: this reply is not judged.
                    self.adjudications_applied += 1
                    self.adjudications_matched.add(key)
                    user_turn, text, cached, latency = raw
                    s.replies.append(
                        human.reply(
                            user_turn,
                            text,
                            cached=cached,
                            latency_s=latency,
                            key=key,
                            harm_axis=in_scope(item),
                        )
                    )
                    continue
                inputs.append(item)
                where.append((s, raw, key))
        if not inputs:
            for s in states:
                s.replies.sort(key=lambda r: r.user_turn)
            return
        try:
            judgments = self.judge.judge(inputs)
        except Exception as exc:
            judgments = [Judgment(None, f"{type(exc).__name__}: {exc}")] * len(inputs)
        for (owner, (user_turn, text, cached, latency), key), j in zip(
            where, judgments, strict=True
        ):
            owner.replies.append(
                ReplyResult(
                    user_turn,
                    text,
                    j.label,
                    cached,
                    latency,
                    j.error,
                    j.score,
                    harm=j.harm,
                    off_target=j.off_target,
                    exchange_sha256=key,
                    escalation=None if j.local is None else ("unsure" if j.label else "failed"),
                    local=None if j.local is None else _token(j.local),
                    rationale=j.rationale,
                )
            )
        for s in states:
            s.replies.sort(key=lambda r: r.user_turn)

    def _result(self, s: _State, questions: tuple[QuestionResult, ...]) -> DialogueResult:
        d = s.dialogue
        if s.error is not None:
            verdict, score = "error", 0.0
        else:
            verdict, score = grade(d.label, d.risk_turn, s.replies)
        return DialogueResult(
            suite=d.suite,
            id=d.id,
            pair=d.pair,
            label=d.label,
            setting=d.setting,
            modality=d.modality,
            category=d.category,
            user_turns=d.user_turns,
            risk_turn=d.risk_turn,
            verdict=verdict,
            score=score,
            replies=tuple(s.replies),
            # A failed dialogue's questions count as unanswered, never vanish from the denominator.
            questions=questions
            if s.error is None
            else tuple(QuestionResult(q.kind, q.answer, None, "", q.tag) for q in d.questions),
            error=s.error,
            trajectory=d.trajectory,
            cache_hits=s.cache_hits,
            latency_s=round(s.latency_s, 4),
        )
