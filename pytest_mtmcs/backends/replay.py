"""`replay:PATH/transcripts.jsonl`: answers from a recorded run instead of a model.

A team re-grades, re-buckets or re-compares an old run (another judge, other thresholds) without
the model. A live turn is looked up by dialogue id and user turn; an intent question by dialogue
id and the question itself: the part of the prompt after the transcript (question text and
options) must equal what the recording's question would produce, so a question is never answered
with another question's recorded answer. A request the recording cannot answer is an error naming
the dialogue and turn (or question); it is never answered with something else.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_mtmcs.backends import BackendOptions, Generation
from pytest_mtmcs.errors import BackendError, ConfigError
from pytest_mtmcs.jsonl import objects
from pytest_mtmcs.records import ChatRequest, Question

_CONVERSATION_END = "</conversation>"


def _question_tail(prompt: str) -> str:
    """What a question prompt says after the transcript: the question, options, instruction."""
    i = prompt.rfind(_CONVERSATION_END)
    return prompt[i + len(_CONVERSATION_END) :] if i >= 0 else prompt


class ReplayBackend:
    """Serves the replies and intent answers stored in a `transcripts.jsonl`."""

    def __init__(self, rest: str, path: Path) -> None:
        self.spec = f"replay:{rest}"
        self.path = path
        raw = path.read_bytes()
        self.recording_sha256 = hashlib.sha256(raw).hexdigest()
        # (dialogue id, user turn) -> {suite: text}
        self.turns: dict[tuple[str, int], dict[str, str]] = {}
        # dialogue id -> question rows in recorded order
        self.questions: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._load(raw.decode("utf-8", errors="replace"))

    def _load(self, text: str) -> None:
        where = f"--mtmcs-model={self.spec}: {self.path}"
        for n, row in objects(text.splitlines(), lambda n, why: ConfigError(f"{where}:{n}: {why}")):
            kind = row.get("kind")
            try:
                if kind == "turn":
                    key = (str(row["dialogue_id"]), int(row["user_turn"]))
                    if not isinstance(row["text"], str):
                        raise TypeError("field 'text' must be a string")
                    self.turns.setdefault(key, {})[str(row.get("suite"))] = row["text"]
                elif kind == "question":
                    if not isinstance(row["raw"], str):
                        raise TypeError("field 'raw' must be a string")
                    row["index"] = int(row["index"])
                    self.questions[str(row["dialogue_id"])].append(row)
                # other kinds: written by a newer version; not needed to answer
            except KeyError as exc:
                raise ConfigError(f"{where}:{n}: field {exc.args[0]!r} is missing") from None
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{where}:{n}: {exc}") from None
        if not self.turns and not self.questions:
            raise ConfigError(f"{where}: holds no recorded replies")

    def fingerprint(self) -> Mapping[str, Any]:
        return {"spec": self.spec, "recording_sha256": self.recording_sha256}

    def generate(self, requests: Sequence[ChatRequest]) -> list[Generation]:
        used: dict[str, set[int]] = defaultdict(set)
        return [self._one(r, used) for r in requests]

    def close(self) -> None:
        pass

    def _one(self, request: ChatRequest, used: dict[str, set[int]]) -> Generation:
        meta = request.meta
        if meta.purpose == "question":
            return self._question(request, used)
        found = self.turns.get((meta.dialogue_id, meta.user_turn))
        if not found:
            return BackendError(
                f"replay: no recorded reply for dialogue {meta.dialogue_id!r} user turn "
                f"{meta.user_turn} in {self.path}"
            )
        texts = set(found.values())
        if len(texts) > 1:
            return BackendError(
                f"replay: dialogue {meta.dialogue_id!r} user turn {meta.user_turn} is recorded "
                f"in several suites with different replies ({', '.join(sorted(found))}) in "
                f"{self.path}: replay a recording of one suite"
            )
        return texts.pop()

    def _question(self, request: ChatRequest, used: dict[str, set[int]]) -> Generation:
        from pytest_mtmcs.suite.questions import question_prompt

        meta = request.meta
        rows = self.questions.get(meta.dialogue_id, [])
        prompt = request.messages[-1].text if request.messages else ""
        tail = _question_tail(prompt)
        candidates = [
            q
            for q in rows
            if (meta.question_kind is None or q.get("question_kind") == meta.question_kind)
            and (meta.expected is None or q.get("expected") == meta.expected)
        ]
        exact = []
        for q in candidates:
            if q.get("question") is None:
                continue
            asked = Question(
                kind=q.get("question_kind") or "mcq",
                text=str(q["question"]),
                answer=str(q.get("expected") or ""),
                options=tuple(q.get("options") or ()),
            )
            try:
                if _question_tail(question_prompt("", asked)) == tail:
                    exact.append(q)
            except ValueError:
                continue
        if exact:
            candidates = exact
        elif any(q.get("question") is not None for q in candidates):
            candidates = []  # the recording knows its questions, and this one is not among them
        # Identical questions asked twice, or a recording without question text: the recorded
        # order decides, each recorded answer used once per batch.
        taken = used[meta.dialogue_id]
        for q in sorted(candidates, key=lambda q: q["index"]):
            if q["index"] not in taken:
                taken.add(q["index"])
                return str(q["raw"])
        if candidates:
            return str(candidates[0]["raw"])
        return BackendError(
            f"replay: no recorded answer for an intent question of dialogue "
            f"{meta.dialogue_id!r} (after user turn {meta.user_turn}; "
            f"{(prompt[-120:]).strip()!r}) in {self.path}"
        )


def create(rest: str, options: BackendOptions) -> ReplayBackend:
    if not rest:
        raise ConfigError(
            "--mtmcs-model=replay: needs the path of a transcripts.jsonl written by "
            "--mtmcs-report (e.g. replay:out/transcripts.jsonl)"
        )
    path = Path(rest)
    if path.is_dir():
        path = path / "transcripts.jsonl"
    if not path.is_file():
        raise ConfigError(
            f"--mtmcs-model=replay:{rest}: no such file {path} (expected the transcripts.jsonl "
            "of a run made with --mtmcs-report)"
        )
    return ReplayBackend(rest, path)
