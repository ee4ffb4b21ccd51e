"""The benchmarks' headline numbers beside each baseline: paired deltas and their intervals
(`analysis/headline.py`), the tables the terminal, summary.md and report.html show
(`outcome/headline.py`), end to end on the SafeMT and MTMCS-Bench reference samples, and the
1 MiB bound of summary.md at benchmark scale."""

from __future__ import annotations

import io
import json
import random
import re
import shutil
import zlib
from dataclasses import replace
from html import escape
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_mtmcs.analysis.headline import (
    NO_DELTA,
    PairedDelta,
    depth_units,
    difference_of_deltas,
    mtmcs_units,
    newcombe_paired,
    paired_delta,
    question_tags,
    safemt_delta,
)
from pytest_mtmcs.analysis.metrics import mtmcs_accuracies, safety_by_depth
from pytest_mtmcs.baseline.store import BaselineSet, entry_line, parse_entry, write_baseline
from pytest_mtmcs.baseline.transcripts import read_transcripts_with_header, write_transcripts
from pytest_mtmcs.engine.grading import grade
from pytest_mtmcs.outcome.finish import RunInfo, finish
from pytest_mtmcs.outcome.headline import mtmcs_table, safemt_table
from pytest_mtmcs.outcome.markdown import CUT_NOTE, STEP_SUMMARY_LIMIT, summary_markdown
from pytest_mtmcs.outcome.model import EndOptions, ReportData, run_header
from pytest_mtmcs.outcome.report import write_report
from pytest_mtmcs.outcome.terminal import format_benchmark_metrics
from pytest_mtmcs.records import DialogueResult, QuestionResult, ReplyResult
from tests.scripts import load_script


def _warm_up_parquet() -> None:
    """pytester's in-process runs drop modules first imported inside them; pandas' parquet
    engine then registers its pyarrow extension types a second time and fails. Importing it here,
    before any inner run, keeps it loaded (as test_report.py does)."""
    import pandas as pd

    pd.DataFrame({"a": [1]}).to_parquet(io.BytesIO())


_warm_up_parquet()
REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "tests" / "data" / "reference"


def dr(
    id: str,
    label: str = "unsafe",
    turns: int = 3,
    *,
    harmful_from: int | None = None,
    setting: str = "escalation",
    modality: str = "multimodal",
    risk: int = 1,
    verdict: str | None = None,
    questions: tuple[QuestionResult, ...] = (),
    trajectory: str | None = None,
    suite: str = "s",
    live: tuple[int, ...] | None = None,
) -> DialogueResult:
    """A graded result: replies harmful from user turn `harmful_from` on (None: never)."""
    replies = tuple(
        ReplyResult(
            k,
            f"reply {k}",
            "compliance" if harmful_from is not None and k >= harmful_from else "refusal",
        )
        for k in (live or range(1, turns + 1))
    )
    graded, score = grade(label, risk if label == "unsafe" else None, replies)
    return DialogueResult(
        suite,
        id,
        None,
        label,
        setting,
        modality,
        "c",
        turns,
        risk if label == "unsafe" else None,
        verdict or graded,
        score,
        replies,
        questions,
        trajectory=trajectory,
    )


def qr(correct: bool | None, tag: str | None) -> QuestionResult:
    answer = None if correct is None else ("A" if correct else "B")
    return QuestionResult("mcq", "A", answer, "raw", tag)


# --- the paired interval -------------------------------------------------------------------------


def test_newcombe_paired_matches_the_published_example() -> None:
    # Fagerland, Lydersen & Laake, "Statistical Analysis of Contingency Tables" (2017), ch. 8:
    # complete response before and after consolidation therapy (Cavo et al., 2012), table
    # [[59, 6], [16, 80]]; the Newcombe square-and-add interval is -0.0621 (-0.1186 to -0.0046)
    # (R package contingencytables, tests/testthat/test-ch8.R).
    d = newcombe_paired(59, 6, 16, 80)
    assert d.n == 161
    assert d.delta == pytest.approx(-0.0621, abs=5e-5)
    assert d.interval == pytest.approx((-0.1186, -0.0046), abs=5e-5)


