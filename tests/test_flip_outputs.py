"""Every output that shows a dialogue's flip shows the same one: the one rule's (`flip_of`).

For any mix of baseline and current outcomes per dialogue (ok, not ok, a backend error, a judge
error, missing on either side), with the primary baseline compared, refused or absent, under each
gate, the flip of a dialogue is the same in:

- the pytest item: its stash (`FLIP_KEY`), its JUnit property `mtmcs_flip`, the `mtmcs_status` its
  report carries, the status word (`REGRESSED`, `FIXED`) and the `-r` list of flipped dialogues;
- its test status (`outcome.test_status`): pass, xfail, fail or error and the reason given;
- `results.csv` (column `flip`);
- the terminal summary's flip lines, `summary.md`'s and `report.html`'s flip lists, and the counts
  beside them (one per flip, dialogues missing now apart);
- `pytest-mtmcs merge`: its summary's flip lines and counts, its JUnit XML (`mtmcs_flip`, the
  test's outcome) and its count of failed tests.

Each output is computed by the plugin's own code from the same results: the item's by
`DialogueReports` over `DialogueRunner.flip` (as pytest drives a dialogue test's setup, call and
report), the end-of-run outputs by `outcome.finish.finish` (what a pytest session and a merge both
call; merge's on the rows as read back from the shards) and `outcome.junit.write_junit` (merge's
JUnit). No pytest session in the property's loop; one run end to end through pytester shows the
same on a dialogue that errors after an ok baseline.

It found one divergence, since fixed: a dialogue that errored now and had no baseline entry was
`error` to `flip_of` (item, results.csv, JUnit) but `new` in the counts lines (`item_flips` put
it in `only_current` without asking `flip_of`); `test_an_error_without_baseline_entry_is_counted_as_errored`
keeps it fixed.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pytest_mtmcs.analysis.buckets import Buckets
from pytest_mtmcs.analysis.flips import flip_of
from pytest_mtmcs.baseline.comparable import PrimaryBaseline
from pytest_mtmcs.baseline.store import BaselineSet, write_baseline
from pytest_mtmcs.harness.controller import RunController
from pytest_mtmcs.harness.execution import DialogueRunner
from pytest_mtmcs.harness.items import DIALOGUE_KEY, DialogueFailure
from pytest_mtmcs.harness.reporting import FLIP_KEY, STATUS_ATTR, STATUS_KEY, DialogueReports
from pytest_mtmcs.outcome import html
from pytest_mtmcs.outcome.finish import RunInfo, finish
from pytest_mtmcs.outcome.junit import write_junit
from pytest_mtmcs.outcome.model import EndOptions, run_header
from pytest_mtmcs.outcome.test_status import KNOWN
from pytest_mtmcs.outcome.test_status import TestStatus as Status  # not collected as a test
from pytest_mtmcs.records import Dialogue, DialogueResult, ReplyResult, Turn
from pytest_mtmcs.testing import StubServer

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "suites" / "mtmcs_mini"
SUITE = "s"
BASELINE = "old"
NODE = "suites/s/suite.toml"
BUCKETS = "1,2-3,4-5,6+"
META: dict[str, Any] = {
    "name": SUITE,
    "version": "1",
    "content_hash": "h",
    "spec": SUITE,
    "defaults": {"buckets": BUCKETS},
    "settings": {},
    "dialogues": 8,
    "nodeid": NODE,
}
INFO: dict[str, Any] = {"model": "m", "fingerprint": {}, "judge": {"name": "rules"}}
# A baseline recorded with another judge: its comparison is refused.
OTHER_JUDGE: dict[str, Any] = {**INFO, "judge": {"name": "ngram"}}

OUTCOMES = ("ok", "not_ok", "error", "judge_error")
ERRORS = ("error", "judge_error")
MISSING = "missing"  # before: no baseline entry; now: not run (deselected)
LISTED = ("regressed", "fixed")  # the flips the lists name dialogue by dialogue
COUNTS = re.compile(r"(\d+) (regressed|fixed|still failing|errored|new|missing from this run)")


@dataclass(frozen=True)
class Case:
    """One dialogue: its label, length and outcome in the baseline and now."""

    label: str
    turns: int
    before: str
    now: str


@dataclass(frozen=True)
class Run:
    """Dialogues `d<i>/<label>`, the primary baseline's state and the options of the run."""

    cases: tuple[Case, ...]
    baseline: str  # compared | refused | absent
    gate: str
    max_judge_errors: int

    def ids(self) -> Iterator[tuple[str, Case]]:
        for i, c in enumerate(self.cases):
            yield f"d{i}/{c.label}", c


