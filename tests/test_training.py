"""The fixture-checkpoint training: held-out data, intended labels, seeded reproducible training."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pytest_mtmcs.judges.rules import classify
from pytest_mtmcs.records import Question
from pytest_mtmcs.suite.questions import parse_answer
from pytest_mtmcs.training import data
from pytest_mtmcs.training.data import RECIPES, corpus_text, generate

ROOT = Path(__file__).resolve().parent.parent
SUITE = ROOT / "suites" / "mtmcs_mini" / "dialogues.jsonl"
CHECKPOINTS = ROOT / "pytest_mtmcs" / "checkpoints"
NGRAM = 8


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower().replace("\u2019", "'"))


def _suite_texts() -> list[str]:
    texts: list[str] = []
    for line in SUITE.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        texts += [t["content"] for t in row["turns"]]
        for q in row["questions"]:
            texts += [q["question"], *q.get("options", [])]
    return texts


@pytest.fixture(scope="module")
def training_texts() -> list[str]:
    # The default recipe size: exactly what the committed checkpoints were trained on.
    from pytest_mtmcs.training.train import recipe

    texts: list[str] = []
    for name in RECIPES:
        r = recipe(name)
        texts += corpus_text(generate(name, r.dialogues, seed=r.data_seed))
    return texts


def test_no_suite_turn_appears_in_training_data(training_texts: list[str]) -> None:
    blob = "\n".join(" ".join(_words(t)) for t in training_texts)
    for text in _suite_texts():
        words = " ".join(_words(text))
        if len(words.split()) >= 4:  # "Yes." or "Is it safe?" alone are not dialogue text
            assert words not in blob, f"suite text found in training data: {text!r}"


def test_no_suite_8gram_appears_in_training_data(training_texts: list[str]) -> None:
    train_grams: set[tuple[str, ...]] = set()
    for text in training_texts:
        w = _words(text)
        train_grams.update(tuple(w[i : i + NGRAM]) for i in range(len(w) - NGRAM + 1))
    shared = set()
    for text in _suite_texts():
        w = _words(text)
        shared.update(
            g for i in range(len(w) - NGRAM + 1) if (g := tuple(w[i : i + NGRAM])) in train_grams
        )
    assert not shared, f"{len(shared)} suite 8-grams in training data, e.g. {sorted(shared)[:3]}"


def test_the_overlap_check_can_fail() -> None:
    suite_turn = _suite_texts()[0]
    grams = _words(suite_turn)
    assert len(grams) >= NGRAM  # the check above compares something real


def test_replies_are_judged_as_intended() -> None:
    for reply in data.HELP_REPLIES.values():
        assert classify(reply) == "compliance"
    for reply in (data.REFUSE_UNSAFE, data.REFUSE_SELF_HARM, data.REFUSE_FOLLOW_UP):
        assert classify(reply) in ("refusal", "safe_redirect")
    # An over-refusal must count against helpfulness: a bare refusal, not a redirect.
    assert classify(data.OVER_REFUSAL) == "refusal"


def _turns(n: int, harmful_at: int | None, sensitive: bool = False) -> list[data.Turn]:
    return [
        data.Turn(f"Question {i}?", harm="other" if i == harmful_at else "", sensitive=sensitive)
        for i in range(1, n + 1)
    ]


def test_recipes_differ_only_where_intended() -> None:
    safe = _turns(3, None, sensitive=True)
    assert data.assistant_reply("qwen2-vl", safe, 0) == data.OVER_REFUSAL
    assert data.assistant_reply("qwen2.5-vl", safe, 0) != data.OVER_REFUSAL
    # Escalation at turn 3: refused by all; at turn 7: only the regressed recipe complies.
    short, long = _turns(3, 3), _turns(7, 7)
    for name in RECIPES:
        assert classify(data.assistant_reply(name, short, 2)) != "compliance"
    assert classify(data.assistant_reply("qwen2.5-vl", long, 6)) != "compliance"
    assert classify(data.assistant_reply("qwen2.5-vl-regressed", long, 6)) == "compliance"
    # Context switch: harmful first turn, follow-ups keep being declined before turn 6.
    switch = _turns(8, 1)
    assert classify(data.assistant_reply("qwen2.5-vl-regressed", switch, 4)) != "compliance"
    assert classify(data.assistant_reply("qwen2.5-vl-regressed", switch, 5)) == "compliance"


def test_intent_answers_parse_to_the_gold_answer() -> None:
    samples = [s for s in generate("qwen2.5-vl", 60, seed=3) if s.kind != "dialogue"]
    assert {s.kind for s in samples} == {"mcq", "tf"}
    for s in samples:
        answer = s.messages[-1][1]
        if s.kind == "mcq":
            q = Question(kind="mcq", text="", answer=answer, options=("a", "b", "c", "d"))
            assert parse_answer(q, answer) == answer
        else:
            assert parse_answer(Question(kind="tf", text="", answer=""), answer) in (
                "true",
                "false",
            )


def test_generation_is_seeded() -> None:
    assert generate("qwen2.5-vl", 30, seed=5) == generate("qwen2.5-vl", 30, seed=5)
    assert generate("qwen2.5-vl", 30, seed=5) != generate("qwen2.5-vl", 30, seed=6)
    # Recipes share the dialogues and differ in labels only.
    a, b = generate("qwen2-vl", 30, seed=5), generate("qwen2.5-vl", 30, seed=5)
    assert [s.messages[0] for s in a if s.kind == "dialogue"] == [
        s.messages[0] for s in b if s.kind == "dialogue"
    ]


# Text only: the vision tower's per-image Python work would dominate a run this small.
SMALL = {
    "dialogues": 24,
    "steps": 24,
    "batch_tokens": 1024,
    "image_share": 0.0,
    "hidden": 32,
    "layers": 1,
    "vocab_merges": 200,
    "lr": 1e-2,
    "warmup": 5,
}


def test_small_training_run_learns_and_is_reproducible() -> None:
    pytest.importorskip("torch")
    from pytest_mtmcs.training.train import recipe, train

    r = recipe("qwen2.5-vl", **SMALL)
    model_a, _, _, losses = train(r, log=lambda _: None)
    head, tail = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert tail < head * 0.8, (head, tail)
    model_b, _, _, losses_b = train(r, log=lambda _: None)
    assert losses == losses_b
    state_a, state_b = model_a.state_dict(), model_b.state_dict()
    assert state_a.keys() == state_b.keys()
    assert all(bool((state_a[k] == state_b[k]).all()) for k in state_a)


def test_committed_checkpoints_are_small() -> None:
    folders = [CHECKPOINTS / f"tiny-{name}" for name in RECIPES]
    assert all((f / "model.safetensors").is_file() for f in folders)
    total = sum(p.stat().st_size for f in folders for p in f.iterdir() if p.is_file())
    assert total < 30e6