def test_newcombe_paired_edges() -> None:
    assert newcombe_paired(0, 0, 0, 0) == NO_DELTA
    # Every unit ok in the baseline, none now: the largest possible drop, still an interval.
    d = newcombe_paired(0, 0, 6, 0)
    assert d.delta == -1.0 and d.interval is not None
    assert d.interval[0] == -1.0 and -1.0 < d.interval[1] < 0.0
    # Nothing changed: an interval around 0 whose width shrinks with n.
    small, large = newcombe_paired(3, 0, 0, 3), newcombe_paired(300, 0, 0, 300)
    assert small.delta == large.delta == 0.0
    assert small.interval is not None and large.interval is not None
    assert small.interval[0] < large.interval[0] < 0.0 < large.interval[1] < small.interval[1]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=4, max_size=4).filter(lambda c: sum(c) > 0))
def test_newcombe_paired_properties(counts: list[int]) -> None:
    a, b, c, d = counts
    got = newcombe_paired(a, b, c, d)
    assert got.delta is not None and got.interval is not None
    lo, hi = got.interval
    assert -1.0 <= lo <= got.delta <= hi <= 1.0
    # Swapping the two runs mirrors the interval.
    back = newcombe_paired(a, c, b, d)
    assert back.delta == pytest.approx(-got.delta)
    assert back.interval == pytest.approx((-hi, -lo))


def test_paired_delta_counts_only_shared_units() -> None:
    now = {"a": True, "b": False, "c": True}
    was = {"a": True, "b": True, "z": False}
    d = paired_delta(now, was)
    assert d == newcombe_paired(1, 0, 1, 0)
    assert d.n == 2 and d.delta == -0.5


def test_difference_of_deltas_square_and_add() -> None:
    first = PairedDelta(10, 0.2, (0.1, 0.4))
    second = PairedDelta(20, -0.1, (-0.3, 0.0))
    d = difference_of_deltas(first, second)
    assert d.n == 30 and d.delta == pytest.approx(0.3)
    assert d.interval == pytest.approx(
        (0.3 - (0.1**2 + 0.1**2) ** 0.5, 0.3 + (0.2**2 + 0.2**2) ** 0.5)
    )
    assert difference_of_deltas(first, NO_DELTA).delta is None


# --- units agree with the one-run metrics ---------------------------------------------------------


@st.composite
def unsafe_runs(draw: st.DrawFn) -> list[DialogueResult]:
    out = []
    for i in range(draw(st.integers(1, 12))):
        turns = draw(st.integers(1, 6))
        harmful = draw(st.one_of(st.none(), st.integers(1, turns)))
        verdict = draw(st.sampled_from([None, None, None, "error", "judge_error"]))
        out.append(
            dr(
                f"d{i}",
                turns=turns,
                harmful_from=harmful,
                risk=draw(st.integers(1, turns)),
                setting=draw(st.sampled_from(["escalation", "context_switch"])),
                verdict=verdict,
            )
        )
    return out


@settings(max_examples=60, deadline=None)
@given(unsafe_runs())
def test_depth_units_count_what_safety_by_depth_counts(results: list[DialogueResult]) -> None:
    units = depth_units(results)
    for setting, curve in safety_by_depth(results).items():
        for t, rate in curve:
            mine = units.get(setting, {}).get(t, {})
            assert (sum(mine.values()), len(mine)) == (rate.k, rate.n)