def expected_flip(c: Case, baseline: str) -> str:
    """The flip rule, written out from the outcomes alone (checked against `flip_of` too)."""
    if c.now in ERRORS:
        return "error"
    if baseline == "refused":
        return "not_compared"
    if baseline == "absent" or c.before in (MISSING, *ERRORS):
        return "new"
    return {
        ("ok", "ok"): "same",
        ("ok", "not_ok"): "regressed",
        ("not_ok", "ok"): "fixed",
        ("not_ok", "not_ok"): "still_failing",
    }[c.before, c.now]


def result(did: str, c: Case, outcome: str) -> DialogueResult:
    unsafe = c.label == "unsafe"
    good, bad = ("safe", "unsafe") if unsafe else ("helpful", "over_refusal")
    fine, wrong = ("refusal", "compliance") if unsafe else ("compliance", "refusal")
    replies = [ReplyResult(k, f"reply {k}", fine) for k in range(1, c.turns)]
    last, verdict, error = ReplyResult(c.turns, "last reply", fine), good, None
    if outcome == "not_ok":
        last, verdict = ReplyResult(c.turns, "last reply", wrong), bad
    elif outcome == "judge_error":
        last = ReplyResult(c.turns, "last reply", None, judge_error="judge timed out")
        verdict = "judge_error"
    elif outcome == "error":
        verdict, error = "error", "HTTP 503 from the model server"
    if outcome != "error":
        replies.append(last)
    return DialogueResult(
        SUITE,
        did,
        None,
        c.label,
        "escalation",
        "multimodal",
        "cat",
        c.turns,
        1 if unsafe else None,
        verdict,
        1.0 if outcome == "ok" else 0.0,
        tuple(replies),
        error=error,
    )


def dialogue(r: DialogueResult) -> Dialogue:
    turns = tuple(Turn("user", f"user turn {k}") for k in range(1, r.user_turns + 1))
    return Dialogue(
        SUITE,
        r.id,
        cast(Any, r.label),
        cast(Any, r.setting),
        cast(Any, r.modality),
        r.category,
        turns,
        risk_turn=r.risk_turn,
    )


# --- the pytest side: one dialogue test, its setup, call and report ------------------------------


class ComparingRunner(DialogueRunner):
    """The comparing half of `DialogueRunner` (`flip`, `bucket_of`, as the plugin calls them)
    over results given here: no engine, no backend."""

    def __init__(self, primary: PrimaryBaseline, results: Mapping[str, DialogueResult]) -> None:
        self.primary = primary
        self._buckets = {SUITE: Buckets.parse(BUCKETS)}
        self.results = dict(results)

    def run_item(self, item: Any) -> DialogueResult:
        return self.results[item.name]


@dataclass
class Item:
    """What `DialogueReports` reads and writes of a `DialogueItem`."""

    name: str
    nodeid: str
    stash: pytest.Stash = field(default_factory=pytest.Stash)
    user_properties: list[tuple[str, object]] = field(default_factory=list)


@dataclass(frozen=True)
class ItemView:
    stash: str
    junit: str
    report: str
    word: str | None  # the status word: REGRESSED, FIXED or none
    listed: str | None  # in the controller's list of flipped dialogues (`-r`)
    status: Status
    outcome: str  # passed, xfailed, failed, error: what pytest reports of the test


def run_item(reports: DialogueReports, controller: RunController, r: DialogueResult) -> ItemView:
    """Drives one dialogue test as pytest does: setup (runs the dialogue, records its flip; a
    failed run is an error of the setup), the call (pass, xfail or fail), the report."""
    item = Item(r.id, f"{NODE}::{r.id}")
    item.stash[DIALOGUE_KEY] = dialogue(r)
    when, outcome = "call", "passed"
    try:
        reports.setup(cast(Any, item))
    except pytest.fail.Exception:
        when, outcome = "setup", "failed"
    else:
        try:
            reports.check(cast(Any, item))
        except DialogueFailure:
            outcome = "failed"
    report = pytest.TestReport(
        item.nodeid, (NODE, None, r.id), {}, cast(Any, outcome), None, cast(Any, when)
    )
    wrapper = reports.pytest_runtest_makereport(
        cast(Any, item), cast(Any, SimpleNamespace(when=when))
    )
    next(wrapper)
    try:
        wrapper.send(report)
    except StopIteration as stop:
        report = stop.value
    teststatus = reports.pytest_report_teststatus(report, cast(Any, None))
    word = str(teststatus[2][0]).lower() if teststatus and teststatus[2] else None
    before = len(controller.flipped)
    controller.pytest_runtest_logreport(report)
    listed = [w.lower() for w, nodeid, _ in controller.flipped[before:] if nodeid == item.nodeid]
    shown = (
        "error" if when == "setup" else "xfailed" if hasattr(report, "wasxfail") else report.outcome
    )
    return ItemView(
        stash=item.stash[FLIP_KEY],
        junit=str(dict(item.user_properties)["mtmcs_flip"]),
        report=getattr(report, STATUS_ATTR),
        word=word,
        listed=listed[0] if listed else None,
        status=item.stash[STATUS_KEY],
        outcome=shown,
    )


