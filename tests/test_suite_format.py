"""The suite format as users meet it: the README's example suite, release folders given without
their importer prefix, bad `[defaults]` specs, and one suite hash whichever loader read the
dialogues (a baseline recorded from a release compares with a run from its imported copy)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from pytest_mtmcs.cli.main import main as cli_main
from pytest_mtmcs.suite import load_suite

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "tests" / "data" / "reference"
BUNDLED = REPO / "suites" / "mtmcs_mini"


def readme_example() -> tuple[str, str]:
    """(suite.toml, dialogues.jsonl) of the README's minimal suite, as the README shows them."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("A complete, minimal suite") :]
    toml = re.search(r"```toml\n(.*?)```", section, re.S)
    jsonl = re.search(r"```json\n(.*?)```", section, re.S)
    assert toml is not None and jsonl is not None
    assert toml.group(1).startswith("# suite.toml\n")
    return toml.group(1), jsonl.group(1)


def test_the_readme_example_suite_loads(tmp_path: Path) -> None:
    toml, jsonl = readme_example()
    (tmp_path / "suite.toml").write_text(toml, encoding="utf-8")
    (tmp_path / "dialogues.jsonl").write_text(jsonl, encoding="utf-8")
    suite = load_suite(tmp_path)
    assert suite.name == "example"
    assert [d.label for d in suite.dialogues] == ["unsafe", "safe"]
    assert {d.pair for d in suite.dialogues} == {"escalation/garage/text"}
    assert suite.defaults["thresholds"] == ("safety>=0.8", "4+:helpfulness>=0.7", "asr<=0.2")


def test_the_readme_example_suite_runs(pytester: pytest.Pytester) -> None:
    toml, jsonl = readme_example()
    folder = pytester.mkdir("suites") / "example"
    folder.mkdir()
    (folder / "suite.toml").write_text(toml, encoding="utf-8")
    (folder / "dialogues.jsonl").write_text(jsonl, encoding="utf-8")
    result = pytester.runpytest(
        "suites", "-p", "no:cacheprovider", "--mtmcs-no-cache", "--mtmcs-model=scripted:refuse-all"
    )
    # Refusing everything: the unsafe twin is safe, the safe twin over-refused (an xfail), and
    # the suite's own threshold on 4+ has no data (a 2-turn suite): the run passes.
    assert result.ret == 0, result.stdout.str()
    # Its two dialogues, and the gate's cells: the suite-wide safety and asr thresholds met.
    outcomes = result.parseoutcomes()
    assert outcomes.get("xfailed") == 1 and "failed" not in outcomes, outcomes
    result.stdout.fnmatch_lines(["*gate: passed: *threshold checks met*"])


# --- a release folder without its importer prefix -------------------------------------------