def test_baseline_answers_take_this_runs_question_tags_by_position() -> None:
    tags = ("safe_intent", "unsafe_intent", "tf", None)
    now = [
        dr(
            "a",
            "unsafe",
            questions=tuple(qr(c, t) for c, t in zip((1, 0, 1, 1), tags, strict=True)),
        ),
        dr("b", "unsafe", modality="text", questions=(qr(True, "tf"), qr(None, "tf"))),
    ]
    # What a baseline file gives back: the answer bits, no tags (`store.parse_entry`).
    stored = [parse_entry("s", r.id, entry_line(r), "f") for r in now]
    assert mtmcs_accuracies(stored) == {}
    assert mtmcs_units(stored, question_tags(now)) == mtmcs_units(now)
    # A dialogue whose question count differs (a forced comparison) is not counted.
    shorter = replace(stored[0], questions=stored[0].questions[:2])
    assert ("escalation", "multimodal", "safe_mcq") not in mtmcs_units(
        [shorter, stored[1]], question_tags(now)
    )


# --- SafeMT: the Safety Index delta ----------------------------------------------------------------


def safemt_run(trajectories: int, p: float, seed: int) -> list[DialogueResult]:
    rng = random.Random(seed)
    out = []
    for t in range(trajectories):
        for k in (1, 2, 4, 6, 8):
            success = rng.random() < p * k / 4
            out.append(
                dr(
                    f"{k}turn/t{t}",
                    turns=k,
                    risk=k,
                    live=(k,),
                    harmful_from=k if success else None,
                    setting="scripted",
                    trajectory=f"t{t}",
                )
            )
    return out


def test_safemt_delta_point_interval_and_determinism() -> None:
    now, was = safemt_run(300, 0.3, 1), safemt_run(300, 0.2, 2)
    d = safemt_delta(now, was, resamples=400)
    assert d is not None
    from pytest_mtmcs.analysis.metrics import safemt_summary

    sn, sw = safemt_summary(now), safemt_summary(was)
    assert sn is not None and sw is not None and sn.si is not None and sw.si is not None
    # Every dialogue measured on both sides: the paired delta is the difference of the SIs.
    assert d.si.n == 300 and d.si.delta == pytest.approx(sn.si - sw.si)
    assert d.si.interval is not None
    assert d.si.interval[0] < d.si.delta < d.si.interval[1]
    assert safemt_delta(now, was, resamples=400) == d  # seeded: the same interval every time
    assert d.asr[1] == paired_delta(
        {r.id: not r.ok for r in now if r.user_turns == 1},
        {r.id: not r.ok for r in was if r.user_turns == 1},
    )
    # A few trajectories, or all alike: a delta without an interval, never a zero-width one.
    few = safemt_delta(now[:25], was[:25])
    assert few is not None and few.si.delta is not None and few.si.interval is None
    alike = safemt_run(40, 0.0, 3)
    same = safemt_delta(alike, alike)
    assert same is not None and same.si.delta == 0.0 and same.si.interval is None
    assert safemt_delta([dr("x")], []) is None


# --- the tables -------------------------------------------------------------------------------------


def test_tables_show_each_baseline_beside_this_run() -> None:
    now = safemt_run(30, 0.4, 5)
    was = safemt_run(30, 0.1, 6)
    t = safemt_table(now, [("old", was), ("older", was[:50])])
    assert t is not None
    assert t.header == ["", "SI weight", "this run", "old", "Δ vs old [95% CI]", "older",
                        "Δ vs older [95% CI]"]  # fmt: skip
    asr1 = t.rows[0]
    assert asr1[0] == "ASR 1 turn" and asr1[1] == "0.702"
    assert re.fullmatch(r"\d\.\d{3} \(\d+/30\)", asr1[2])
    assert re.fullmatch(r"[+-]\d\.\d{3} \[[+-]\d\.\d\d, [+-]\d\.\d\d\]", asr1[4])
    # `older` lacks most dialogues: its delta says how many were paired.
    assert asr1[6].endswith("(n=10 paired)")
    si = next(r for r in t.rows if r[0] == "Safety Index")
    assert re.fullmatch(r"[+-]\d\.\d{3} \[[+-]\d\.\d\d, [+-]\d\.\d\d\]", si[4])
    assert t.notes[-2] == "SI Δ vs old: paired bootstrap over 30 trajectories (2000 resamples, seed 20251012)"  # fmt: skip
    lines = format_benchmark_metrics(now, [("old", was)])
    assert any(line.startswith("ASR 1 turn") and "Δ" not in line for line in lines)
    assert any("Δ vs old [95% CI]" in line for line in lines)


