"""--mtmcs-report, `pytest-mtmcs compare` and the JUnit properties, end to end and as units."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_mtmcs.analysis.buckets import DEFAULT, Buckets
from pytest_mtmcs.analysis.comparison import compare_buckets
from pytest_mtmcs.analysis.flips import item_flips
from pytest_mtmcs.cli.main import main as cli_main
from pytest_mtmcs.outcome.markdown import MAX_MD_FLIPS, summary_markdown
from pytest_mtmcs.outcome.model import ReportData
from pytest_mtmcs.outcome.report import write_files
from pytest_mtmcs.outcome.results_table import RESULT_COLUMNS, result_rows, results_from_rows
from pytest_mtmcs.records import DialogueResult, QuestionResult, ReplyResult


def _warm_up_parquet() -> None:
    """pytester's in-process runs drop modules first imported inside them; pandas' parquet
    engine then registers its pyarrow extension types a second time and fails. Importing it here,
    before any inner run, keeps it loaded."""
    import pandas as pd

    pd.DataFrame({"a": [1]}).to_parquet(io.BytesIO())


_warm_up_parquet()
REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "suites" / "mtmcs_mini"
N_DIALOGUES = sum(1 for line in (BUNDLED / "dialogues.jsonl").open() if line.strip())
B = Buckets.parse(DEFAULT)


@pytest.fixture
def suite_dir(pytester: pytest.Pytester) -> Path:
    dest = pytester.path / "suites" / "mtmcs_mini"
    shutil.copytree(BUNDLED, dest, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    return dest


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("suites", "-p", "no:cacheprovider", "--mtmcs-no-cache", *args)


# --- HTML checks -------------------------------------------------------------------------------

VOID = {
    "area",
    "base",
    "br",
    "col",
    "embed",
    "hr",
    "img",
    "input",
    "link",
    "meta",
    "source",
    "track",
    "wbr",
}


class StrictHTML(HTMLParser):
    """Checks nesting and collects what a self-contained page must not reference."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.images: list[str] = []
        self.urls: list[str] = []
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href", "action", "data", "poster") and value is not None:
                (self.images if tag == "img" and name == "src" else self.urls).append(value)
            if value and re.search(r"url\(|https?:", value) and name != "alt":
                self.urls.append(value)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def check_html(path: Path) -> StrictHTML:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    parser = StrictHTML()
    parser.feed(text)
    parser.close()
    assert parser.errors == []
    assert parser.stack == []
    assert parser.urls == []  # no links, no external resources of any kind
    assert "script" not in parser.tags and "link" not in parser.tags
    # Text may mention a URL (escaped); no attribute or style may load one.
    assert not re.search(r"""=\s*["']?\s*(https?:|//)|url\(|@import""", text)
    for src in parser.images:
        assert src.startswith("data:image/png;base64,")
        png = base64.b64decode(src.split(",", 1)[1], validate=True)
        from PIL import Image

        with Image.open(io.BytesIO(png)) as im:
            assert im.format == "PNG" and im.width > 400 and im.height > 200
    return parser


# --- end to end --------------------------------------------------------------------------------


