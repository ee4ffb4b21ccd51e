"""The results table (`results.parquet` / `results.csv`: one row per dialogue) and the transcripts
rows (`transcripts.jsonl`), and reading a results table back (for `pytest-mtmcs compare`).

pandas is imported inside the functions that use it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pytest_mtmcs.analysis.flips import flip_of
from pytest_mtmcs.errors import ConfigError
from pytest_mtmcs.outcome.model import ReportData
from pytest_mtmcs.records import Dialogue, DialogueResult, QuestionResult, ReplyResult

# One row per dialogue, in this order; `baseline_<name>_verdict` columns follow `flip`.
RESULT_COLUMNS: tuple[str, ...] = (
    "suite",
    "id",
    "pair",
    "setting",
    "label",
    "modality",
    "category",
    "bucket",
    "user_turns",
    "risk_turn",
    "trajectory",
    "verdict",
    "ok",
    "score",
    "turn_labels",
    "intent_correct",
    "intent_total",
    "intent_bits",
    "unparsed",
    "flip",
    "cache_hits",
    "latency_s",
    "error",
)


# `intent_bits` starts with this letter: digits alone ("01", "110") would be read back as a
# number by CSV readers' type inference (pandas: 1, 110), losing the leading zeros and the
# per-question order the column is for. `b` alone: the dialogue asked no intent question.
BITS_PREFIX = "b"


def baseline_column(name: str) -> str:
    return f"baseline_{name}_verdict"


def intent_bits(questions: Iterable[QuestionResult]) -> str:
    """`b` + one digit per intent question in order: 1 correct, 0 wrong or unparsed."""
    return BITS_PREFIX + "".join("1" if q.correct else "0" for q in questions)


def _bits_digits(value: Any) -> str:
    """The digits of an `intent_bits` cell, written with the `b` prefix or (before it) without."""
    text = str(_none(value) or "")
    return text[len(BITS_PREFIX) :] if text.startswith(BITS_PREFIX) else text


def result_rows(data: ReportData) -> list[dict[str, Any]]:
    names = data.baseline_names()
    rows: list[dict[str, Any]] = []
    for s in data.suites:
        base_by_name = {
            n: {r.id: r for r in data.baseline_results.get((s.suite, n), ())} for n in names
        }
        primary = base_by_name[names[0]] if names else {}
        first = s.baselines[0] if s.baselines else None
        compared = first is None or not first.refused
        memo: dict[int, str] = {}
        for r in s.results:
            bucket = memo.get(r.user_turns)
            if bucket is None:
                bucket = memo[r.user_turns] = s.buckets.bucket_of(r.user_turns)
            row: dict[str, Any] = {
                "suite": r.suite,
                "id": r.id,
                "pair": r.pair,
                "setting": r.setting,
                "label": r.label,
                "modality": r.modality,
                "category": r.category,
                "bucket": bucket,
                "user_turns": r.user_turns,
                "risk_turn": r.risk_turn,
                "trajectory": r.trajectory,
                "verdict": r.verdict,
                "ok": r.ok,
                "score": r.score,
                "turn_labels": " ".join(r.turn_labels),
                "intent_correct": r.intent_correct,
                "intent_total": r.intent_total,
                "intent_bits": intent_bits(r.questions),
                "unparsed": r.unparsed,
                "flip": flip_of(r, primary.get(r.id), compared=compared),
                "cache_hits": r.cache_hits,
                "latency_s": r.latency_s,
                "error": r.error,
            }
            for n in names:
                before = base_by_name[n].get(r.id)
                row[baseline_column(n)] = None if before is None else before.verdict
            rows.append(row)
    return rows


def results_frame(data: ReportData) -> Any:
    """The results table as a pandas DataFrame (column order: RESULT_COLUMNS, then baselines)."""
    import pandas as pd

    columns = [*RESULT_COLUMNS, *(baseline_column(n) for n in data.baseline_names())]
    df = pd.DataFrame.from_records(result_rows(data), columns=columns)
    # Nullable integers: a missing risk turn stays missing instead of becoming a float NaN.
    return df.astype({"risk_turn": "Int64", "user_turns": "int64", "score": "float64"})


def _none(v: Any) -> Any:
    """NaN / NA / empty CSV cells -> None."""
    if v is None or v == "":
        return None
    try:
        if v != v:  # NaN
            return None
    except (TypeError, ValueError):  # pandas.NA refuses comparisons
        return None
    return v


def results_from_rows(rows: Iterable[Mapping[str, Any]], where: str) -> list[DialogueResult]:
    """DialogueResults from results-table rows: the fields statistics need (no reply text)."""
    out: list[DialogueResult] = []
    for i, row in enumerate(rows, start=2):  # line 1 of a CSV is its header
        try:
            labels = [t for t in str(row["turn_labels"] or "").split() if t]
            replies = tuple(
                ReplyResult.from_token(k, lab)
                for k, lab in enumerate(labels, start=1)
                if lab != "scripted"
            )
            bits = _bits_digits(row.get("intent_bits"))
            n = int(row["intent_total"])
            if len(bits) != n:
                bits = "1" * int(row["intent_correct"]) + "0" * (n - int(row["intent_correct"]))
            questions = tuple(QuestionResult("tf", "1", "1" if b == "1" else "0", "") for b in bits)
            risk = _none(row.get("risk_turn"))
            pair, traj = _none(row.get("pair")), _none(row.get("trajectory"))
            out.append(
                DialogueResult(
                    suite=str(row["suite"]),
                    id=str(row["id"]),
                    pair=None if pair is None else str(pair),
                    label=str(row["label"]),
                    setting=str(row["setting"]),
                    modality=str(row["modality"]),
                    category=str(row["category"]),
                    user_turns=int(row["user_turns"]),
                    risk_turn=None if risk is None else int(float(risk)),
                    verdict=str(row["verdict"]),
                    score=float(row["score"]),
                    replies=replies,
                    questions=questions,
                    error=_none(row.get("error")),
                    trajectory=None if traj is None else str(traj),
                    cache_hits=int(float(_none(row.get("cache_hits")) or 0)),
                    latency_s=float(_none(row.get("latency_s")) or 0.0),
                )
            )
        except KeyError as exc:
            raise ConfigError(
                f"{where}: column {exc.args[0]!r} is missing: expected a results table written "
                "by --mtmcs-report"
            ) from None
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: row {i} (id {row.get('id')!r}): {exc}") from None
    return out


def transcript_rows(
    results: Iterable[DialogueResult],
    dialogues: Mapping[str, Dialogue] | None = None,
    image_placement: str = "last",
) -> Iterable[dict[str, Any]]:
    """One row per generated reply (`kind: turn`) and per intent answer (`kind: question`).

    Question rows carry the question's 1-based index and, when the suite's dialogues are known,
    its text and options: the `replay:` backend matches an intent prompt on them exactly.
    """
    for r in results:
        d = dialogues.get(r.id) if dialogues else None
        image = d.image.sha256 if d is not None and d.image is not None else None
        with_image = d.image_turns(image_placement) if d is not None else frozenset()
        for rep in r.replies:
            yield {
                "kind": "turn",
                "suite": r.suite,
                "dialogue_id": r.id,
                "user_turn": rep.user_turn,
                "label": rep.label,
                "text": rep.text,
                "cached": rep.cached,
                "latency_s": rep.latency_s,
                "judge_error": rep.judge_error,
                "image_sha256": image if rep.user_turn in with_image else None,
                # The harm axis, and whether the reply was off target (when the judge said).
                **({"harm": rep.harm} if rep.harm is not None else {}),
                **({"off_target": rep.off_target} if rep.off_target is not None else {}),
                # Our guard's action: the reply shown is its refusal; `withheld` the model's own.
                **({"guard": rep.guard, "withheld": rep.withheld} if rep.guard else {}),
                # The exchange key an adjudication matches on, the judge's reason, and how a
                # model judge or a person decided the label (`pytest-mtmcs review` reads them).
                **rep.review_fields(),
            }
        for i, q in enumerate(r.questions, start=1):
            asked = d.questions[i - 1] if d is not None and len(d.questions) >= i else None
            yield {
                "kind": "question",
                "suite": r.suite,
                "dialogue_id": r.id,
                "index": i,
                "question_kind": q.kind,
                "tag": q.tag,
                "question": asked.text if asked is not None else None,
                "options": list(asked.options) if asked is not None else None,
                "expected": q.expected,
                "raw": q.raw,
                "parsed": q.answer,
                "correct": q.correct,
                "image_sha256": image,
            }