def test_mtmcs_table_with_a_stored_baseline() -> None:
    now, was = [], []
    for i, (setting, modality) in enumerate(
        (s, m) for s in ("escalation", "context_switch") for m in ("multimodal", "text")
    ):
        for j in range(4):
            right = (i + j) % 2 == 0
            qs = (qr(right, "unsafe_intent"), qr(True, "tf"))
            now.append(dr(f"{i}/{j}", setting=setting, modality=modality, questions=qs))
            was.append(dr(f"{i}/{j}", setting=setting, modality=modality, questions=qs[::-1]))
    stored = [parse_entry("s", r.id, entry_line(r), "f") for r in was]
    t = mtmcs_table(now, [("old", stored)])
    assert t is not None
    rows = {(r[0], r[1], r[2]): r[3:] for r in t.rows}
    # escalation multimodal: unsafe MCQ right for j = 0, 2 now; the stored answers are in the
    # other order, so the baseline's first answer (the TF one, always right) is its MCQ.
    assert rows[("escalation", "multimodal", "unsafe MCQ")][:2] == ["0.500 (2/4)", "1.000 (4/4)"]
    assert rows[("escalation", "multimodal", "unsafe MCQ")][2].startswith("-0.500 [")
    assert rows[("escalation", "mm - text", "unsafe MCQ")][:2] == ["+0.000", "+0.000"]
    assert rows[("escalation", "mm - text", "unsafe MCQ")][2].startswith("+0.000 [-")


# --- end to end: the reference samples against a recorded baseline --------------------------------


SPECS = ("--mtmcs-suite=safemt:ref/safemt/Data", "--mtmcs-suite=mtmcs-bench:ref/mtmcs")
COMMON = ("-p", "no:cacheprovider", "--mtmcs-no-cache", "--mtmcs-baseline=base")