def status_flip(s: Status) -> str | None:
    """The flip a test status shows in its outcome and reason; None: it shows none (a pass)."""
    if s.outcome == "error" or s.reason.startswith("judge error"):
        return "error"
    if s.reason.startswith("REGRESSION against baseline"):
        return "regressed"
    if s.outcome == "passed":
        return "fixed" if s.reason == "fixed" else None
    for flip in ("still_failing", "not_compared"):
        if s.reason.endswith(KNOWN[flip]):
            return flip
    if s.reason.endswith(("(no baseline entry)", "(no baseline to compare with)")):
        return "new"
    raise AssertionError(f"a test status that shows no flip: {s}")


# --- the end of the run: terminal, report files, merge's JUnit ---------------------------------


def listed_in_terminal(
    lines: list[str], name: str = BASELINE
) -> tuple[dict[str, str], dict[str, int] | None]:
    """(dialogue id -> the flip list naming it, the counts line) of the terminal summary."""
    listed: dict[str, str] = {}
    counts = None
    for line in lines:
        m = re.match(r"  (REGRESSED|fixed) \[[^\]]*\] (\S+): ", line)
        if m:
            listed[m[2]] = m[1].lower()
        if line.startswith(f"against {name}: "):
            counts = parse_counts(line)
    return listed, counts


def listed_in_markdown(
    md: str, name: str = BASELINE
) -> tuple[dict[str, str], dict[str, int] | None]:
    listed: dict[str, str] = {}
    counts = None
    section = None
    for line in md.splitlines():
        m = re.fullmatch(r"<details><summary>\d+ (\w+)</summary>", line)
        if m:
            section = m[1]
        elif line == "</details>":
            section = None
        m = re.match(r"- `([^`]+)` \[", line)
        if m:
            assert section is not None, line
            listed[m[1]] = section
        if line.startswith(f"**against `{name}`:** "):
            counts = parse_counts(line)
    return listed, counts


def listed_in_html(page: str, name: str = BASELINE) -> tuple[dict[str, str], dict[str, int] | None]:
    listed: dict[str, str] = {}
    for m in re.finditer(r"<h4>(Regressed|Fixed) \(\d+\)</h4>(.*?)(?=<h4>|<h3>|</body>)", page):
        for did in re.findall(r"<summary><code>([^<]*)</code>", m[2]):
            listed[did] = m[1].lower()
    m = re.search(rf"<h3>Against {name}</h3><p>([^<]*)</p>", page)
    return listed, None if m is None else parse_counts(m[1])


def parse_counts(text: str) -> dict[str, int]:
    return {what: int(n) for n, what in COUNTS.findall(text)}


def junit_cases(path: Path) -> dict[str, tuple[str, str]]:
    """dialogue id -> (its `mtmcs_flip`, its outcome) in a JUnit XML file."""
    out: dict[str, tuple[str, str]] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        name = case.get("name") or ""
        if name.startswith("gate["):
            continue
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        kinds = [c.tag for c in case if c.tag in ("failure", "error", "skipped")]
        outcome = {"failure": "failed", "error": "error", "skipped": "xfailed"}.get(
            kinds[0] if kinds else "", "passed"
        )
        out[name] = (str(props["mtmcs_flip"]), outcome)
    return out


# --- the property --------------------------------------------------------------------------------


@dataclass
class Shown:
    """What each output shows, per dialogue id, and the counts lines."""

    flips: dict[str, dict[str, str | None]]
    outcomes: dict[str, dict[str, str]]
    counts: dict[str, dict[str, int] | None]
    csv_ids: set[str]
    junit_ids: set[str]
    test_failures: int


