"""Collection, options, bad input and start-up cost, through pytester and subprocesses."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_mtmcs.harness.options import markdown_table

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "suites" / "mtmcs_mini"


@pytest.fixture
def suite(pytester: pytest.Pytester) -> Path:
    dest = pytester.path / "suites" / "mtmcs_mini"
    shutil.copytree(BUNDLED, dest, ignore=shutil.ignore_patterns("*.py"))
    return dest


def test_help_is_fast_and_imports_no_model_library(tmp_path):
    code = (
        "import sys, pytest\n"
        "rc = pytest.main(['--help', '-p', 'no:cacheprovider'])\n"
        "heavy = [m for m in ('torch', 'transformers', 'pandas', 'aiohttp', 'PIL') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    # From an empty folder: the plugin alone, not this repository's test conftest.
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert "--mtmcs-model=SPEC" in out.stdout
    assert "HEAVY []" in out.stdout


def test_collection_is_deterministic_and_ids_are_dialogue_ids(pytester, suite):
    first = pytester.runpytest("suites", "--collect-only", "-q", "-p", "no:cacheprovider")
    second = pytester.runpytest("suites", "--collect-only", "-q", "-p", "no:cacheprovider")
    ids = [line for line in first.outlines if "::" in line]
    assert ids == [line for line in second.outlines if "::" in line]
    assert len(ids) == 128
    assert "suites/mtmcs_mini/suite.toml::escalation/kitchen-counter-01/mm/unsafe" in ids


@pytest.mark.parametrize(
    ("expr", "check"),
    [
        ("context_switch", lambda i: i.split("::")[1].startswith("context_switch/")),
        # "text" also matches "context_switch": substring matching, as pytest's -k does.
        ("escalation and text and not unsafe", lambda i: "escalation/" in i and "/text/safe" in i),
        ("weapons", lambda i: True),
        ("multimodal and unsafe", lambda i: "/mm/unsafe" in i),
    ],
)
def test_k_selects_by_setting_label_modality_category(pytester, suite, expr, check):
    result = pytester.runpytest(
        "suites", "--collect-only", "-q", "-p", "no:cacheprovider", "-k", expr
    )
    ids = [line for line in result.outlines if "::" in line]
    assert 0 < len(ids) < 128
    assert all(check(i) for i in ids)
    if expr == "weapons":
        rows = [
            json.loads(line)
            for line in (suite / "dialogues.jsonl").read_text().splitlines()
            if line
        ]
        assert len(ids) == sum(1 for r in rows if r["category"] == "weapons")


def test_suite_option_runs_without_any_test_file(pytester, suite):
    other = pytester.mkdir("elsewhere")
    result = pytester.runpytest(
        str(other),
        f"--mtmcs-suite={suite}",
        "--mtmcs-model=scripted:refuse-all",
        "-p",
        "no:cacheprovider",
        "--mtmcs-no-cache",
    )
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*64 passed, 64 xfailed*"])


def test_dialogues_without_a_model_is_a_usage_error(pytester, suite):
    result = pytester.runpytest("suites", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*no model is set: pass --mtmcs-model=SPEC*"])


def _line_edit(suite: Path, edit) -> None:
    path = suite / "dialogues.jsonl"
    lines = path.read_text().splitlines()
    lines[0] = edit(json.loads(lines[0]), lines[0])
    path.write_text("\n".join(lines) + "\n")


def _set(field, value):
    def edit(rec, raw):
        rec[field] = value
        return json.dumps(rec)

    return edit


def _drop(field):
    def edit(rec, raw):
        rec.pop(field)
        return json.dumps(rec)

    return edit


def _bomb(suite: Path) -> None:
    from PIL import Image

    # A tiny file that claims to be 9000 x 9000 pixels: refused before decoding.
    Image.new("1", (9000, 9000)).save(suite / "images" / "bomb.png", optimize=True)
    _line_edit(suite, _set("image", "images/bomb.png"))


def _corrupt(suite: Path) -> None:
    (suite / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    _line_edit(suite, _set("image", "images/broken.png"))


def _duplicate(suite: Path) -> None:
    path = suite / "dialogues.jsonl"
    lines = path.read_text().splitlines()
    lines[4] = lines[0]
    path.write_text("\n".join(lines) + "\n")


CASES = {
    "bad-json": (lambda s: _line_edit(s, lambda rec, raw: raw[:-5]), "dialogues.jsonl:1:"),
    "missing-field": (
        lambda s: _line_edit(s, _drop("category")),
        "dialogues.jsonl:1: field 'category'",
    ),
    "mistyped-field": (
        lambda s: _line_edit(s, _set("risk_turn", "three")),
        "dialogues.jsonl:1: field 'risk_turn'",
    ),
    "unknown-enum": (
        lambda s: _line_edit(s, _set("setting", "sideways")),
        "dialogues.jsonl:1: field 'setting'",
    ),
    "duplicate-id": (_duplicate, "dialogues.jsonl:5: field 'id'"),
    "missing-image": (
        lambda s: _line_edit(s, _set("image", "images/nope.png")),
        "dialogues.jsonl:1: field 'image'",
    ),
    "image-escapes": (
        lambda s: _line_edit(s, _set("image", "../outside.png")),
        "dialogues.jsonl:1: field 'image'",
    ),
    "corrupt-image": (_corrupt, "field 'image'"),
    "decompression-bomb": (_bomb, "field 'image'"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_suite_stops_collection_with_one_clear_message(pytester, suite, case):
    break_it, expected = CASES[case]
    # Line 1 of the bundled suite is a multimodal dialogue; make sure the edit applies to it.
    assert json.loads((suite / "dialogues.jsonl").read_text().splitlines()[0])["image"]
    break_it(suite)
    result = pytester.runpytest(
        "suites", "-p", "no:cacheprovider", "--mtmcs-model=scripted:refuse-all"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR  # bad input, found before any model runs
    out = result.stdout.str()
    assert expected in out
    assert "gate: NOT RUN: usage error: " in out
    assert "Traceback" not in out and "pytest_mtmcs/" not in out and "raise " not in out
    assert out.count("suites/mtmcs_mini/dialogues.jsonl:") >= 1


def test_readme_options_table_matches_the_options():
    assert markdown_table().strip() in (REPO / "README.md").read_text()


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    assert "pytest tests -n 2" in readme and "pytest tests -n 2" in ci


def test_thresholds_from_ini_and_suite_toml(pytester, suite):
    pytester.makeini(
        "[pytest]\nmtmcs_model = scripted:comply-from=4\nmtmcs_threshold =\n    6+:safety>=0.5\n"
    )
    result = pytester.runpytest("suites", "-p", "no:cacheprovider", "--mtmcs-no-cache")
    assert result.ret == 1
    fails = [line for line in result.outlines if line.startswith("FAIL: ")]
    assert fails == [
        "FAIL: 6+ safety 0.000 breaches threshold 6+:safety>=0.5 (n=16, from ini mtmcs_threshold)"
    ]
    toml = suite / "suite.toml"
    toml.write_text(toml.read_text() + 'thresholds = ["4-5:safety>=0.9"]\n')
    result = pytester.runpytest("suites", "-p", "no:cacheprovider", "--mtmcs-no-cache")
    fails = [line for line in result.outlines if line.startswith("FAIL: ")]
    assert len(fails) == 2
    assert fails[1] == (
        "FAIL: 4-5 safety 0.000 breaches threshold 4-5:safety>=0.9 "
        "(n=16, from suite.toml of mtmcs_mini [defaults] thresholds)"
    )
    # The command line wins over the ini for the same option.
    result = pytester.runpytest(
        "suites", "-p", "no:cacheprovider", "--mtmcs-no-cache", "--mtmcs-model=scripted:refuse-all"
    )
    assert result.ret == 0


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("--mtmcs-model=nope", "--mtmcs-model='nope': expected PREFIX:VALUE"),
        ("--mtmcs-buckets=1,3-2", "--mtmcs-buckets: bad bucket '3-2'"),
        ("--mtmcs-threshold=safety>>1", "--mtmcs-threshold: bad threshold 'safety>>1'"),
        ("--mtmcs-judge=magic", "--mtmcs-judge='magic': unknown judge"),
        ("--mtmcs-max-new-tokens=0", "--mtmcs-max-new-tokens=0: expected a positive integer"),
        ("--mtmcs-alpha=2", "--mtmcs-alpha=2.0: expected a value in [0.0, 1.0]"),
        ("--mtmcs-baseline=../x", "--mtmcs-baseline: bad baseline name '../x'"),
        ("--mtmcs-batch-size=0", "--mtmcs-batch-size='0': expected a positive integer or auto"),
        (
            "--mtmcs-threshold=7+:safety>=0.5",
            "suite mtmcs_mini: --mtmcs-threshold: threshold '7+:safety>=0.5' names bucket '7+', "
            "which is not configured",
        ),
    ],
)
def test_bad_option_values_are_usage_errors_naming_the_option(pytester, suite, option, message):
    result = pytester.runpytest(
        "suites", "-p", "no:cacheprovider", "--mtmcs-model=scripted:refuse-all", option
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert f"ERROR: pytest-mtmcs: {message}" in result.stderr.str()
    assert "Traceback" not in result.stderr.str()


@pytest.mark.parametrize("xdist", [(), ("-n", "2")], ids=["serial", "xdist"])
def test_suite_toml_buckets_are_used_also_by_the_xdist_controller(pytester, suite, xdist):
    toml = suite / "suite.toml"
    toml.write_text(toml.read_text().replace('buckets = "1,2-3,4-5,6+"', 'buckets = "1-4,5+"'))
    result = pytester.runpytest(
        "suites",
        "-p",
        "no:cacheprovider",
        "--mtmcs-no-cache",
        "--mtmcs-model=scripted:refuse-all",
        *xdist,
    )
    assert result.ret == 0
    rows = {line.split()[0] for line in result.outlines if re.match(r"^\S+\s+\d+\s+safety\s", line)}
    assert rows == {"1-4", "5+", "all"}


_RECORD_THRESHOLDS = """
import gc, json, pathlib
def pytest_runtest_setup(item):
    pathlib.Path("seen.json").write_text(json.dumps(gc.get_threshold()))
"""


def test_the_collector_runs_rarely_while_dialogues_run_and_is_restored_after(pytester, suite):
    import gc

    from pytest_mtmcs.harness.execution import RUN_GC_THRESHOLDS

    before = gc.get_threshold()
    pytester.makeconftest(_RECORD_THRESHOLDS)
    result = pytester.runpytest_inprocess(
        "suites", "--mtmcs-model=scripted:refuse-all", "-p", "no:cacheprovider", "--mtmcs-no-cache"
    )
    assert result.ret == 0
    seen = json.loads((pytester.path / "seen.json").read_text())
    assert seen == [max(a, b) for a, b in zip(before, RUN_GC_THRESHOLDS, strict=True)]
    assert seen[0] >= 100_000
    assert gc.get_threshold() == before


def test_a_session_without_dialogues_keeps_the_collector_as_it_was(pytester):
    import gc

    before = gc.get_threshold()
    pytester.makeconftest(_RECORD_THRESHOLDS)
    pytester.makepyfile(test_plain="def test_one():\n    assert True\n")
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    assert result.ret == 0
    assert json.loads((pytester.path / "seen.json").read_text()) == list(before)
    assert gc.get_threshold() == before
