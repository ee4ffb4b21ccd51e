"""The data model: suites, dialogues, requests to models, and results.

Everything here is plain, frozen data. Results convert to and from JSON-ready dicts because they
cross process boundaries (xdist workers -> controller) and land in baselines and reports.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pytest_mtmcs import defaults

Label = Literal["safe", "unsafe"]
Setting = Literal["escalation", "context_switch", "scripted"]
Modality = Literal["multimodal", "text"]
Role = Literal["user", "assistant"]
QuestionKind = Literal["mcq", "tf"]
ImagePlacement = Literal["first", "last", "every"]
# What a judge says of one assistant reply.
ReplyLabel = Literal["refusal", "safe_redirect", "compliance"]

LABELS: tuple[str, ...] = ("safe", "unsafe")
SETTINGS: tuple[str, ...] = ("escalation", "context_switch", "scripted")
MODALITIES: tuple[str, ...] = ("multimodal", "text")
REPLY_LABELS: tuple[str, ...] = ("refusal", "safe_redirect", "compliance")
IMAGE_PLACEMENTS: tuple[str, ...] = ("first", "last", "every")
OK_VERDICTS: frozenset[str] = frozenset({"safe", "helpful"})
# Verdicts of a dialogue whose run failed (the backend, or the judge): nothing was measured.
ERROR_VERDICTS: frozenset[str] = frozenset({"error", "judge_error"})


@dataclass(frozen=True)
class ImageRef:
    """An image by content hash, with a way to fetch its bytes (lazily, from the suite)."""

    sha256: str
    fetch: Callable[[], bytes] = field(compare=False, hash=False, repr=False)
    # Where it came from, for messages: `images/kitchen.png` or `type_a.parquet row 3 column image`.
    where: str = field(default="", compare=False)
    # A text description of the image (MTMCS-Bench's official judge reads one per image), or
    # None. Text judges are shown it where the image was (`judges/prompts.py`); models under
    # test never see it. It belongs to the image, not to the dialogue: twins share their image
    # and its caption. Part of equality and of the suite hash, as it changes what a judge sees.
    caption: str | None = None

    def data(self) -> bytes:
        return self.fetch()

    @staticmethod
    def from_bytes(data: bytes, where: str = "", caption: str | None = None) -> ImageRef:
        return ImageRef(hashlib.sha256(data).hexdigest(), lambda: data, where, caption)


@dataclass(frozen=True)
class Turn:
    role: Role
    text: str


@dataclass(frozen=True)
class Question:
    """An intent-recognition item asked after the dialogue, with its gold answer.

    `answer` is an upper-case letter for `mcq` and `"true"` / `"false"` for `tf`.
    `tag` keeps the benchmark's own type (`safe_intent`, `unsafe_intent`, `tf`) for its metrics.
    """

    kind: QuestionKind
    text: str
    answer: str
    options: tuple[str, ...] = ()
    tag: str | None = None


@dataclass(frozen=True)
class Dialogue:
    """One test case: a scripted or live multi-turn conversation and what it is about.

    `turns` holds user turns and optional scripted assistant turns. A user turn not followed by a
    scripted assistant turn is answered live by the model under test.
    """

    suite: str
    id: str
    label: Label
    setting: Setting
    modality: Modality
    category: str
    turns: tuple[Turn, ...]
    pair: str | None = None
    intent: str | None = None
    image: ImageRef | None = None
    risk_turn: int | None = None
    questions: tuple[Question, ...] = ()
    source: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)
    # Same id across lengths (SafeMT): the dialogues of one trajectory.
    trajectory: str | None = None

    @property
    def user_turns(self) -> int:
        return sum(1 for t in self.turns if t.role == "user")

    def image_turns(self, placement: str) -> frozenset[int]:
        """The 1-based user turns that carry the dialogue's image under a placement policy:
        `first` (SafeMT), `last` (MTMCS-Bench) or `every`."""
        if self.image is None:
            return frozenset()
        n = self.user_turns
        if placement == "first":
            return frozenset({1})
        if placement == "last":
            return frozenset({n})
        return frozenset(range(1, n + 1))

    def live_user_turns(self) -> tuple[int, ...]:
        """1-based indices of user turns the model answers live."""
        live: list[int] = []
        k = 0
        for i, turn in enumerate(self.turns):
            if turn.role != "user":
                continue
            k += 1
            nxt = self.turns[i + 1] if i + 1 < len(self.turns) else None
            if nxt is None or nxt.role != "assistant":
                live.append(k)
        return tuple(live)


@dataclass(frozen=True)
class Suite:
    name: str
    version: str
    root: str
    dialogues: tuple[Dialogue, ...]
    content_hash: str
    source: str = ""
    license: str = ""
    # `[defaults]` of suite.toml: buckets, thresholds, image_placement, max_new_tokens.
    defaults: Mapping[str, Any] = field(default_factory=dict)


# --- what goes to a model -------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    role: Literal["system", "user", "assistant"]
    text: str
    image: ImageRef | None = None


@dataclass(frozen=True)
class GenerationSettings:
    """Everything about decoding that changes results; recorded in cache keys and baselines."""

    max_new_tokens: int = defaults.MAX_NEW_TOKENS
    temperature: float = defaults.TEMPERATURE
    image_placement: ImagePlacement = defaults.IMAGE_PLACEMENT  # type: ignore[assignment]
    max_pixels: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "image_placement": self.image_placement,
            "max_pixels": self.max_pixels,
        }


@dataclass(frozen=True)
class RequestMeta:
    """Where a request comes from. Real backends ignore it.

    `expected` is the gold answer of an intent question: only test oracles (the `scripted:`
    backend) may read it.
    """

    dialogue_id: str
    user_turn: int
    purpose: Literal["turn", "question"] = "turn"
    expected: str | None = None
    question_kind: QuestionKind | None = None


@dataclass(frozen=True)
class ChatRequest:
    messages: tuple[Message, ...]
    settings: GenerationSettings
    meta: RequestMeta


# --- results ---------------------------------------------------------------------------------


# The reviewer's-loop fields of `ReplyResult`, written to JSON only when set.
_REVIEW_FIELDS = ("exchange_sha256", "escalation", "local", "adjudicated", "rationale")


@dataclass(frozen=True)
class ReplyResult:
    """One live reply to a user turn and its judged label."""

    user_turn: int
    text: str
    label: str | None  # a ReplyLabel, or None when the judge failed
    cached: bool = False
    latency_s: float = 0.0
    judge_error: str | None = None
    score: float | None = None  # a judge's own [0, 1] score when it gives one
    # The harm axis: the reply carries out the harmful part of the request (None: not decided,
    # e.g. before the risk turn, or a judge of the refusal axis only).
    harm: bool | None = None
    # Neither declines nor does what was asked (describes the image, repeats the request, a
    # fragment): not an attack success, and not helpful either.
    off_target: bool | None = None
    # "input" / "output": our own guard withheld this reply (`--mtmcs-guard`); it is a refusal
    # by construction, never a question for the judge.
    guard: str | None = None
    # The model's own reply that the output guard withheld, when this run saw it (not when the
    # refusal came from the response cache).
    withheld: str | None = None
    # The reviewer's loop (engine/escalation.py, engine/adjudicated.py). `exchange_sha256`: the
    # hash of the exact request (the conversation up to the user turn) and this reply, the key an
    # adjudication is matched on. `escalation`: why a model judge decided the label: `unsure` (a
    # cascade's local judge was not sure), `confirmed` / `overturned` (the reply decides a
    # regressed or fixed dialogue and the model judge agreed / disagreed with the local label),
    # `failed` (the model judge failed on it); None when the judge alone decided. `local`: the
    # local judge's token before the model judge's replaced it. `adjudicated`: a person's label
    # (an adjudication), which outranks every judge. `rationale`: the judge's reason.
    exchange_sha256: str | None = None
    escalation: str | None = None
    local: str | None = None
    adjudicated: bool | None = None
    rationale: str | None = None

    @property
    def harmful(self) -> bool:
        """Whether the reply is an attack success: the judge's harm axis where it decided it,
        else (a judge of the refusal axis only) a compliance that is not off target."""
        if self.harm is not None:
            return self.harm
        return self.label == "compliance" and not self.off_target

    @property
    def token(self) -> str:
        """The reply in one word, for baselines, tables and flip lists: its refusal-axis label,
        `harmful` when it carries out harm, `off_target` when it neither declines nor does what
        was asked, `-` when the judge failed."""
        if self.label is None:
            return "-"
        if self.harm:
            return "harmful"
        if self.off_target:
            return "off_target"
        return self.label

    def review_fields(self) -> dict[str, Any]:
        """The reviewer's-loop fields that are set, for JSON (results and transcripts)."""
        out: dict[str, Any] = {}
        for key in _REVIEW_FIELDS:
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain data (`ReplyResult(**d)` reads it back): the optional fields only when set."""
        out: dict[str, Any] = {
            "user_turn": self.user_turn,
            "text": self.text,
            "label": self.label,
            "cached": self.cached,
            "latency_s": self.latency_s,
            "judge_error": self.judge_error,
            "score": self.score,
        }
        if self.harm is not None:
            out["harm"] = self.harm
        if self.off_target is not None:
            out["off_target"] = self.off_target
        if self.guard:
            out["guard"] = self.guard
            out["withheld"] = self.withheld
        for key in _REVIEW_FIELDS:
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out

    @staticmethod
    def from_token(user_turn: int, token: str) -> ReplyResult:
        """The reply a `token` stands for (text not kept)."""
        if token == "-":
            return ReplyResult(user_turn, "", None)
        if token == "harmful":
            return ReplyResult(user_turn, "", "compliance", harm=True)
        if token == "off_target":
            return ReplyResult(user_turn, "", "compliance", harm=False, off_target=True)
        return ReplyResult(user_turn, "", token)


@dataclass(frozen=True)
class QuestionResult:
    kind: QuestionKind
    expected: str
    answer: str | None  # parsed answer; None when unparsed
    raw: str
    tag: str | None = None

    @property
    def correct(self) -> bool:
        return self.answer is not None and self.answer == self.expected


@dataclass(frozen=True)
class DialogueResult:
    """Everything a run learned about one dialogue: plain data, JSON round-trippable."""

    suite: str
    id: str
    pair: str | None
    label: str
    setting: str
    modality: str
    category: str
    user_turns: int
    risk_turn: int | None
    verdict: str
    score: float
    replies: tuple[ReplyResult, ...] = ()
    questions: tuple[QuestionResult, ...] = ()
    error: str | None = None
    trajectory: str | None = None
    cache_hits: int = 0
    latency_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.verdict in OK_VERDICTS

    @property
    def turn_labels(self) -> tuple[str, ...]:
        """Per user turn: the reply's token (`ReplyResult.token`), `scripted` for scripted
        turns."""
        by_turn = {r.user_turn: r.token for r in self.replies}
        return tuple(by_turn.get(k, "scripted") for k in range(1, self.user_turns + 1))

    @property
    def intent_correct(self) -> int:
        return sum(1 for q in self.questions if q.correct)

    @property
    def intent_total(self) -> int:
        return len(self.questions)

    @property
    def unparsed(self) -> int:
        return sum(1 for q in self.questions if q.answer is None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "id": self.id,
            "pair": self.pair,
            "label": self.label,
            "setting": self.setting,
            "modality": self.modality,
            "category": self.category,
            "user_turns": self.user_turns,
            "risk_turn": self.risk_turn,
            "verdict": self.verdict,
            "score": self.score,
            "replies": [r.to_dict() for r in self.replies],
            "questions": [
                {
                    "kind": q.kind,
                    "expected": q.expected,
                    "answer": q.answer,
                    "raw": q.raw,
                    "tag": q.tag,
                }
                for q in self.questions
            ],
            "error": self.error,
            "trajectory": self.trajectory,
            "cache_hits": self.cache_hits,
            "latency_s": self.latency_s,
        }

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> DialogueResult:
        return DialogueResult(
            suite=d["suite"],
            id=d["id"],
            pair=d.get("pair"),
            label=d["label"],
            setting=d["setting"],
            modality=d["modality"],
            category=d["category"],
            user_turns=int(d["user_turns"]),
            risk_turn=d.get("risk_turn"),
            verdict=d["verdict"],
            score=float(d["score"]),
            replies=tuple(ReplyResult(**r) for r in d.get("replies", ())),
            questions=tuple(QuestionResult(**q) for q in d.get("questions", ())),
            error=d.get("error"),
            trajectory=d.get("trajectory"),
            cache_hits=int(d.get("cache_hits", 0)),
            latency_s=float(d.get("latency_s", 0.0)),
        )
