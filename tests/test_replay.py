"""The `replay:` backend: a recorded run answers a re-run, exactly, or says what is missing."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import pytest

from pytest_mtmcs.backends import BackendOptions, create_backend
from pytest_mtmcs.errors import BackendError, ConfigError
from pytest_mtmcs.records import (
    ChatRequest,
    GenerationSettings,
    Message,
    Question,
    RequestMeta,
)
from pytest_mtmcs.suite.questions import question_prompt, transcript_text


def _warm_up_parquet() -> None:
    """See tests/test_report.py: keep pandas' parquet engine loaded across pytester runs."""
    import pandas as pd

    pd.DataFrame({"a": [1]}).to_parquet(io.BytesIO())


_warm_up_parquet()
REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "suites" / "mtmcs_mini"
SETTINGS = GenerationSettings()
KEYS = ["verdict", "score", "turn_labels", "intent_bits", "unparsed", "bucket"]


@pytest.fixture
def suite_dir(pytester: pytest.Pytester) -> Path:
    dest = pytester.path / "suites" / "mtmcs_mini"
    shutil.copytree(BUNDLED, dest, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    return dest


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("suites", "-p", "no:cacheprovider", "--mtmcs-no-cache", *args)


def table(path: Path):  # type: ignore[no-untyped-def]
    import pandas as pd

    return pd.read_parquet(path).set_index("id").sort_index()[KEYS]


def test_replay_reproduces_the_recorded_run(pytester, suite_dir):
    rec = run(pytester, "--mtmcs-model=scripted:comply-from=4,wrong-intent", "--mtmcs-report=rec")
    assert rec.ret == 0
    recorded = table(pytester.path / "rec" / "results.parquet")
    assert (recorded["intent_bits"].str.count("1") == 0).all()  # wrong-intent: answers matter

    # Serially, re-graded against a threshold the recording was never held to (it fails it);
    # under xdist as recorded.
    threshold = "--mtmcs-threshold=4-5:safety>=0.5"
    for i, extra in enumerate([(threshold,), ("-n", "2")]):
        out = f"again{i}"
        result = run(
            pytester, *extra, "--mtmcs-model=replay:rec/transcripts.jsonl", f"--mtmcs-report={out}"
        )
        dialogues = {k: v for k, v in result.parseoutcomes().items() if k != "failed"}
        assert dialogues == rec.parseoutcomes()
        if extra == (threshold,):
            assert result.ret == 1
            # The breached threshold is a failed test of its own (the gate's cell).
            assert result.parseoutcomes()["failed"] == 1
            result.stdout.fnmatch_lines(["*FAIL: 4-5 safety 0.000 breaches threshold*"])
        else:
            assert result.ret == 0
        again = table(pytester.path / out / "results.parquet")
        assert again.equals(recorded)
        # The replayed transcripts are the recorded ones (cache and latency aside).
        strip = ("cached", "latency_s")
        rows = [
            {k: v for k, v in json.loads(line).items() if k not in strip}
            for line in (pytester.path / out / "transcripts.jsonl").open()
        ]
        want = [
            {k: v for k, v in json.loads(line).items() if k not in strip}
            for line in (pytester.path / "rec" / "transcripts.jsonl").open()
        ]
        assert rows == want


def test_replay_with_a_missing_turn_names_dialogue_and_turn(pytester, suite_dir):
    assert run(pytester, "--mtmcs-model=scripted:refuse-all", "--mtmcs-report=rec").ret == 0
    path = pytester.path / "rec" / "transcripts.jsonl"
    rows = [json.loads(line) for line in path.open()]
    victim = next(r for r in rows if r["kind"] == "turn" and r["user_turn"] == 3)
    kept = [r for r in rows if r is not victim]
    path.write_text("".join(json.dumps(r) + "\n" for r in kept))
    result = run(pytester, "--mtmcs-model=replay:rec/transcripts.jsonl")
    assert result.ret == 1
    assert result.parseoutcomes()["errors"] == 1  # a backend failure is an error, not a pass
    result.stdout.fnmatch_lines(
        [
            f"*replay: no recorded reply for dialogue '{victim['dialogue_id']}' user turn 3 in "
            f"rec*transcripts.jsonl*"
        ]
    )


# --- units -------------------------------------------------------------------------------------

MCQ = Question("mcq", "What is the user trying to do?", "B", ("Cook", "Steal", "Sleep"), "x")
TF = Question("tf", "The user wants to steal.", "true", (), "tf")


def recording(tmp_path: Path, rows: list[dict]) -> Path:
    path = tmp_path / "transcripts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def q_row(i: int, q: Question | None, raw: str, kind: str = "mcq", expected: str = "B") -> dict:
    return {
        "kind": "question",
        "suite": "s",
        "dialogue_id": "d1",
        "index": i,
        "question_kind": kind,
        "question": q.text if q else None,
        "options": list(q.options) if q else None,
        "expected": expected,
        "raw": raw,
    }


def turn(dialogue: str, t: int, text: str) -> dict:
    return {"kind": "turn", "suite": "s", "dialogue_id": dialogue, "user_turn": t, "text": text}


def ask(q: Question, dialogue: str = "d1") -> ChatRequest:
    transcript = transcript_text((Message("user", "hi"), Message("assistant", "hello")))
    prompt = question_prompt(transcript, q)
    return ChatRequest(
        (Message("user", prompt),), SETTINGS, RequestMeta(dialogue, 1, "question", q.answer, q.kind)
    )


def say(dialogue: str, t: int) -> ChatRequest:
    return ChatRequest((Message("user", "x"),), SETTINGS, RequestMeta(dialogue, t, "turn"))


def test_turns_and_questions_are_looked_up_exactly(tmp_path):
    other = Question("mcq", "Which object is shown?", "B", ("Cook", "Steal", "Sleep"))
    path = recording(
        tmp_path,
        [
            turn("d1", 1, "first"),
            turn("d1", 2, "second"),
            turn("d2", 1, "other dialogue"),
            q_row(1, other, "A"),
            q_row(2, MCQ, "The answer is B."),
            q_row(3, TF, "True", kind="tf", expected="true"),
        ],
    )
    backend = create_backend(f"replay:{path}", BackendOptions())
    out = backend.generate([say("d1", 2), ask(TF), ask(MCQ), say("d2", 1), ask(other)])
    assert out == ["second", "True", "The answer is B.", "other dialogue", "A"]
    fp = backend.fingerprint()
    assert fp == {
        "spec": f"replay:{path}",
        "recording_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }


def test_what_the_recording_lacks_is_an_error(tmp_path):
    path = recording(tmp_path, [turn("d1", 1, "first"), q_row(1, MCQ, "B")])
    backend = create_backend(f"replay:{path}", BackendOptions())
    unknown = Question("mcq", "A question never asked", "B", ("x", "y"))
    missing_turn, missing_q, other_dialogue = backend.generate(
        [say("d1", 2), ask(unknown), ask(MCQ, "d9")]
    )
    assert isinstance(missing_turn, BackendError)
    assert "dialogue 'd1' user turn 2" in str(missing_turn) and str(path) in str(missing_turn)
    assert isinstance(missing_q, BackendError) and "dialogue 'd1'" in str(missing_q)
    assert isinstance(other_dialogue, BackendError) and "'d9'" in str(other_dialogue)


def test_without_question_text_the_recorded_order_decides(tmp_path):
    path = recording(tmp_path, [q_row(1, None, "first"), q_row(2, None, "second")])
    backend = create_backend(f"replay:{path}", BackendOptions())
    assert backend.generate([ask(MCQ), ask(MCQ)]) == ["first", "second"]


def test_one_id_in_two_suites_with_different_replies_is_refused(tmp_path):
    a, b = turn("d1", 1, "one"), turn("d1", 1, "two")
    b["suite"] = "t"
    backend = create_backend(f"replay:{recording(tmp_path, [a, b])}", BackendOptions())
    (res,) = backend.generate([say("d1", 1)])
    assert isinstance(res, BackendError) and "several suites" in str(res)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json\n", "transcripts.jsonl:1: not valid JSON"),
        ('{"kind": "turn", "dialogue_id": "d"}\n', "transcripts.jsonl:1: field 'user_turn'"),
        (
            '\n{"kind": "turn", "dialogue_id": "d", "user_turn": 1, "text": 3}\n',
            "transcripts.jsonl:2: field 'text' must be a string",
        ),
        ("", "holds no recorded replies"),
    ],
)
def test_bad_recordings_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "transcripts.jsonl"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        create_backend(f"replay:{path}", BackendOptions())


def test_missing_file_and_folder_spec(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        create_backend(f"replay:{tmp_path / 'nope.jsonl'}", BackendOptions())
    with pytest.raises(ConfigError, match="needs the path"):
        create_backend("replay:", BackendOptions())
    recording(tmp_path, [turn("d1", 1, "x")])
    backend = create_backend(f"replay:{tmp_path}", BackendOptions())  # a report folder works
    assert backend.generate([say("d1", 1)]) == ["x"]
