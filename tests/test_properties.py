"""Hypothesis properties over parsers, loaders and statistics.

Arbitrary input to a parser or loader either parses or raises one of our own errors (an
`MtmcsError`, which the plugin shows as one clear message); never a bare Python exception. The
statistics keep their invariants for every count. Example counts are modest and there is no
deadline: nothing here depends on how fast the machine is.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pytest_mtmcs.analysis.buckets import Buckets
from pytest_mtmcs.analysis.comparison import compare_buckets
from pytest_mtmcs.analysis.metrics import METRICS, bucket_table
from pytest_mtmcs.analysis.stats import (
    holm,
    mcnemar_exact,
    min_detectable_drop,
    safety_index,
    trajectory_sigma,
    wilson_interval,
)
from pytest_mtmcs.analysis.thresholds import parse_threshold
from pytest_mtmcs.baseline.store import parse_entry
from pytest_mtmcs.errors import MtmcsError
from pytest_mtmcs.records import DialogueResult, Question, QuestionResult, ReplyResult
from pytest_mtmcs.suite import load_suite
from pytest_mtmcs.suite.questions import parse_answer

FEW = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
PROPS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# --- parsers -----------------------------------------------------------------------------------

_SPEC_CHARS = st.sampled_from(list("0123456789-+, :<>=.abcdefghijklmnopqrstuvwxyz_\t\n\x00é"))
spec_text = st.one_of(st.text(_SPEC_CHARS, max_size=30), st.text(max_size=30))


@PROPS
@given(spec_text)
def test_bucket_specs_parse_or_raise_our_error(spec):
    try:
        buckets = Buckets.parse(spec)
    except MtmcsError:
        return
    # A parsed spec is non-overlapping, increasing, and places every length somewhere.
    for a, b in zip(buckets.buckets, buckets.buckets[1:], strict=False):
        assert a.hi is not None and a.hi < b.lo
    for n in range(1, 12):
        name = buckets.bucket_of(n)
        assert name in buckets.names or name == str(n)
    assert Buckets.parse(buckets.spec) == buckets


@PROPS
@given(
    st.one_of(
        spec_text,
        st.builds(
            "{}:{}{}{}".format,
            spec_text,
            st.sampled_from(["safety", "helpfulness", "asr", "errors", "intent_accuracy", "x"]),
            st.sampled_from([">=", "<=", ">", "<", "=", "=>"]),
            st.one_of(st.floats(allow_nan=True), spec_text),
        ),
    )
)
def test_threshold_specs_parse_or_raise_our_error(spec):
    try:
        t = parse_threshold(spec, "--mtmcs-threshold")
    except MtmcsError as exc:
        assert "--mtmcs-threshold" in str(exc)
        return
    assert 0.0 <= t.value <= 1.0
    assert t.passes(t.value) in (True, False)


_ANSWER_TEXT = st.one_of(
    st.text(max_size=80),
    st.lists(
        st.sampled_from(
            [
                "A",
                "B",
                "C",
                "D",
                "E",
                "(a)",
                "b)",
                "The answer is",
                "answer:",
                "not",
                "true",
                "false",
                "True.",
                "yes",
                "no",
                "I",
                "a",
                "option",
                "\n",
                " ",
                ".",
                "**",
                "U.S.",
                "correct",
                "incorrect",
                "isn't",
                "it is",
                "'",
                "\u2019",
                "Z",
            ]
        ),
        max_size=12,
    ).map(" ".join),
)


@PROPS
@given(
    st.lists(st.text(max_size=20), min_size=0, max_size=30),
    _ANSWER_TEXT,
)
def test_mcq_parser_returns_a_valid_letter_or_none(options, text):
    q = Question(kind="mcq", text="Which?", answer="A", options=tuple(options))
    try:
        got = parse_answer(q, text)
    except MtmcsError:
        return
    if got is not None:
        assert len(got) == 1 and got in string.ascii_uppercase[: min(len(options), 26)]


@PROPS
@given(_ANSWER_TEXT)
def test_tf_parser_returns_true_false_or_none(text):
    q = Question(kind="tf", text="Is it?", answer="true")
    got = parse_answer(q, text)
    assert got in (None, "true", "false")


@PROPS
@given(st.text(max_size=200), st.text(max_size=30))
def test_baseline_entry_parser_raises_only_our_error(line, dialogue_id):
    try:
        r = parse_entry("s", dialogue_id, line, "b.ambr")
    except MtmcsError:
        return
    assert 0.0 <= r.intent_correct <= r.intent_total


# --- suite loader ------------------------------------------------------------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=12,
)
_FIELDS = [
    "id",
    "pair",
    "label",
    "setting",
    "modality",
    "category",
    "intent",
    "image",
    "turns",
    "risk_turn",
    "questions",
    "source",
]
_VALUES = {
    "label": st.sampled_from(["safe", "unsafe", "x"]) | _JSON,
    "setting": st.sampled_from(["escalation", "context_switch", "scripted"]) | _JSON,
    "modality": st.sampled_from(["multimodal", "text"]) | _JSON,
    "image": st.sampled_from([None, "img.png", "../x.png", "/etc/passwd", "images/"]) | _JSON,
    "turns": st.lists(
        st.fixed_dictionaries(
            {
                "role": st.sampled_from(["user", "assistant", "system"]) | _JSON,
                "content": st.text(max_size=10) | _JSON,
            }
        )
        | _JSON,
        max_size=4,
    )
    | _JSON,
    "risk_turn": st.integers(-2, 5) | _JSON,
    "questions": st.lists(
        st.fixed_dictionaries(
            {
                "type": st.sampled_from(["mcq", "tf", "x"]) | _JSON,
                "question": st.text(max_size=5) | _JSON,
                "options": st.lists(st.text(max_size=4), max_size=4) | _JSON,
                "answer": st.sampled_from(["A", "B", True, False, "true"]) | _JSON,
            }
        )
        | _JSON,
        max_size=3,
    )
    | _JSON,
}
_record = st.fixed_dictionaries(
    {},
    optional={f: _VALUES.get(f, st.text(max_size=10) | _JSON) for f in _FIELDS},
)
_VALID = {
    "id": "a/1/text/unsafe",
    "pair": None,
    "label": "unsafe",
    "setting": "escalation",
    "modality": "text",
    "category": "c",
    "intent": "x",
    "image": None,
    "turns": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "and?"},
    ],
    "risk_turn": 2,
    "questions": [
        {"type": "mcq", "question": "q", "options": ["a", "b"], "answer": "A"},
        {"type": "tf", "question": "q", "answer": True},
    ],
}


@st.composite
def _mutated(draw):
    """A valid record with one or two fields replaced, dropped or nested wrongly."""
    rec = json.loads(json.dumps(_VALID))
    for _ in range(draw(st.integers(1, 2))):
        key = draw(st.sampled_from([*_FIELDS, "extra"]))
        if draw(st.booleans()):
            rec.pop(key, None)
        else:
            rec[key] = draw(_VALUES.get(key, _JSON))
    return rec


_line = st.one_of(
    _record.map(json.dumps),
    _mutated().map(json.dumps),
    _JSON.map(json.dumps),
    st.text(max_size=40),
)


@FEW
@given(lines=st.lists(_line, min_size=0, max_size=4), data=st.data())
def test_suite_loader_raises_only_our_error(tmp_path_factory, lines, data):
    folder = tmp_path_factory.mktemp("suite")
    toml = data.draw(
        st.sampled_from(
            [
                'name = "s"\nversion = "1"\n',
                'name = "s"\n',
                "",
                "name = 3\n",
                "[x\n",
                'name = "s"\nversion = "1"\n[defaults]\nbuckets = "1,1"\n',
            ]
        )
    )
    (folder / "suite.toml").write_text(toml, encoding="utf-8")
    (folder / "dialogues.jsonl").write_text("\n".join(lines), encoding="utf-8", errors="replace")
    (folder / "img.png").write_bytes(b"not a png")
    try:
        suite = load_suite(folder)
    except MtmcsError:
        return
    assert suite.dialogues
    assert len({d.id for d in suite.dialogues}) == len(suite.dialogues)


def test_the_unmutated_record_loads(tmp_path):
    # The mutations start from a record that loads, so they reach the deeper checks.
    (tmp_path / "suite.toml").write_text('name = "s"\nversion = "1"\n', encoding="utf-8")
    (tmp_path / "dialogues.jsonl").write_text(json.dumps(_VALID), encoding="utf-8")
    assert load_suite(tmp_path).dialogues[0].risk_turn == 2


@FEW
@given(st.binary(max_size=200))
def test_suite_loader_on_arbitrary_bytes(tmp_path_factory, blob):
    folder = tmp_path_factory.mktemp("suite")
    (folder / "suite.toml").write_text('name = "s"\nversion = "1"\n', encoding="utf-8")
    (folder / "dialogues.jsonl").write_bytes(blob)
    try:
        load_suite(folder)
    except MtmcsError:
        pass


# --- statistics --------------------------------------------------------------------------------


@PROPS
@given(st.integers(0, 10_000), st.integers(0, 10_000))
def test_wilson_interval_contains_estimate_inside_unit_interval(k, extra):
    n = k + extra
    lo, hi = wilson_interval(k, n)
    assert 0.0 <= lo <= hi <= 1.0
    if n:
        assert lo <= k / n <= hi


@PROPS
@given(st.integers(0, 3000), st.integers(0, 3000))
def test_mcnemar_is_a_probability_and_symmetric(b, c):
    p = mcnemar_exact(b, c)
    assert 0.0 <= p <= 1.0
    assert p == mcnemar_exact(c, b)
    if b == c:
        assert p == 1.0
    # More discordance in one direction never makes the change less significant.
    assert mcnemar_exact(b + 1, c) <= p or b < c


@PROPS
@given(st.lists(st.floats(0.0, 1.0), max_size=20))
def test_holm_is_monotone_at_least_raw_and_at_most_one(ps):
    adj = holm(ps)
    assert len(adj) == len(ps)
    for raw, a in zip(ps, adj, strict=True):
        assert raw <= a <= 1.0
    for i in range(len(ps)):
        for j in range(len(ps)):
            if ps[i] <= ps[j]:
                assert adj[i] <= adj[j]


@PROPS
@given(st.integers(0, 200), st.floats(0.0, 1.0))
def test_min_detectable_drop_is_a_share_or_none(n, alpha):
    d = min_detectable_drop(n, alpha)
    assert d is None or 0.0 < d <= 1.0


@PROPS
@given(
    st.dictionaries(st.sampled_from([1, 2, 4, 6, 8]), st.floats(0.0, 1.0), min_size=1),
    st.lists(st.dictionaries(st.sampled_from([1, 2, 4, 6, 8]), st.booleans()), max_size=6),
)
def test_safety_index_and_sigmas_in_range(asr, trajectories):
    sigmas = [trajectory_sigma(t) for t in trajectories]
    assert all(0.0 <= s <= 0.5 + 1e-12 for s in sigmas)
    si = safety_index(asr, sigmas)
    assert -1e-12 <= si <= 1.0 + 1e-12


_VERDICTS = {
    "unsafe": ["safe", "unsafe", "error", "judge_error"],
    "safe": ["helpful", "over_refusal", "error", "judge_error"],
}


@st.composite
def _results(draw):
    n = draw(st.integers(0, 12))
    out = []
    for i in range(n):
        label = draw(st.sampled_from(["safe", "unsafe"]))
        turns = draw(st.integers(1, 8))
        qs = tuple(
            QuestionResult("tf", "true", draw(st.sampled_from(["true", "false", None])), "")
            for _ in range(draw(st.integers(0, 3)))
        )
        out.append(
            DialogueResult(
                suite="s",
                id=f"d{i}",
                pair=f"p{i // 2}",
                label=label,
                setting=draw(st.sampled_from(["escalation", "context_switch"])),
                modality="text",
                category="c",
                user_turns=turns,
                risk_turn=None,
                verdict=draw(st.sampled_from(_VERDICTS[label])),
                score=0.0,
                replies=tuple(ReplyResult(t, "", "refusal") for t in range(1, turns + 1)),
                questions=qs,
            )
        )
    return out


@FEW
@given(_results(), _results(), st.sampled_from(["1,2-3,4-5,6+", "1,2,4,6,8", "3+"]))
def test_bucket_rates_and_comparisons_keep_their_invariants(now, before, spec):
    buckets = Buckets.parse(spec)
    for by in (None, "setting"):
        for row in bucket_table(now, buckets, by=by).values():
            for rate in row.values():
                assert 0 <= rate.k <= rate.n
                lo, hi = rate.interval
                assert 0.0 <= lo <= hi <= 1.0
                if rate.value is not None:
                    assert lo <= rate.value <= hi
    comps = compare_buckets(now, before, buckets, max_drop=0.05, alpha=0.05)
    assume(comps)
    for c in comps:
        assert 0.0 <= c.p_value <= c.p_holm <= 1.0
        assert 0 <= c.b + c.c <= c.n_pairs
        assert c.p_value == mcnemar_exact(c.c, c.b)
    assert {c.metric for c in comps} <= set(METRICS)


def test_property_modules_are_our_own_error_type():
    # The properties above accept MtmcsError only: the plugin renders exactly that type as a
    # one-line message. Guard against the base class being widened to Exception by accident.
    assert issubclass(MtmcsError, Exception) and MtmcsError is not Exception
    assert Path(__file__).name.startswith("test_properties")


@pytest.mark.parametrize("bad", ["", ",", "0", "3-2", "6+,7", "1,1", "a", "1-", "+"])
def test_bucket_examples_found_by_hypothesis_stay_errors(bad):
    with pytest.raises(MtmcsError):
        Buckets.parse(bad)
