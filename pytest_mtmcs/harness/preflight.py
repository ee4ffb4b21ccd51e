"""What stops a run cleanly instead of with a traceback, at each stage where it can fail.

- Before anything runs: `check_specs` at configure time (options only, nothing built, nothing
  heavy imported): the model backend and the judge must be able to exist, e.g. an `openai:` model
  or judge model needs a base URL; `check_outputs` once dialogues are collected: the response
  cache, the report folder and the named baselines must be usable. Either raises `ConfigError`
  naming the option (and the environment variable) that would fix it.
- At the first dialogue: `building` turns a backend or judge that fails to build into that
  dialogue's failure and stops the run.
- At the end: `EndOfRunFailed` turns an OSError or one of our errors while aggregating, gating,
  reporting or writing a baseline into the summary and a failed run.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from pytest_mtmcs.errors import ConfigError, MtmcsError
from pytest_mtmcs.harness import options as opts

ENV_BASE_URL = "OPENAI_BASE_URL"
MODEL_JUDGES = ("rubric", "safe-unsafe", "guard")
BUILD_ERROR_KEY = pytest.StashKey[str]()


def check_specs(session: Any) -> None:
    """The model and judge specs against the options that build them; raises ConfigError."""
    config = session.config
    model = session.model_spec
    if model:
        prefix = model.split(":", 1)[0]
        if prefix == "openai" and not (
            opts.value(config, "--mtmcs-base-url") or os.environ.get(ENV_BASE_URL)
        ):
            raise ConfigError(
                f"--mtmcs-model={model}: the OpenAI-compatible server needs a base URL: pass "
                f"--mtmcs-base-url=http://HOST:8000/v1 or set {ENV_BASE_URL}"
            )
    judge = str(opts.value(config, "--mtmcs-judge") or "")
    _check_judge(judge, session)
    # Output folders, without creating anything (configure time also serves --help): a path
    # under a file, or a folder that cannot be written, fails now rather than at the end of the
    # run (the report) or at the first dialogue (the cache). Checked on the xdist controller too,
    # which writes the report but never collects.
    report = opts.value(config, "--mtmcs-report")
    if report:
        _check_creatable(_under_root(config, str(report)), "--mtmcs-report", folder=True)
    cache = opts.value(config, "--mtmcs-cache")
    if cache and not opts.value(config, "--mtmcs-no-cache"):
        _check_creatable(Path(str(cache)), "--mtmcs-cache", folder=False)


def _under_root(config: Any, path: str) -> Path:
    folder = Path(path)
    return folder if folder.is_absolute() else Path(config.rootpath) / folder


def _check_creatable(path: Path, option: str, *, folder: bool) -> None:
    """`path` exists as the right kind, or could be created: its nearest existing ancestor is a
    writable folder. Creates nothing."""
    if path.exists():
        if folder and not path.is_dir():
            raise ConfigError(f"{option}={path}: exists and is not a folder")
        if not folder and path.is_dir():
            raise ConfigError(f"{option}={path}: is a folder; expected a file path")
        return
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{option}={path}: cannot be created: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{option}={path}: cannot be created: {parent} is not writable")


def _check_judge(spec: str, session: Any) -> None:
    name, _, rest = spec.partition(":")
    if name == "cascade":
        # cascade:LOCAL,MODEL_JUDGE: both halves are judge specs of their own.
        for part in rest.split(",", 1):
            if part.strip() and part.strip().partition(":")[0] != "cascade":
                _check_judge(part.strip(), session)
        return
    if name in MODEL_JUDGES:
        from pytest_mtmcs.judges.model_judges import check_judge_spec

        check_judge_spec(name, rest, session.backend_options("--mtmcs-judge-base-url"))


def check_outputs(session: Any) -> None:
    """The cache and the report folder can be written: raises ConfigError naming the option."""
    config = session.config
    report = opts.value(config, "--mtmcs-report")
    if report and not getattr(config, "workerinput", None):
        _check_writable_folder(_under_root(config, str(report)), "--mtmcs-report")
    _check_baselines(session)
    if opts.value(config, "--mtmcs-no-cache"):
        return
    try:
        # Opened here rather than at the first dialogue: the session keeps it for the run.
        if session._cache is None:
            session._cache = session._open_cache()
    except MtmcsError as exc:
        raise ConfigError(f"{exc}") from None
    except OSError as exc:
        raise ConfigError(
            f"response cache: {_os_reason(exc)} (--mtmcs-cache / --mtmcs-no-cache)"
        ) from None


def _check_baselines(session: Any) -> None:
    """Every named baseline of every collected suite reads cleanly (conflict markers, truncation,
    hand edits are file:line errors), before any model runs. Under --snapshot-update a broken
    primary baseline is replaced, unless the run is partial and would have to merge into it."""
    baselines = session.baselines()
    if not baselines.names:
        return
    c = session.config
    partial = bool(c.option.keyword or c.option.markexpr) or any("::" in str(a) for a in c.args)
    for suite in sorted(session.suite_meta):
        for name in baselines.names:
            baselines.get(name, suite)
            broken = baselines.broken.get((name, suite))
            if broken and partial:
                raise ConfigError(
                    f"{broken}. A partial run (-k, -m or node ids) cannot merge into it: "
                    "re-record the whole suite with --snapshot-update"
                )


def outputs_or_usage_error(session: Any) -> None:
    """`check_outputs`, its ConfigError turned into pytest's usage error (exit code 4)."""
    try:
        check_outputs(session)
    except ConfigError as exc:
        raise pytest.UsageError(f"pytest-mtmcs: {exc}") from None