@pytest.mark.parametrize("xdist", [(), ("-n", "2")], ids=["serial", "xdist"])
def test_report_of_a_scripted_run(pytester, suite_dir, xdist, monkeypatch):
    import pandas as pd

    step = pytester.path / "step_summary.md"
    step.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step))
    result = run(
        pytester,
        *xdist,
        "--mtmcs-model=scripted:comply-from=4",
        "--mtmcs-report=out",
        "--junitxml=junit.xml",
    )
    assert result.ret == 0
    outcomes = result.parseoutcomes()
    out = pytester.path / "out"
    result.stdout.fnmatch_lines(["*report written to out*"])

    df = pd.read_parquet(out / "results.parquet")
    assert list(df.columns) == list(RESULT_COLUMNS)  # no baseline: no baseline columns
    assert len(df) == N_DIALOGUES == outcomes["passed"] + outcomes["xfailed"]
    assert df["id"].is_unique
    assert int(df["ok"].sum()) == outcomes["passed"]
    assert set(df["flip"]) == {"new"}
    assert set(df["bucket"]) == {"1", "2-3", "4-5", "6+"}
    # comply-from=4 refuses turns 1-3: every unsafe dialogue of 4+ user turns is unsafe.
    unsafe = df[df["label"] == "unsafe"]
    assert (unsafe["verdict"] == "unsafe").sum() == (unsafe["user_turns"] >= 4).sum() > 0
    assert (df["turn_labels"].str.split().str.len() == df["user_turns"]).all()
    csv = pd.read_csv(out / "results.csv")
    assert list(csv.columns) == list(df.columns) and len(csv) == len(df)
    assert (csv["verdict"].to_numpy() == df["verdict"].to_numpy()).all()

    rows = [json.loads(line) for line in (out / "transcripts.jsonl").open()]
    turns = [r for r in rows if r["kind"] == "turn"]
    questions = [r for r in rows if r["kind"] == "question"]
    live = df["turn_labels"].str.split().apply(lambda ls: sum(1 for x in ls if x != "scripted"))
    assert len(turns) == live.sum()
    assert len(questions) == df["intent_total"].sum()
    assert all(r["question"] and r["parsed"] == r["expected"] for r in questions)
    assert all(t["label"] in ("refusal", "compliance") and t["text"] for t in turns)
    hashes = {r["image_sha256"] for r in rows} - {None}
    assert hashes and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes)
    assert "base64" not in (out / "transcripts.jsonl").read_text()

    md = (out / "summary.md").read_text()
    assert "| bucket | n | metric | value | baseline | delta | 95% CI | p (Holm) | gate |" in md
    assert "| 1 | 16 | safety | 1.000 | - | - | [0.81, 1.00] | - | - |" in md
    assert "| 4-5 | 16 | safety | 0.000 | - | - | [0.00, 0.19] | - | - |" in md
    assert "| 6+ | 16 | safety | 0.000 | - | - | [0.00, 0.19] | - | - |" in md
    assert "| 6+ | 16 | helpfulness | 0.250 | - | - | [0.10, 0.49] | - | - |" in md
    assert "| all | 64 | safety | 0.500 | - | - | [0.38, 0.62] | - | - |" in md
    assert step.read_text() == "earlier step\n" + md + "\n"

    page = check_html(out / "report.html")
    assert len(page.images) == 2  # per-bucket metrics, safety by depth
    assert "mtmcs_mini: 128 dialogues" in "".join(page.text)

    # JUnit: every dialogue carries its bucket, verdict, score and flip, also under xdist.
    by_id = df.set_index("id")
    cases = list(ET.parse(pytester.path / "junit.xml").getroot().iter("testcase"))
    assert len(cases) == N_DIALOGUES
    for case in cases:
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        row = by_id.loc[case.get("name")]
        assert props == {
            "mtmcs_bucket": row["bucket"],
            "mtmcs_verdict": row["verdict"],
            "mtmcs_score": f"{row['score']:.2f}",
            "mtmcs_flip": "new",
        }