def outputs(run: Run, tmp: Path, mp: pytest.MonkeyPatch) -> Shown:
    root = tmp / "baselines"
    before = {did: result(did, c, c.before) for did, c in run.ids() if c.before != MISSING}
    now = {did: result(did, c, c.now) for did, c in run.ids() if c.now != MISSING}
    if run.baseline != "absent":
        info = INFO if run.baseline == "compared" else OTHER_JUDGE
        write_baseline(
            root, BASELINE, SUITE, run_header(META, info), before.values(), keep_others=False
        )
    options = EndOptions(
        gate=run.gate,
        max_judge_errors=run.max_judge_errors,
        buckets=BUCKETS,
        report_dir=str(tmp / "report"),
    )

    # The pytest side: each dialogue test of this process, as the plugin runs it.
    primary = PrimaryBaseline(
        BaselineSet(root, [BASELINE]),
        allow_mismatch=False,
        rejudge=False,
        header=lambda suite: run_header(META, INFO),
        rejudger=lambda: None,
    )
    settings_ = SimpleNamespace(gate=run.gate, max_judge_errors=run.max_judge_errors)
    reports = DialogueReports(cast(Any, settings_), ComparingRunner(primary, now))
    controller = RunController.__new__(RunController)
    controller.flipped, controller.results, controller.local = [], {}, None
    items = {did: run_item(reports, controller, r) for did, r in now.items()}

    # The end of the pytest session: its summary and report files.
    mp.delenv("GITHUB_STEP_SUMMARY", raising=False)
    outcome = finish(
        list(now.values()),
        {SUITE: META},
        BaselineSet(root, [BASELINE]),
        options,
        RunInfo(INFO, {SUITE: META}),
    )
    # pytest-mtmcs merge: the rows as it reads them back from the shards' results.jsonl, the same
    # `finish` (its summary), its JUnit XML and its count of failed tests.
    shard_rows = [
        DialogueResult.from_dict(json.loads(json.dumps(r.to_dict()))) for r in now.values()
    ]
    merged = finish(
        shard_rows,
        {SUITE: META},
        BaselineSet(root, [BASELINE]),
        replace(options, report_dir=None),
        RunInfo(INFO, {SUITE: META}),
    )
    junit = junit_cases(write_junit(tmp / "merge.xml", merged.suites, options))
    merge_terminal, merge_counts = listed_in_terminal(merged.lines)
    report = tmp / "report"
    with open(report / "results.csv", encoding="utf-8", newline="") as fh:
        rows = {row["id"]: row for row in csv.DictReader(fh)}
    terminal, terminal_counts = listed_in_terminal(outcome.lines)
    md, md_counts = listed_in_markdown((report / "summary.md").read_text(encoding="utf-8"))
    page, page_counts = listed_in_html((report / "report.html").read_text(encoding="utf-8"))

    flips: dict[str, dict[str, str | None]] = {}
    outcomes: dict[str, dict[str, str]] = {}
    for did, item in items.items():
        flips[did] = {
            "item stash": item.stash,
            "item JUnit property": item.junit,
            "item report mtmcs_status": item.report,
            "status word": item.word,
            "-r flipped list": item.listed,
            "test status": status_flip(item.status),
            "results.csv": rows[did]["flip"],
            "terminal list": terminal.get(did),
            "summary.md list": md.get(did),
            "report.html list": page.get(did),
            "merge terminal list": merge_terminal.get(did),
            "merge JUnit property": junit[did][0],
        }
        outcomes[did] = {
            "test status": item.status.outcome,
            "pytest": item.outcome,
            "merge JUnit": junit[did][1],
        }
    # A dialogue listed by an output that has no test of it (not run now) is a flip shown too.
    for where, listed in (
        ("terminal list", terminal),
        ("summary.md list", md),
        ("report.html list", page),
        ("merge terminal list", merge_terminal),
    ):
        for did, flip in listed.items():
            flips.setdefault(did, {})[where] = flip
    return Shown(
        flips=flips,
        outcomes=outcomes,
        counts={
            "terminal": terminal_counts,
            "summary.md": md_counts,
            "report.html": page_counts,
            "merge terminal": merge_counts,
        },
        csv_ids=set(rows),
        junit_ids=set(junit),
        test_failures=merged.test_failures,
    )


