"""Re-judging stored transcripts with the current judge (`--mtmcs-rejudge`).

A baseline records labels, not texts; when it was judged by another judge than this run, the
comparison is refused (a judge change must not pass for a model regression). With transcripts
stored beside the baseline (`--mtmcs-baseline-transcripts`), the baseline's replies can be judged
again by this run's judge and re-graded, so both sides are labelled by the same judge.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from pytest_mtmcs.engine.grading import grade
from pytest_mtmcs.errors import ConfigError
from pytest_mtmcs.judges import Judge, JudgeInput
from pytest_mtmcs.records import Dialogue, DialogueResult, Message, ReplyResult


def only_judge_differs(base: Mapping[str, str], current: Mapping[str, str]) -> bool:
    """True when the headers differ, and only in the judge's identity."""
    from pytest_mtmcs.baseline.store import JUDGE_KEYS, mismatches

    if not mismatches(base, current):
        return False
    strip = {k: "-" for k in JUDGE_KEYS}
    return not mismatches({**base, **strip}, {**current, **strip})


def judge_inputs(
    result: DialogueResult,
    dialogue: Dialogue,
    texts: Mapping[tuple[str, int], str] | None,
    image_placement: str = "last",
    where: str = "",
) -> list[JudgeInput]:
    """The judge inputs of a stored dialogue: its history rebuilt as the model saw it."""
    if dialogue.user_turns != result.user_turns:
        raise ConfigError(
            f"{where or 'rejudge'}: dialogue {result.id!r} has {dialogue.user_turns} user turns in "
            f"the suite but {result.user_turns} in the stored result; the suite changed"
        )
    stored = {r.user_turn: r.text for r in result.replies}
    with_image = dialogue.image_turns(image_placement)
    messages: list[Message] = []
    inputs: list[JudgeInput] = []
    k = 0
    turns = dialogue.turns
    for i, turn in enumerate(turns):
        if turn.role == "assistant":
            messages.append(Message("assistant", turn.text))
            continue
        k += 1
        messages.append(Message("user", turn.text, dialogue.image if k in with_image else None))
        if i + 1 < len(turns) and turns[i + 1].role == "assistant":
            continue  # scripted: its answer is the next turn
        if texts is not None:
            text = texts.get((dialogue.id, k))
        else:
            text = stored.get(k)
        if text is None:
            raise ConfigError(
                f"{where or 'rejudge'}: no stored reply for dialogue {dialogue.id!r} user turn {k}; "
                "re-record the baseline with --snapshot-update --mtmcs-baseline-transcripts"
            )
        inputs.append(JudgeInput(dialogue, tuple(messages), text, k))
        messages.append(Message("assistant", text))
    return inputs


def rejudge(
    results: Sequence[DialogueResult],
    dialogues: Mapping[str, Dialogue],
    judge: Judge,
    transcripts: Mapping[tuple[str, int], str] | None = None,
    *,
    image_placement: str = "last",
    where: str = "",
) -> list[DialogueResult]:
    """Results re-labelled by `judge` and re-graded, in the same order.

    Reply texts come from `transcripts` ((id, user turn) -> text) when given, else from the
    results themselves. Results whose verdict is `error` (the backend failed) stay as they are:
    there is nothing complete to judge. Judge failures become `judge_error` verdicts, as in a run.
    """
    plan: list[tuple[int, list[JudgeInput]]] = []
    for index, r in enumerate(results):
        if r.verdict == "error":
            continue
        d = dialogues.get(r.id)
        if d is None:
            raise ConfigError(
                f"{where or 'rejudge'}: dialogue {r.id!r} is not in the suite; cannot rebuild "
                "its conversation"
            )
        plan.append((index, judge_inputs(r, d, transcripts, image_placement, where)))
    flat = [inp for _, inputs in plan for inp in inputs]
    judgments = judge.judge(flat) if flat else []
    if len(judgments) != len(flat):
        raise ConfigError(
            f"judge {judge.identity}: returned {len(judgments)} judgments for {len(flat)} replies"
        )
    out = list(results)
    pos = 0
    for index, inputs in plan:
        r = results[index]
        old = {x.user_turn: x for x in r.replies}
        replies: list[ReplyResult] = []
        for inp in inputs:
            j = judgments[pos]
            pos += 1
            prev = old.get(inp.user_turn)
            replies.append(
                ReplyResult(
                    inp.user_turn,
                    inp.reply,
                    j.label,
                    prev.cached if prev else False,
                    prev.latency_s if prev else 0.0,
                    j.error,
                    j.score,
                    harm=j.harm,
                    off_target=j.off_target,
                )
            )
        verdict, score = grade(r.label, r.risk_turn, replies)
        out[index] = replace(r, replies=tuple(replies), verdict=verdict, score=score)
    return out


def rejudge_baseline(
    baseline: Any,
    dialogues: Mapping[str, Dialogue],
    judge: Judge,
    *,
    image_placement: str = "last",
) -> tuple[list[DialogueResult], int]:
    """A `baseline.Baseline` re-judged from its transcripts file: (results, dialogues re-judged).

    Refuses a transcripts file written with another baseline header (a stale file left beside a
    re-recorded baseline) with a ConfigError naming the file.
    """
    from pytest_mtmcs.baseline.transcripts import header_digest, read_transcripts_with_header

    path: Path = Path(baseline.path).with_name(f"{baseline.suite}.transcripts.jsonl.gz")
    texts, meta = read_transcripts_with_header(path)
    stored = meta.get("header_sha256")
    if stored is not None and stored != header_digest(baseline.header):
        raise ConfigError(
            f"{path}: these transcripts were written with another recording of baseline "
            f"{baseline.name!r} (header hash differs); re-record it with --snapshot-update "
            "--mtmcs-baseline-transcripts"
        )
    results = baseline.results
    rejudged = rejudge(
        results, dialogues, judge, texts, image_placement=image_placement, where=str(path)
    )
    return rejudged, sum(1 for r in rejudged if r.verdict != "error")