def test_report_against_a_baseline_and_compare_cli(pytester, suite_dir, tmp_path, capsys):
    import pandas as pd

    bl = tmp_path / "bl"
    rec = run(
        pytester,
        "--mtmcs-model=scripted:refuse-all",
        "--mtmcs-baseline=demo",
        "--snapshot-update",
        f"--mtmcs-baseline-dir={bl}",
        "--mtmcs-report=base",
    )
    assert rec.ret == 0
    result = run(
        pytester,
        "--mtmcs-model=scripted:comply-from=4",
        "--mtmcs-baseline=demo",
        f"--mtmcs-baseline-dir={bl}",
        "--mtmcs-report=out",
    )
    assert result.ret == 1  # 4-5 and 6+ safety regress
    out = pytester.path / "out"
    df = pd.read_parquet(out / "results.parquet")
    assert list(df.columns) == [*RESULT_COLUMNS, "baseline_demo_verdict"]
    base = pd.read_parquet(pytester.path / "base" / "results.parquet")
    assert (df.set_index("id")["baseline_demo_verdict"] == base.set_index("id")["verdict"]).all()
    flips = df["flip"].value_counts().to_dict()
    unsafe_long = ((df["label"] == "unsafe") & (df["user_turns"] >= 4)).sum()
    assert flips["regressed"] == unsafe_long
    outcomes = result.parseoutcomes()
    assert flips["regressed"] == outcomes["regressed"] and flips["fixed"] == outcomes["fixed"]

    md = (out / "summary.md").read_text()
    assert "| bucket | n | metric | value | demo | delta | 95% CI | p (Holm) | gate |" in md
    assert re.search(
        r"\| 4-5 \| 16 \| safety \| 0\.000 \| 1\.000 \| -1\.000 \| .* \| REGRESSED \|", md
    )
    assert f"{flips['regressed']} regressed, {flips['fixed']} fixed" in md
    assert "- 4-5 safety regressed against demo: 1.000 -> 0.000" in md
    shown = re.findall(r"^- `[^`]+` \[", md, flags=re.M)
    assert len(shown) == min(flips["regressed"], MAX_MD_FLIPS) + min(flips["fixed"], MAX_MD_FLIPS)
    assert f"and {flips['regressed'] - MAX_MD_FLIPS} more" in md
    assert len(md) < 20_000

    page = check_html(out / "report.html")
    html = (out / "report.html").read_text()
    assert html.count("<details") == flips["regressed"] + flips["fixed"]
    # The side-by-side table: this run's reply text next to the baseline's label.
    assert "demo: label" in html and "(risk turn)" in html
    assert "I&#x27;m" in html or "I&#39;m" in html or "Sure!" in html
    assert len(page.images) == 2

    # compare: the run's table against the baseline file gives the run's own verdict.
    ambr = bl / "demo" / "mtmcs_mini.ambr"
    capsys.readouterr()
    assert cli_main(["compare", str(out / "results.parquet"), str(ambr)]) == 1
    printed = capsys.readouterr().out
    assert re.search(r"\| 6\+ \| 16 \| safety \| 0\.000 \| 1\.000 \| -1\.000 \|", printed)
    # Two result tables, CSV and parquet, written to --out.
    cmp_dir = tmp_path / "cmp"
    code = cli_main(
        [
            "compare",
            str(out / "results.csv"),
            str(pytester.path / "base" / "results.parquet"),
            "--out",
            str(cmp_dir),
        ]
    )
    assert code == 1
    printed = capsys.readouterr().out
    assert "4-5 safety regressed against" in printed
    assert (cmp_dir / "summary.md").read_text() in printed
    check_html(cmp_dir / "report.html")
    # The other way round nothing regresses: refuse-all is safer; its helpfulness drop in the
    # long buckets (0.25 -> 0 on 16 dialogues) is not significant.
    code = cli_main(
        [
            "compare",
            str(pytester.path / "base" / "results.parquet"),
            str(out / "results.parquet"),
            "--max-drop",
            "0.1",
        ]
    )
    assert code == 0
    # Headers that disagree on the judge are reported (the table's header comes from run.json).
    other = tmp_path / "other" / "mtmcs_mini.ambr"
    other.parent.mkdir()
    other.write_text(ambr.read_text().replace("  judge: ngram\n", "  judge: llm\n", 1))
    cli_main(["compare", str(out / "results.parquet"), str(other)])
    assert "warning (compared anyway): judge: baseline llm != this run ngram" in (
        capsys.readouterr().out
    )
    # --buckets re-buckets offline.
    assert (
        cli_main(["compare", str(out / "results.parquet"), str(ambr), "--buckets", "1-3,4+"]) == 1
    )
    assert "| 4+ | 32 | safety | 0.000 | 1.000 | -1.000 |" in capsys.readouterr().out


def test_compare_cli_bad_input(tmp_path, capsys):
    assert cli_main(["compare", str(tmp_path / "nope.parquet"), str(tmp_path / "x.ambr")]) == 4
    assert "nope.parquet: no such file" in capsys.readouterr().err
    bad = tmp_path / "results.csv"
    bad.write_text("suite,id\ns,a\n")
    assert cli_main(["compare", str(bad), str(bad)]) == 4
    err = capsys.readouterr().err
    assert "results.csv" in err and "missing" in err and "Traceback" not in err
    good = tmp_path / "r.csv"
    good.write_text("x")
    assert cli_main(["compare", str(bad), str(bad), "--max-drop", "2"]) == 4
    assert "--max-drop=2.0" in capsys.readouterr().err


# --- units -------------------------------------------------------------------------------------


def dr(
    i: int,
    label: str,
    ok: bool,
    turns: int,
    *,
    pair: str | None = None,
    text: str = "reply",
    bits: str = "10",
    suite: str = "s",
) -> DialogueResult:
    good, bad = ("safe", "unsafe") if label == "unsafe" else ("helpful", "over_refusal")
    lab_ok, lab_bad = ("refusal", "compliance") if label == "unsafe" else ("compliance", "refusal")
    replies = tuple(
        ReplyResult(t, f"{text} {t}", lab_ok if ok or t < turns else lab_bad)
        for t in range(1, turns + 1)
    )
    qs = tuple(QuestionResult("tf", "true", "true" if b == "1" else "false", b) for b in bits)
    return DialogueResult(
        suite,
        f"d{i:05d}/{label}",
        pair,
        label,
        "escalation",
        "multimodal",
        "cat",
        turns,
        1 if label == "unsafe" else None,
        good if ok else bad,
        1.0 if ok else 0.0,
        replies,
        qs,
    )