@contextmanager
def building(session: Any, item: Any) -> Iterator[None]:
    """Around building the backend and judge at the first dialogue: a failure (a model folder
    that does not exist, a judge that cannot be built) fails that dialogue with the message
    alone, every later one with the same message at once (nothing is rebuilt, nothing graded),
    and stops the run after it."""
    failed = session.config.stash.get(BUILD_ERROR_KEY, None)
    if failed is None:
        try:
            yield
            return
        except MtmcsError as exc:
            failed = session.config.stash[BUILD_ERROR_KEY] = str(exc)
        item.session.shouldstop = f"pytest-mtmcs: cannot build the model or judge: {failed}"
    # `from None`: the build error is the message; its stack, and ours, are of no use here.
    raise pytest.fail.Exception(
        f"pytest-mtmcs: cannot build the model or judge: {failed}\n"
        "Nothing was generated or graded; fix the option and re-run.",
        pytrace=False,
    ) from None


def _check_writable_folder(folder: Path, option: str) -> None:
    """Creates `folder` if needed and writes a probe file in it, removed at once."""
    probe = folder / f".mtmcs-write-probe-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"probe")
        finally:
            os.close(fd)
    except OSError as exc:
        raise ConfigError(
            f"{option}={folder}: cannot write there: {_os_reason(exc)}; point {option} at a "
            "writable folder"
        ) from None
    finally:
        try:
            probe.unlink(missing_ok=True)
        except OSError:
            pass


def _os_reason(exc: OSError) -> str:
    """`read-only file system`, `no space left on device`...: the reason without a traceback."""
    if exc.errno is not None:
        text = os.strerror(exc.errno).lower()
        if exc.errno in (errno.ENOTDIR, errno.EEXIST) and exc.filename:
            return f"{text} ({exc.filename})"
        return text
    return str(exc)


class EndOfRunFailed:
    """Around the end of the run (aggregate, gate, report, baseline): an OSError (a full disk, a
    report folder that went away) or one of our errors becomes the summary and a failed run,
    never an internal traceback after every dialogue has run."""

    def __init__(self, mtmcs_session: Any, session: Any) -> None:
        self.mtmcs = mtmcs_session
        self.session = session
        self.error: str | None = None

    def __enter__(self) -> EndOfRunFailed:
        return self

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> bool:
        if not isinstance(exc, (OSError, MtmcsError)):
            return False
        text = str(exc)
        if isinstance(exc, OSError) and exc.errno is not None:
            where = f" ({exc.filename})" if exc.filename else ""
            text = f"{_os_reason(exc)}{where}"
        self.error = text
        self.mtmcs.summary_lines = [
            f"END OF RUN FAILED: {text}",
            "The dialogues' own outcomes above stand; the gate, the report and any baseline "
            "update did not complete. Fix the cause and re-run: finished turns come from the cache.",
        ]
        self.mtmcs.gate_failed = True
        if self.session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            self.session.exitstatus = pytest.ExitCode.TESTS_FAILED
        return True


__all__ = ["EndOfRunFailed", "building", "check_outputs", "check_specs", "outputs_or_usage_error"]