def check(run: Run) -> None:
    with tempfile.TemporaryDirectory() as d, pytest.MonkeyPatch.context() as mp:
        # The plots are pictures of rates (no flip in them), and most of the time of a report.
        for plot in ("bucket_plot", "depth_plot", "safemt_plot"):
            mp.setattr(html, plot, lambda *a, **k: "")
        shown = outputs(run, Path(d), mp)

    expected: dict[str, dict[str, str | None]] = {}
    present = {did for did, c in run.ids() if c.now != MISSING}
    for did, c in run.ids():
        if c.now == MISSING:
            continue
        flip = expected_flip(c, run.baseline)
        absent = c.before == MISSING or run.baseline == "absent"
        before = None if absent else result(did, c, c.before)
        rule = flip_of(result(did, c, c.now), before, compared=run.baseline != "refused")
        assert rule == flip, (c, run.baseline)
        listed = flip if flip in LISTED else None
        ok_now = c.now == "ok"
        expected[did] = {
            "item stash": flip,
            "item JUnit property": flip,
            "item report mtmcs_status": flip,
            "status word": listed,
            "-r flipped list": listed,
            # A passing test says `fixed`, nothing else: same, new and not compared look alike.
            "test status": None if ok_now and flip != "fixed" else flip,
            "results.csv": flip,
            "terminal list": listed,
            "summary.md list": listed,
            "report.html list": listed,
            "merge terminal list": listed,
            "merge JUnit property": flip,
        }
    wrong = {
        did: {
            output: {"shows": shown.flips.get(did, {}).get(output), "rule": flip}
            for output, flip in row.items()
            if shown.flips.get(did, {}).get(output) != flip
        }
        for did, row in expected.items()
    }
    wrong = {did: w for did, w in wrong.items() if w}
    assert not wrong, f"outputs that disagree with the flip rule: {wrong}"
    assert shown.flips.keys() == expected.keys()  # nothing listed of a dialogue not run now
    assert shown.csv_ids == shown.junit_ids == present

    # The test's outcome is the same on the pytest side and in merge's JUnit, and follows the flip.
    failing = 0
    for did, c in run.ids():
        if c.now == MISSING:
            continue
        o = shown.outcomes[did]
        assert o["test status"] == o["pytest"] == o["merge JUnit"], (did, o)
        flip = expected[did]["item stash"]
        tolerated = c.now == "judge_error" and run.max_judge_errors > 0
        assert (o["pytest"] == "error") == (flip == "error" and not tolerated), (did, o)
        if flip == "regressed":
            assert o["pytest"] == ("failed" if run.gate != "buckets" else "xfailed"), (did, o)
        failing += o["pytest"] in ("failed", "error")
    assert shown.test_failures == failing

    # The counts beside the lists: one per flip, dialogues missing now counted apart.
    if run.baseline != "compared" or not present:
        assert set(shown.counts.values()) == {None}
        return
    tally = Counter(expected_flip(c, run.baseline) for _, c in run.ids() if c.now != MISSING)
    want = {
        "regressed": tally["regressed"],
        "fixed": tally["fixed"],
        "still failing": tally["still_failing"],
        "errored": tally["error"],
        "new": tally["new"],
        "missing from this run": sum(
            1 for _, c in run.ids() if c.now == MISSING and c.before != MISSING
        ),
    }
    assert shown.counts["terminal"] == want
    assert shown.counts["summary.md"] == want
    assert shown.counts["merge terminal"] == want
    assert shown.counts["report.html"] == want


def dialogues(now: tuple[str, ...]) -> st.SearchStrategy[Case]:
    return st.builds(
        Case,
        label=st.sampled_from(("unsafe", "safe")),
        turns=st.integers(1, 7),
        before=st.sampled_from((*OUTCOMES, MISSING)),
        now=st.sampled_from(now),
    )


@st.composite
def runs(draw: st.DrawFn) -> Run:
    # At least one dialogue ran: a run of none has no suite to report.
    cases = draw(st.lists(dialogues((*OUTCOMES, MISSING)), max_size=5))
    cases.insert(draw(st.integers(0, len(cases))), draw(dialogues(OUTCOMES)))
    return Run(
        cases=tuple(cases),
        baseline=draw(st.sampled_from(("compared", "refused", "absent"))),
        gate=draw(st.sampled_from(("buckets", "items", "both"))),
        max_judge_errors=draw(st.sampled_from((0, 1))),
    )


# Every pair of outcomes in one run, under each state of the baseline: checked on every run of
# the test, whatever Hypothesis draws.
EVERY_PAIR = tuple(
    Case(("unsafe", "safe")[i % 2], 1 + i % 7, before, now)
    for i, (before, now) in enumerate(
        (b, n) for b in (*OUTCOMES, MISSING) for n in (*OUTCOMES, MISSING)
    )
)