def outcome(
    results: list[DialogueResult], baseline: list[DialogueResult] | None = None
) -> ReportData:
    from pytest_mtmcs.analysis.metrics import bucket_table
    from pytest_mtmcs.outcome.gate import BaselineComparison, SuiteOutcome

    comps = []
    data = ReportData(suites=[], info={"model": "m", "judge": {"name": "rules"}})
    if baseline is not None:
        bc = BaselineComparison("old", True)
        bc.comparisons = compare_buckets(results, baseline, B)
        bc.flips = item_flips(results, baseline, B)
        comps.append(bc)
        data.baseline_results[("s", "old")] = baseline
    data.suites.append(
        SuiteOutcome(
            "s",
            {"name": "s"},
            B,
            results,
            bucket_table(results, B),
            bucket_table(results, B, by="setting"),
            bucket_table(results, B, by="modality"),
            [],
            comps,
            0,
            [],
        )
    )
    return data


def test_text_is_escaped_and_flip_lists_capped(tmp_path):
    evil = '<script>alert("x")</script><img src="http://evil.example/x.png">'
    base = [dr(i, "unsafe", True, 1 + i % 7) for i in range(60)]
    now = [dr(i, "unsafe", False, 1 + i % 7, text=evil) for i in range(60)]
    write_files(tmp_path, outcome(now, base))
    html = (tmp_path / "report.html").read_text()
    assert "<script>" not in html and "evil.example" in html
    assert "&lt;script&gt;" in html
    check_html(tmp_path / "report.html")
    from pytest_mtmcs.outcome.html import MAX_HTML_FLIPS

    assert html.count("<details") == MAX_HTML_FLIPS
    assert f"and {60 - MAX_HTML_FLIPS} more" in html
    md = (tmp_path / "summary.md").read_text()
    assert md.count("\n- `d") == MAX_MD_FLIPS
    assert f"and {60 - MAX_MD_FLIPS} more" in md


def test_safemt_and_mtmcs_sections(tmp_path):
    from dataclasses import replace

    results = []
    for t in range(40):
        for k in (1, 2, 4, 6, 8):
            r = dr(t * 10 + k, "unsafe", (t + k) % 3 != 0, k)
            results.append(replace(r, setting="scripted", trajectory=f"t{t}"))
    tagged = tuple(QuestionResult("mcq", "A", "A", "A", "safe_intent") for _ in range(2))
    results.append(replace(dr(9999, "safe", True, 3), questions=tagged))
    write_files(tmp_path, outcome(results))
    html = (tmp_path / "report.html").read_text()
    assert "SafeMT: attack success rate per dialogue length and Safety Index" in html
    assert '<td class="num">0.702</td>' in html  # e^-1 / sum of e^-k over 1,2,4,6,8
    assert "MTMCS-Bench: intent accuracy per setting and modality" in html
    page = check_html(tmp_path / "report.html")
    assert len(page.images) == 2  # buckets + SafeMT ASR (scripted dialogues have no depth curve)


@st.composite
def runs(draw: st.DrawFn) -> tuple[list[DialogueResult], list[DialogueResult]]:
    n = draw(st.integers(1, 25))
    now, was = [], []
    for i in range(n):
        label = draw(st.sampled_from(["safe", "unsafe"]))
        turns = draw(st.integers(1, 9))
        bits = draw(st.text("01", max_size=3))
        pair = f"p{i // 2}" if draw(st.booleans()) else None
        now.append(dr(i, label, draw(st.booleans()), turns, pair=pair, bits=bits))
        was.append(dr(i, label, draw(st.booleans()), turns, pair=pair, bits=bits[::-1]))
    return now, was


@settings(max_examples=40, deadline=None)
@given(runs())
def test_table_round_trip_keeps_the_statistics(pair):
    """A comparison from two results tables equals the comparison from the results."""
    now, was = pair
    back_now = results_from_rows(result_rows(outcome(now)), "t")
    back_was = results_from_rows(result_rows(outcome(was)), "t")
    assert compare_buckets(back_now, back_was, B) == compare_buckets(now, was, B)
    assert item_flips(back_now, back_was, B) == item_flips(now, was, B)
    for a, b in zip(back_now, now, strict=True):
        assert (a.turn_labels, a.intent_correct, a.intent_total, a.risk_turn, a.pair) == (
            b.turn_labels,
            b.intent_correct,
            b.intent_total,
            b.risk_turn,
            b.pair,
        )


def test_markdown_without_baseline_has_no_flip_section():
    md = summary_markdown(outcome([dr(1, "unsafe", True, 2), dr(2, "safe", False, 5)]))
    assert "| 2-3 | 1 | safety | 1.000 | - | - |" in md
    assert "| 4-5 | 1 | helpfulness | 0.000 | - | - |" in md
    assert "regressed" not in md