@pytest.mark.parametrize("xdist", [(), ("-n", "2")], ids=["serial", "xdist"])
def test_headline_tables_of_the_reference_samples_against_a_baseline(
    pytester: pytest.Pytester, xdist: tuple[str, ...]
) -> None:
    shutil.copytree(REFERENCE, pytester.path / "ref")
    pytester.mkdir("elsewhere")
    recorded = pytester.runpytest(
        "elsewhere", *SPECS, *COMMON, "--mtmcs-model=scripted:refuse-all", "--snapshot-update",
        "--mtmcs-baseline-transcripts",
    )  # fmt: skip
    assert recorded.ret == 0, recorded.stdout.str()
    # Complies from user turn 2 on and answers every intent question wrongly.
    result = pytester.runpytest(
        "elsewhere", *SPECS, *COMMON, *xdist, "--mtmcs-model=scripted:comply-from=2,wrong-intent",
        "--mtmcs-report=out",
    )  # fmt: skip
    assert result.ret == 1, result.stdout.str()

    md = (pytester.path / "out" / "summary.md").read_text()
    # The gate table first, then the benchmark's own table, this run beside the baseline.
    assert md.index("| bucket | n | metric |") < md.index("**SafeMT: attack success rate")
    # SafeMT's buckets are each too small to be significant; pooled, the drop is, and the `all`
    # row says so without claiming a gate failure (only the turn buckets gate).
    pooled = "| all | 18 | safety | 0.333 | 1.000 | -0.667 | [0.16, 0.56] | 0.00195 |"
    assert f"{pooled} significant drop (all: not gated) |" in md
    assert "`mde -`: no drop in a cell this small could be significant" in md
    assert "|  | SI weight | this run | base | Δ vs base [95% CI] |" in md
    assert "| ASR 1 turn | 0.705 | 0.000 (0/6) | 0.000 (0/6) | +0.000 [-0.39, +0.39] |" in md
    assert "| ASR 2 turns | 0.259 | 1.000 (6/6) | 0.000 (0/6) | +1.000 [+0.45, +1.00] |" in md
    assert "| Safety Index |  | 0.705 | 1.000 | -0.295 |" in md  # 6 trajectories: no bootstrap
    assert "| setting | modality | question | this run | base | Δ vs base [95% CI] |" in md
    row = "| escalation | multimodal | unsafe TF | 0.000 (0/4) | 1.000 (4/4) | -1.000 [-1.00, -0.31] |"
    assert row in md
    assert "| escalation | mm - text | safe MCQ | +0.000 | +0.000 | +0.000 [-0.69, +0.69] |" in md
    assert "| setting | checkpoint | t=1 | t=2 | t=3 |" in md
    assert "| all | this run | 1.000 (8) | 0.500 (8) | 0.000 (8) |" in md
    assert "| all | Δ vs base | +0.000 [-0.32, +0.32] | -0.500 [-0.78, -0.07] | -1.000 [-1.00, -0.54] |" in md  # fmt: skip

    out = result.stdout.str()
    assert re.search(r"setting +modality +question +this run +base +Δ vs base \[95% CI\]", out)
    assert re.search(
        r"ASR 2 turns +0\.259 +1\.000 \(6/6\) +0\.000 \(0/6\) +\+1\.000 \[\+0\.45", out
    )
    assert re.search(r"all +Δ vs base +\+0\.000 \[-0\.32, \+0\.32\] +-0\.500", out)

    # report.html: the baseline's reply beside this run's for a flipped dialogue.
    from tests.test_report import check_html

    check_html(pytester.path / "out" / "report.html")
    html = (pytester.path / "out" / "report.html").read_text()
    texts, _ = read_transcripts_with_header(
        pytester.path / "baselines" / "base" / "safemt.transcripts.jsonl.gz"
    )
    flipped = "2turn/mllm_legal_opinion_1"
    block = html[html.index(f"<code>{flipped}</code>") :]
    block = block[: block.index("</details>")]
    assert "<th>base: reply</th>" in block
    before = texts[(flipped, 2)]
    assert f'<div class="reply">{escape(before, quote=True)}</div>' in block
    assert "I" in before and "help" in before.lower()  # the scripted refusal
    assert block.index(escape(before, quote=True)) > block.index('class="lab-compliance"')


def test_html_says_why_baseline_replies_are_not_shown(tmp_path: Path) -> None:
    meta = {"name": "s", "version": "1", "content_hash": "h", "spec": "s", "defaults": {},
            "settings": {}, "dialogues": 2}  # fmt: skip
    info = {"model": "m", "fingerprint": {}, "judge": {"name": "rules"}}
    was = [dr("a"), dr("b")]
    now = [dr("a", harmful_from=2), dr("b")]
    root = tmp_path / "baselines"
    header = run_header(meta, info)
    write_baseline(root, "old", "s", header, was, keep_others=False)
    path = root / "old" / "s.transcripts.jsonl.gz"

    def page(**kw: object) -> str:
        baselines = BaselineSet(root, ["old"])
        run = RunInfo(info=info, suites={"s": meta})
        outcome = finish(now, {"s": meta}, baselines, EndOptions(), run)
        out = write_report(tmp_path / "r", outcome.suites, info, baselines, **kw)  # type: ignore[arg-type]
        return (out / "report.html").read_text()

    assert "labels only" in page() and "old: reply" not in page()
    write_transcripts(path, was, suite="s", header={**header, "model": "another"})
    html = page()
    assert "written with another recording of baseline old" in html and "old: reply" not in html
    write_transcripts(path, was, suite="s", header=header)
    assert "<th>old: reply</th>" in page()
    assert "re-recorded by this run" in page(rerecorded="old")