@settings(max_examples=100, deadline=None)
@example(Run(EVERY_PAIR, "compared", "items", 0))
@example(Run(EVERY_PAIR, "refused", "both", 1))
@example(Run(EVERY_PAIR, "absent", "buckets", 0))
@example(
    Run(
        tuple(c for c in EVERY_PAIR if not (c.before == MISSING and c.now in ERRORS)),
        "compared",
        "buckets",
        1,
    )
)
@given(runs())
def test_every_output_shows_the_same_flip(run: Run) -> None:
    check(run)


def test_an_error_without_baseline_entry_is_counted_as_errored() -> None:
    check(
        Run(
            (Case("unsafe", 2, MISSING, "error"), Case("unsafe", 2, "ok", "ok")),
            baseline="compared",
            gate="buckets",
            max_judge_errors=0,
        )
    )


# --- end to end ----------------------------------------------------------------------------------

TARGET = "context_switch/apartment-keypad-30/mm/unsafe"
REFUSAL = "I'm sorry, but I can't help with that."


def test_a_dialogue_ok_in_the_baseline_that_errors_now_shows_error_everywhere(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recorded ok, then the model server refuses its requests (HTTP 400, not retried): the
    terminal, the JUnit property, results.csv and summary.md all say `error`, never a flip."""
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    dest = pytester.path / "suites" / "mini"
    shutil.copytree(BUNDLED, dest, ignore=shutil.ignore_patterns("*.py"))
    jsonl = dest / "dialogues.jsonl"
    lines = jsonl.read_text(encoding="utf-8").splitlines()[:4]  # apartment-keypad-30's twins
    jsonl.write_text("\n".join(lines) + "\n", encoding="utf-8")
    target = json.loads(lines[1])
    assert target["id"] == TARGET
    # Every request of the target's, and none of its twins', carries its first user turn.
    first_turn = json.dumps(target["turns"][0]["content"])[1:-1]
    failing: list[bool] = []

    def faults(index: int, body: dict[str, Any]) -> str | None:
        return "400" if failing and first_turn in json.dumps(body["messages"]) else None

    with StubServer(respond=lambda body: REFUSAL, faults=faults) as server:
        args = (
            "suites", "-p", "no:cacheprovider", "--mtmcs-no-cache", "--mtmcs-baseline=demo",
            "--mtmcs-model=openai:stub-model", f"--mtmcs-base-url={server.base_url}",
        )  # fmt: skip
        recorded = pytester.runpytest(*args, "--snapshot-update")
        assert recorded.ret == 0, recorded.stdout.str()[-3000:]
        failing.append(True)
        result = pytester.runpytest(*args, "--mtmcs-report=out", "--junitxml=junit.xml")
    text = result.stdout.str()
    assert result.ret == 1, text[-3000:]
    assert result.parseoutcomes()["errors"] == 1

    # The terminal: the test is an ERROR, counted as errored against the baseline, not listed.
    result.stdout.fnmatch_lines(
        [f"*ERROR at setup of {TARGET}*", f"{TARGET}: model backend failed: *400 Bad Request*"]
    )
    counts = "0 regressed, 0 fixed, 2 still failing, 1 errored, 0 new, 0 missing from this run"
    assert f"against demo: {counts}" in result.outlines
    assert listed_in_terminal(result.outlines, "demo") == ({}, parse_counts(counts))

    # pytest's JUnit XML: the property and the error.
    cases = {c.get("name"): c for c in ET.parse(pytester.path / "junit.xml").iter("testcase")}
    props = {p.get("name"): p.get("value") for p in cases[TARGET].iter("property")}
    assert props["mtmcs_flip"] == "error" and props["mtmcs_verdict"] == "error"
    assert cases[TARGET].find("error") is not None

    # results.csv, summary.md, report.html.
    out = pytester.path / "out"
    with open(out / "results.csv", encoding="utf-8", newline="") as fh:
        rows = {row["id"]: row for row in csv.DictReader(fh)}
    assert (rows[TARGET]["flip"], rows[TARGET]["baseline_demo_verdict"]) == ("error", "safe")
    assert {rows[d]["flip"] for d in rows if d != TARGET} <= {"same", "still_failing"}
    md = (out / "summary.md").read_text(encoding="utf-8")
    assert listed_in_markdown(md, "demo") == ({}, parse_counts(counts))
    page = (out / "report.html").read_text(encoding="utf-8")
    assert listed_in_html(page, "demo") == ({}, parse_counts(counts))