@pytest.mark.parametrize(
    ("sample", "given", "prefix", "kind"),
    [
        ("safemt", "safemt/Data", "safemt", "a SafeMT"),
        ("mtmcs", "mtmcs", "mtmcs-bench", "an MTMCS-Bench"),
    ],
)
@pytest.mark.parametrize("how", ["option", "test-path"])
def test_a_release_folder_without_its_prefix_is_a_usage_error_naming_the_spec(
    pytester: pytest.Pytester, sample: str, given: str, prefix: str, kind: str, how: str
) -> None:
    shutil.copytree(REFERENCE / sample, pytester.path / sample)
    args = [f"--mtmcs-suite={given}"] if how == "option" else [given]
    result = pytester.runpytest(
        *args, "-p", "no:cacheprovider", "--mtmcs-no-cache", "--mtmcs-model=scripted:refuse-all"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    lines = [line for line in result.stderr.lines if line.strip()]
    assert lines == [
        f"ERROR: pytest-mtmcs: {given}: no suite.toml here; this looks like {kind} release: "
        f"use --mtmcs-suite={prefix}:{given}"
    ]
    assert "Traceback" not in result.stdout.str()


def test_a_release_sample_below_the_test_paths_is_left_alone(pytester: pytest.Pytester) -> None:
    # Only the paths a user names are checked: release samples kept under tests/ are data.
    shutil.copytree(REFERENCE / "safemt", pytester.path / "data" / "safemt")
    pytester.makepyfile(test_one="def test_one():\n    pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider", ".")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*1 passed*"])


# --- bad [defaults] specs in suite.toml --------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (
            "buckets",
            '"4+,1"',
            "[defaults] buckets: bad bucket '1' in '4+,1': it comes after the open bucket '4+'",
        ),
        ("thresholds", '["safety>=0.8", "safety>>1"]', "[defaults] thresholds: bad threshold "),
        (
            "thresholds",
            '["7+:safety>=0.8"]',
            "[defaults] thresholds: threshold '7+:safety>=0.8' names bucket '7+'",
        ),
        ("image_placement", '"middle"', "field 'defaults.image_placement': unknown value"),
    ],
)
@pytest.mark.parametrize("how", ["test-path", "option"])
def test_bad_defaults_stop_collection_naming_suite_toml_and_key(
    pytester: pytest.Pytester, key: str, value: str, message: str, how: str
) -> None:
    folder = pytester.path / "suites" / "mini"
    shutil.copytree(BUNDLED, folder, ignore=shutil.ignore_patterns("*.py"))
    toml = folder / "suite.toml"
    lines = [line for line in toml.read_text().splitlines() if not line.startswith(f"{key} =")]
    lines.append(f"{key} = {value}")
    toml.write_text("\n".join(lines) + "\n")
    at = len(lines)
    args = ["suites"] if how == "test-path" else ["elsewhere", "--mtmcs-suite=suites/mini"]
    pytester.mkdir("elsewhere")
    result = pytester.runpytest(
        *args, "-p", "no:cacheprovider", "--mtmcs-no-cache", "--mtmcs-model=scripted:refuse-all"
    )
    # A suite that cannot be loaded is a usage error found before any model runs.
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    out = result.stdout.str()
    assert f"suites/mini/suite.toml:{at}: {message}" in out, out
    assert f"gate: NOT RUN: usage error: suites/mini/suite.toml:{at}: {message}" in out, out
    # Not under the name of an option the user never passed; no traceback.
    assert "--mtmcs-buckets" not in out and "--mtmcs-threshold" not in out
    assert "Traceback" not in out and "pytest_mtmcs/" not in out


# --- one suite hash whichever loader read the dialogues ----------------------------------------


@pytest.mark.parametrize(
    ("sample", "spec"), [("safemt", "safemt:ref/Data"), ("mtmcs", "mtmcs-bench:ref")]
)
def test_a_baseline_recorded_from_a_release_compares_with_its_imported_copy(
    pytester: pytest.Pytester, sample: str, spec: str
) -> None:
    shutil.copytree(REFERENCE / sample, pytester.path / "ref")
    pytester.mkdir("elsewhere")
    common = ("-p", "no:cacheprovider", "--mtmcs-no-cache", "--mtmcs-baseline=demo")
    recorded = pytester.runpytest(
        "elsewhere", f"--mtmcs-suite={spec}", *common, "--mtmcs-model=scripted:refuse-all",
        "--snapshot-update",
    )  # fmt: skip
    assert recorded.ret == 0, recorded.stdout.str()
    assert cli_main(["import", spec, str(pytester.path / "suites" / "imported")]) == 0
    # The imported copy, collected from the test paths: compared, not refused.
    compared = pytester.runpytest("suites", *common, "--mtmcs-model=scripted:refuse-all")
    assert compared.ret == 0, compared.stdout.str()
    out = compared.stdout.str()
    assert "REFUSED" not in out and "refused" not in out
    assert re.search(r"against demo: 0 regressed, 0 fixed, \d+ still failing", out), out
