"""Every failure ends as a clear error before anything runs, or as a counted error; never as a
verdict from something that does not exist, and never as an internal traceback.

Driven end to end through pytester (in process, with and without `-n 2`).
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from pytest_mtmcs.backends.cache import ResponseCache
from pytest_mtmcs.errors import MtmcsError

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "suites" / "mtmcs_mini"


def small_suite(dest: Path, lines: int = 8) -> Path:
    """The bundled suite cut to its first `lines` dialogues (whole twin groups)."""
    shutil.copytree(BUNDLED, dest, ignore=shutil.ignore_patterns("*.py"))
    jsonl = dest / "dialogues.jsonl"
    kept = jsonl.read_text(encoding="utf-8").splitlines()[:lines]
    jsonl.write_text("\n".join(kept) + "\n", encoding="utf-8")
    return dest


@pytest.fixture
def suite(pytester: pytest.Pytester) -> Path:
    return small_suite(pytester.path / "suites" / "mini")


def no_traceback(text: str) -> None:
    __tracebackhide__ = True
    for marker in ("Traceback", "INTERNALERROR", "AttributeError", "NoneType"):
        assert marker not in text, f"{marker!r} in the output:\n{text[-3000:]}"


# --- finding 1: a judge that cannot exist -------------------------------------------------------


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_judge_without_base_url_is_a_usage_error_before_anything_runs(
    pytester, suite, monkeypatch, xdist
):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    result = pytester.runpytest(
        "suites",
        "-p",
        "no:cacheprovider",
        "--mtmcs-model=scripted:refuse-all",
        "--mtmcs-judge=rubric:openai:MODEL",
        "--mtmcs-base-url=http://127.0.0.1:9/v1",
        *xdist,
    )
    text = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, text
    assert "--mtmcs-judge-base-url" in text and "OPENAI_BASE_URL" in text
    assert "--mtmcs-judge=rubric:openai:MODEL" in text
    # Nothing ran: no outcome letters, no REGRESSED, no summary.
    assert "REGRESSED" not in text and "passed" not in text and "xfailed" not in text
    no_traceback(text)


@pytest.mark.parametrize(
    "judge", ["safe-unsafe:openai:M", "guard:openai:M", "guard:prompt:openai:M", "rubric:"]
)
def test_every_model_judge_is_checked_at_configure_time(pytester, suite, monkeypatch, judge):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    result = pytester.runpytest(
        "suites", "-p", "no:cacheprovider", "--mtmcs-model=scripted:refuse-all",
        f"--mtmcs-judge={judge}",
    )  # fmt: skip
    text = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, text
    name, _, rest = judge.partition(":")
    assert f"--mtmcs-judge={name}:{rest.removeprefix('prompt:')}" in text
    no_traceback(text)


def test_judge_base_url_from_the_environment_is_accepted(pytester, suite, monkeypatch):
    # The environment variable the message names does fix it (collection only: no server).
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    result = pytester.runpytest(
        "suites", "-p", "no:cacheprovider", "--collect-only", "-q",
        "--mtmcs-model=scripted:refuse-all", "--mtmcs-judge=rubric:openai:MODEL",
    )  # fmt: skip
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()


def test_openai_model_without_base_url_is_a_usage_error(pytester, suite, monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    result = pytester.runpytest("suites", "-p", "no:cacheprovider", "--mtmcs-model=openai:M")
    text = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, text
    assert "--mtmcs-base-url" in text and "OPENAI_BASE_URL" in text
    no_traceback(text)


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_a_backend_that_cannot_be_built_stops_the_run_with_its_message(pytester, suite, xdist):
    """A model that cannot be built is a usage error before any dialogue runs: one message
    naming the option, exit code 4, no test run, serial and under xdist."""
    result = pytester.runpytest(
        "suites", "-p", "no:cacheprovider", "--mtmcs-model=hf:/no/such/model/folder", *xdist
    )
    text = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, text
    assert "--mtmcs-model=hf:/no/such/model/folder" in text
    assert "gate: NOT RUN: usage error" in text
    assert "re-run to resume" not in text and "INTERRUPTED" not in text
    outcomes = result.parseoutcomes() if "passed" in text or "error" in text else {}
    assert not outcomes.get("passed") and not outcomes.get("xfailed") and not outcomes.get("errors")
    no_traceback(text)


# --- unusable output folders ------------------------------------------------------------------


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["serial", "xdist"])
@pytest.mark.parametrize(
    ("option", "name"), [("--mtmcs-report", "report"), ("--mtmcs-cache", "c.sqlite")]
)
def test_output_under_a_file_is_a_usage_error(pytester, suite, xdist, option, name):
    # Root ignores permission bits, so "not writable" is a path whose parent is a file.
    (pytester.path / "afile").write_text("x")
    result = pytester.runpytest(
        "suites", "--mtmcs-model=scripted:refuse-all", f"{option}=afile/sub/{name}", *xdist
    )
    text = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, text
    assert option in text and "afile" in text
    no_traceback(text)


def test_read_only_cache_folder_is_a_usage_error(pytester, suite, monkeypatch):
    # A read-only file system, as the cache sees it: the folder cannot be created.
    real_mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):
        if "ro-cache" in str(self):
            raise OSError(30, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    result = pytester.runpytest(
        "suites", "--mtmcs-model=scripted:refuse-all", "--mtmcs-cache=ro-cache/c.sqlite"
    )
    text = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, text
    assert "ro-cache" in text and "Read-only file system" in text
    no_traceback(text)


def test_full_disk_on_cache_write_is_our_error_naming_the_file(tmp_path, monkeypatch):
    cache = ResponseCache(tmp_path / "c.sqlite")
    conn = cache._connection()

    class FullDisk:
        """The connection, except that writing fails as SQLite does on a full disk."""

        def __getattr__(self, name):
            return getattr(conn, name)

        def executemany(self, *args, **kwargs):
            raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(cache, "_connection", lambda: FullDisk())
    with pytest.raises(MtmcsError) as exc:
        cache.put_many({"k": "v"})
    assert "c.sqlite" in str(exc.value) and "full" in str(exc.value)
    assert "--mtmcs-cache" in str(exc.value)
    cache.close()


# --- finding 4: a suite under the test paths and given with --mtmcs-suite --------------------


def test_a_broken_suite_under_the_test_paths_and_given_again_is_reported_once(pytester, suite):
    lines = (suite / "dialogues.jsonl").read_text(encoding="utf-8").splitlines()
    lines[2] = (
        lines[2]
        .replace('"label": "safe"', '"label": "weird"')
        .replace('"label": "unsafe"', '"label": "weird"')
    )
    (suite / "dialogues.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = pytester.runpytest(
        "suites", "--mtmcs-suite=suites/mini", "--mtmcs-model=scripted:refuse-all",
        "-p", "no:cacheprovider",
    )  # fmt: skip
    text = result.stdout.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, text
    # One collection error; the end of the run repeats it once as why the gate did not run.
    said = [line for line in result.outlines if "dialogues.jsonl:3: field 'label'" in line]
    assert len([line for line in said if "usage error" not in line]) == 1, text
    assert len([line for line in said if line.startswith("gate: NOT RUN: usage error:")]) == 1
    assert result.parseoutcomes().get("errors") == 1
    no_traceback(text)


@pytest.mark.parametrize(
    ("specs", "xdist"),
    [
        (["suites", "--mtmcs-suite=suites/mini"], []),
        (["suites", "--mtmcs-suite=suites/mini/suite.toml"], []),
        (["suites", "--mtmcs-suite=./suites/mini/"], []),
        (["--mtmcs-suite=suites/mini", "--mtmcs-suite=suites/mini/suite.toml"], []),
        (["suites", "--mtmcs-suite=suites/mini/suite.toml"], ["-n", "2"]),
    ],
    ids=["folder", "toml", "dot-slash", "twice", "toml-xdist"],
)
def test_one_suite_named_twice_runs_once(pytester, suite, specs, xdist):
    result = pytester.runpytest(
        *specs, "--mtmcs-model=scripted:refuse-all", "-p", "no:cacheprovider", *xdist
    )
    outcomes = result.parseoutcomes()
    assert sum(outcomes.get(k, 0) for k in ("passed", "xfailed", "failed")) == 8, outcomes


def test_full_disk_at_the_end_of_the_run_is_a_failed_run_not_a_traceback(
    pytester, suite, monkeypatch
):
    import errno

    import pytest_mtmcs.outcome.report

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "rep/report.html")

    monkeypatch.setattr(pytest_mtmcs.outcome.report, "write_report", full_disk)
    result = pytester.runpytest(
        "suites", "-p", "no:cacheprovider", "--mtmcs-model=scripted:refuse-all",
        "--mtmcs-report=rep",
    )  # fmt: skip
    text = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.TESTS_FAILED, text
    assert "END OF RUN FAILED: no space left on device (rep/report.html)" in text
    no_traceback(text)
