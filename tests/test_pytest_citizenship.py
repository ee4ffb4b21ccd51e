"""A pytest user's habits work: the JUnit XML, the counts line, `-r`, `--lf`, `-x`, `-m`/`-k`,
`--fixtures`/`--co` without a model, the `mtmcs` fixture, two suites of one name, a refused
baseline, `pytest-mtmcs compare` on report folders, `pytest-mtmcs merge --junitxml`. End to end
through pytester, serial and with `-n 2` where the process layout matters."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.test_reliability import no_traceback


def _warm_up_pandas() -> None:
    """pytester's in-process runs drop the modules first imported inside them; numpy cannot be
    imported twice in one process, so pandas (which `compare` uses here) is loaded first."""
    import io

    import pandas as pd

    pd.DataFrame({"a": [1]}).to_parquet(io.BytesIO())


_warm_up_pandas()

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "suites" / "mtmcs_mini"
XDIST = pytest.mark.parametrize("xdist", [(), ("-n", "2")], ids=["serial", "xdist"])


@pytest.fixture
def project(pytester: pytest.Pytester) -> Path:
    shutil.copytree(
        BUNDLED, pytester.path / "suites" / "mtmcs_mini", ignore=shutil.ignore_patterns("*.py")
    )
    pytester.makeini("[pytest]\n")
    done = pytester.runpytest_subprocess(
        "suites", "-p", "no:cacheprovider", "--mtmcs-model=scripted:refuse-all",
        "--mtmcs-baseline=a", "--snapshot-update",
    )  # fmt: skip
    assert done.ret == 0, done.stdout.str()[-2000:]
    return pytester.path


def junit(path: Path) -> tuple[dict[str, str], list[str], list[str]]:
    root = ET.parse(path).getroot()
    suite = root.find("testsuite") if root.tag == "testsuites" else root
    assert suite is not None
    failed = [c.get("name", "") for c in suite.iter("testcase") if c.find("failure") is not None]
    names = [c.get("name", "") for c in suite.iter("testcase")]
    return dict(suite.attrib), failed, names


@XDIST
def test_junit_xml_shows_the_gate(pytester: pytest.Pytester, project: Path, xdist) -> None:
    regress = pytester.runpytest_subprocess(
        "suites", "-p", "no:cacheprovider", "--mtmcs-model=scripted:comply-from=4",
        "--mtmcs-baseline=a", "--junitxml=regress.xml", *xdist,
    )  # fmt: skip
    assert regress.ret == 1
    attrs, failed, names = junit(project / "regress.xml")
    assert int(attrs["failures"]) == len(failed) > 0
    assert "gate[6+:safety:vs:a]" in failed and "gate[4-5:safety:vs:a]" in failed
    assert all(name.startswith("gate[") for name in failed), failed
    assert "gate[1:safety:vs:a]" in names  # passing cells are tests too
    # The counts line agrees with the exit code.
    last = regress.outlines[-1]
    assert " failed" in last.replace("xfailed", "") and "regressed" in last, last
    clean = pytester.runpytest_subprocess(
        "suites", "-p", "no:cacheprovider", "--mtmcs-model=scripted:refuse-all",
        "--mtmcs-baseline=a", "--junitxml=clean.xml", *xdist,
    )  # fmt: skip
    assert clean.ret == 0
    attrs, failed, _ = junit(project / "clean.xml")
    assert attrs["failures"] == "0" and attrs["errors"] == "0" and failed == []
    assert " failed" not in clean.outlines[-1].replace("xfailed", "")


def test_r_lists_regressed_and_lf_reruns_the_failing_cells(
    pytester: pytest.Pytester, project: Path
) -> None:
    args = ("suites", "--mtmcs-model=scripted:comply-from=4", "--mtmcs-baseline=a")
    first = pytester.runpytest_subprocess(*args, "-rx")
    assert first.ret == 1
    out = first.stdout.str()
    assert "REGRESSED suites/mtmcs_mini/suite.toml::" in out
    regressed = out.count("\nREGRESSED suites/")
    assert regressed > 0
    again = pytester.runpytest_subprocess(*args, "--lf")
    assert again.ret == 1
    outcomes = again.parseoutcomes()
    ran = sum(outcomes.get(k, 0) for k in ("passed", "failed", "xfailed", "regressed", "fixed"))
    # The failing cells' not-ok dialogues and the cells again: far fewer than 128 dialogues.
    assert outcomes.get("regressed", 0) > 0 and ran < 128, outcomes
    assert "gate: FAILED" in again.stdout.str()


def test_x_stops_and_the_gate_never_passes_a_partial_run(
    pytester: pytest.Pytester, project: Path
) -> None:
    result = pytester.runpytest_subprocess(
        "suites", "-p", "no:cacheprovider", "--mtmcs-model=scripted:comply-all",
        "--mtmcs-gate=items", "--mtmcs-baseline=a", "--snapshot-update", "-x",
    )  # fmt: skip
    assert result.ret == 1
    out = result.stdout.str()
    assert "gate: NOT RUN: partial run: stopped early" in out, out[-2000:]
    before = (project / "baselines" / "a" / "mtmcs_mini.ambr").read_text()
    assert "verdict=unsafe" not in before  # the comply-all run was not recorded


def test_markers_select_dialogues_and_other_tests_run_without_a_model(
    pytester: pytest.Pytester, project: Path
) -> None:
    pytester.makepyfile(test_plain="def test_plain():\n    assert 1 + 1 == 2\n")
    markers = pytester.runpytest("--markers")
    assert "@pytest.mark.mtmcs(suite, label, setting, modality, category, bucket)" in (
        markers.stdout.str()
    )
    only_plain = pytester.runpytest("-m", "not mtmcs", "-p", "no:cacheprovider")
    only_plain.assert_outcomes(passed=1)
    for expr, n in (("mtmcs", 128), ("mtmcs(label='unsafe')", 64), ("mtmcs(bucket='6+')", 32)):
        co = pytester.runpytest("--co", "-q", "-m", expr, "-p", "no:cacheprovider")
        assert co.ret == 0
        assert sum(1 for line in co.outlines if "::" in line) == n, (expr, co.outlines[-3:])
    fixtures = pytester.runpytest("--fixtures", "-p", "no:cacheprovider")
    assert fixtures.ret == 0 and "mtmcs [session scope]" in fixtures.stdout.str()
    selected = pytester.runpytest("-p", "no:cacheprovider", "-k", "unsafe")
    assert selected.ret == pytest.ExitCode.USAGE_ERROR
    assert "no model is set" in selected.stdout.str() + selected.stderr.str()


@XDIST
def test_the_mtmcs_fixture_runs_a_suite_for_a_users_own_test(
    pytester: pytest.Pytester, project: Path, xdist
) -> None:
    pytester.makepyfile(
        test_mine="""
        def test_long_dialogues(mtmcs):
            run = mtmcs.run_suite("suites/mtmcs_mini")
            assert len(run.results) == 128
            assert run.rate("safety", bucket="6+").value == 0.0   # comply-all
            assert run.rate("helpfulness").value == 1.0
            one = run.results["escalation/stove-pots-31/mm/unsafe"]
            assert one.verdict == "unsafe" and one.turn_labels[-1] == "harmful"
            assert {r.id for r in run.not_ok} == {
                i for i, r in run.results.items() if r.label == "unsafe"
            }

        def test_one_dialogue(mtmcs):
            from pytest_mtmcs.suite import load_suite
            d = load_suite("suites/mtmcs_mini").dialogues[0]
            assert mtmcs.run_dialogue(d).id == d.id
        """
    )
    result = pytester.runpytest_subprocess(
        "test_mine.py", "-p", "no:cacheprovider", "--mtmcs-model=scripted:comply-all", *xdist
    )
    result.assert_outcomes(passed=2)
    no_model = pytester.runpytest_subprocess("test_mine.py", "-p", "no:cacheprovider")
    no_model.assert_outcomes(failed=2)
    assert "the mtmcs fixture needs a model" in no_model.stdout.str()


@XDIST
def test_two_suites_of_one_name_are_one_collection_error(
    pytester: pytest.Pytester, project: Path, xdist
) -> None:
    shutil.copytree(project / "suites" / "mtmcs_mini", project / "suites" / "copy")
    result = pytester.runpytest_subprocess(
        "suites", "-p", "no:cacheprovider", "--mtmcs-model=scripted:refuse-all", *xdist
    )
    out = result.stdout.str() + result.stderr.str()
    assert result.ret not in (0, 1), out[-2000:]
    assert "suite name 'mtmcs_mini' is defined twice" in out
    assert "copy" in out and "mtmcs_mini/suite.toml" in out
    assert "passed" not in result.outlines[-1]
    no_traceback(out)


def test_a_refused_baseline_produces_no_flips(pytester: pytest.Pytester, project: Path) -> None:
    result = pytester.runpytest_subprocess(
        "suites", "-p", "no:cacheprovider", "--mtmcs-model=scripted:comply-from=4",
        "--mtmcs-baseline=a", "--mtmcs-judge=rules", "--mtmcs-report=rep", "-rx",
    )  # fmt: skip
    assert result.ret == 1
    out = result.stdout.str()
    assert "comparison with baseline 'a' refused" in out
    assert "regressed" not in result.outlines[-1] and "fixed" not in result.outlines[-1]
    assert "\nREGRESSED " not in out and "\nFIXED " not in out
    import pandas as pd

    flips = set(pd.read_parquet(project / "rep" / "results.parquet")["flip"])
    assert flips <= {"not_compared", "same", "error"}, flips


def test_compare_takes_report_folders(pytester: pytest.Pytester, project: Path) -> None:
    from pytest_mtmcs.cli.main import main

    for name, model in (("rep_a", "refuse-all"), ("rep_b", "comply-from=4")):
        done = pytester.runpytest_subprocess(
            "suites", "-p", "no:cacheprovider", f"--mtmcs-model=scripted:{model}",
            f"--mtmcs-report={name}",
        )  # fmt: skip
        assert done.ret == 0
    assert main(["compare", str(project / "rep_b"), str(project / "rep_a")]) == 1
    assert main(["compare", str(project / "rep_a"), str(project / "rep_a")]) == 0
    assert main(["compare", str(project / "suites"), str(project / "rep_a")]) == 4


def test_merge_writes_the_merged_junit_xml(pytester: pytest.Pytester, project: Path) -> None:
    from pytest_mtmcs.cli.main import main

    for k in (1, 2):
        done = pytester.runpytest_subprocess(
            "suites", "-p", "no:cacheprovider", "--mtmcs-model=scripted:comply-from=4",
            "--mtmcs-baseline=a", f"--mtmcs-shard={k}/2", f"--mtmcs-report=s{k}",
        )  # fmt: skip
        assert done.ret in (0, 1)
    rc = main(
        [
            "merge", str(project / "s1"), str(project / "s2"),
            "--baseline-dir", str(project / "baselines"), "--junitxml", str(project / "m.xml"),
        ]
    )  # fmt: skip
    assert rc == 1
    attrs, failed, names = junit(project / "m.xml")
    assert "gate[6+:safety:vs:a]" in failed and int(attrs["failures"]) == len(failed)
    assert sum(1 for n in names if not n.startswith("gate[")) == 128
