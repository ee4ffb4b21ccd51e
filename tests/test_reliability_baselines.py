"""Baselines under version control: a merge conflict, a truncated copy or a hand edit is one
clear `file:line` error (in the run and in `pytest-mtmcs compare`), and `--snapshot-update`
afterwards rewrites the file cleanly, byte for byte what a fresh recording writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_mtmcs.baseline.strict_reader import check_text
from pytest_mtmcs.cli.main import main as cli_main
from pytest_mtmcs.errors import ConfigError
from tests.test_reliability import no_traceback, small_suite

RUN = ("--mtmcs-model=scripted:refuse-all", "-p", "no:cacheprovider", "--mtmcs-baseline=b")


@pytest.fixture
def recorded(pytester: pytest.Pytester) -> Path:
    small_suite(pytester.path / "suites" / "mini")
    result = pytester.runpytest("suites", *RUN, "--snapshot-update")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    path = pytester.path / "baselines" / "b" / "mtmcs_mini.ambr"
    assert path.is_file()
    return path


def conflict(text: str) -> tuple[str, int]:
    lines = text.split("\n")
    i = next(n for n, line in enumerate(lines) if line.startswith("  verdict="))
    theirs = lines[i].replace("verdict=", "verdict=x", 1)
    lines[i : i + 1] = ["<<<<<<< HEAD", lines[i], "=======", theirs, ">>>>>>> other-branch"]
    return "\n".join(lines), i + 1


def truncated(text: str) -> tuple[str, int]:
    cut = text[: int(len(text) * 0.6)]
    cut = cut[: cut.rindex("\n  ") + 10]  # mid-way through an entry's data line
    lines = cut.split("\n")
    opened = max(n for n, line in enumerate(lines) if line.startswith("# name:"))
    return cut, opened + 1


def hand_edited(text: str) -> tuple[str, int]:
    lines = text.split("\n")
    i = [n for n, line in enumerate(lines) if line.startswith("  verdict=")][3]
    lines[i] = lines[i].replace(" score=", " score: ", 1)
    return "\n".join(lines), i + 1


def stray_line(text: str) -> tuple[str, int]:
    lines = text.split("\n")
    i = [n for n, line in enumerate(lines) if line == "# ---"][2]
    lines.insert(i + 1, "verdict=safe added by hand")
    return "\n".join(lines), i + 2


BREAKS = {
    "conflict": conflict,
    "truncated": truncated,
    "hand-edited": hand_edited,
    "stray-line": stray_line,
}


@pytest.mark.parametrize("kind", sorted(BREAKS))
def test_broken_baseline_is_a_file_line_error_then_snapshot_update_rewrites_it(
    pytester, recorded, kind
):
    clean = recorded.read_bytes()
    broken, line = BREAKS[kind](clean.decode("utf-8"))
    recorded.write_text(broken, encoding="utf-8")

    result = pytester.runpytest("suites", *RUN)
    text = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, text
    assert f"baselines/b/mtmcs_mini.ambr:{line}:" in text, text
    assert "--snapshot-update" in text
    no_traceback(text)

    update = pytester.runpytest("suites", *RUN, "--snapshot-update")
    assert update.ret == pytest.ExitCode.OK, update.stdout.str()
    no_traceback(update.stdout.str())
    assert recorded.read_bytes() == clean


def test_a_partial_update_cannot_merge_into_a_broken_baseline(pytester, recorded):
    broken, line = conflict(recorded.read_text(encoding="utf-8"))
    recorded.write_text(broken, encoding="utf-8")
    partial = pytester.runpytest("suites", *RUN, "--snapshot-update", "-k", "safe")
    text = partial.stdout.str() + partial.stderr.str()
    assert partial.ret == pytest.ExitCode.USAGE_ERROR, text
    assert f"mtmcs_mini.ambr:{line}:" in text and "cannot merge" in text
    no_traceback(text)
    assert recorded.read_text(encoding="utf-8") == broken


def test_cli_compare_names_file_and_line(pytester, recorded, capsys):
    broken, line = conflict(recorded.read_text(encoding="utf-8"))
    bad = pytester.path / "mtmcs_mini.ambr"
    bad.write_text(broken, encoding="utf-8")
    rc = cli_main(["compare", str(bad), str(recorded)])
    err = capsys.readouterr()
    assert rc != 0
    assert f"{bad}:{line}:" in err.err + err.out
    assert "conflict marker" in err.err + err.out
    no_traceback(err.err + err.out)


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("", None, "empty"),
        ("# name: x\n", 1, "first line"),
        ("# serializer version: mtmcs-1\n# name: a\n  x\n", 2, "truncated"),
        ("# serializer version: mtmcs-1\n# name: a\n  x\n# name: b\n", 4, "not closed"),
        ("# serializer version: mtmcs-1\n# name: a\n  x\n# ---\n# name: a\n  x\n# ---\n", 5, "also on line 2"),
        ("# serializer version: mtmcs-1\n# name: a\n  x\n  y\n# ---\n", 4, "2 lines"),
        ("# serializer version: mtmcs-1\n# ---\n", 2, "outside an entry"),
        ("# serializer version: mtmcs-1\n# name: a\n# ---\n", 2, "no data"),
        ("# serializer version: mtmcs-1\n=======\n", 2, "conflict marker"),
    ],
)  # fmt: skip
def test_strict_reader_names_the_line(text, line, words):
    with pytest.raises(ConfigError) as exc:
        check_text(text, "f.ambr")
    where = "f.ambr:" if line is None else f"f.ambr:{line}:"
    assert str(exc.value).startswith(where if line else "f.ambr: ")
    assert words in str(exc.value)


def test_strict_reader_accepts_the_stored_baselines():
    from pytest_mtmcs.baseline.store import check_baseline_file

    stored = sorted((Path(__file__).resolve().parents[1] / "baselines").glob("*/*.ambr"))
    assert stored
    for path in stored:
        check_baseline_file(path)