# --- summary.md stays under GitHub's 1 MiB at benchmark scale -------------------------------------


def _native_results(records: list[dict], comply: int, wrong: int) -> list[DialogueResult]:
    """Results of the generated suite's dialogues: each complies from a user turn drawn from its
    id (+ `comply`), and answers about `wrong`% of its questions wrongly."""
    out = []
    for rec in records:
        n = len(rec["turns"])
        start = comply + zlib.crc32(rec["id"].encode()) % 7
        qs = []
        for i, q in enumerate(rec.get("questions", ())):
            expected = q["answer"] if q["type"] == "mcq" else str(q["answer"]).lower()
            bad = zlib.crc32(f"{rec['id']}#{i}#{wrong}".encode()) % 100 < wrong
            qs.append(QuestionResult(q["type"], expected, "X" if bad else expected, "", q["tag"]))
        r = dr(rec["id"], rec["label"], n, harmful_from=start, setting=rec["setting"],
               modality=rec["modality"], risk=rec.get("risk_turn") or 1, questions=tuple(qs),
               suite="native_scale")  # fmt: skip
        out.append(r)
    return out


@pytest.mark.slow
def test_summary_fits_a_step_summary_at_benchmark_scale(tmp_path: Path) -> None:
    native = load_script(REPO / "benchmarks" / "make_native_scale.py", "make_native_scale")
    folder = native.build(tmp_path / "native", images=4, image_size=(8, 8))
    records = [json.loads(line) for line in (folder / "dialogues.jsonl").open()]
    assert len(records) == 30_080
    suites = {
        "native_scale": (_native_results(records, 2, 30), _native_results(records, 3, 10)),
        # SafeMT at the same size: 6,016 trajectories x 5 lengths.
        "safemt_scale": (
            [replace(r, suite="safemt_scale") for r in safemt_run(6016, 0.3, 1)],
            [replace(r, suite="safemt_scale") for r in safemt_run(6016, 0.2, 2)],
        ),
    }
    info = {"model": "m", "fingerprint": {}, "judge": {"name": "rules"}}
    metas = {}
    root = tmp_path / "baselines"
    for name, (now, was) in suites.items():
        assert len(now) == 30_080
        metas[name] = {"name": name, "version": "1", "content_hash": name, "spec": name,
                       "defaults": {}, "settings": {}, "dialogues": len(now)}  # fmt: skip
        header = run_header(metas[name], info)
        write_baseline(root, "b1", name, header, was, keep_others=False)
        write_baseline(root, "b2", name, header, now[::2], keep_others=False)
    rows = [r for now, _ in suites.values() for r in now]
    outcome = finish(
        rows, metas, BaselineSet(root, ["b1", "b2"]), EndOptions(), RunInfo(info, metas)
    )
    data = ReportData(suites=outcome.suites, info=info, verdict=outcome.verdict)
    md = summary_markdown(data)
    size = len(md.encode("utf-8"))
    assert size < STEP_SUMMARY_LIMIT // 20  # far under the limit: every list is capped
    assert CUT_NOTE not in md
    for title in ("**Safety by turn depth", "**MTMCS-Bench: intent accuracy", "**SafeMT: attack"):
        assert title in md
    assert "| setting | modality | question | this run | b1 | Δ vs b1 [95% CI] | b2 | Δ vs b2 [95% CI] |" in md  # fmt: skip
    assert re.search(r"\| Safety Index \|  \| 0\.\d{3} \| 0\.\d{3} \| [+-]0\.\d{3} \[", md)

    # Should it ever exceed the limit, lists are cut, never numbers: every table row stays.
    cut = summary_markdown(data, limit=size // 2)
    assert CUT_NOTE in cut and len(cut.encode("utf-8")) < size
    assert [x for x in md.splitlines() if x.startswith("|")] == [
        x for x in cut.splitlines() if x.startswith("|")
    ]
    assert md.count("\n- `") > cut.count("\n- `")
