"""What stops a run cleanly instead of with a traceback, at each stage where it can fail.

- Before anything runs: `Settings.from_config` at configure time (options only, nothing built,
  nothing heavy imported) and `check_output_paths`; `check_before_running` once dialogues are
  collected: the report folder, the named baselines (they exist, hold every suite of the run and
  read cleanly) and the response cache must be usable. Each raises `ConfigError` naming the
  option (and the environment variable) that would fix it; the plugin turns it into pytest's
  usage error (exit code 4).
- At the first dialogue: `building` turns a backend or judge that fails to build into that
  dialogue's failure and stops the run.
- At the end: `EndOfRunFailed` turns an OSError or one of our errors while aggregating, gating,
  reporting or writing a baseline into the summary and a failed run.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from pytest_mtmcs.baseline.store import BaselineSet
from pytest_mtmcs.errors import ConfigError, MtmcsError
from pytest_mtmcs.harness.resources import Resources
from pytest_mtmcs.harness.settings import Settings

BUILD_ERROR_KEY = pytest.StashKey[str]()


def check_output_paths(settings: Settings) -> None:
    """Output folders, without creating anything (configure time also serves --help): a path
    under a file, or a folder that cannot be written, fails now rather than at the end of the
    run (the report) or at the first dialogue (the cache). Checked on the xdist controller too,
    which writes the report but never collects."""
    if settings.report_dir is not None:
        _check_creatable(settings.report_dir, "--mtmcs-report", folder=True)
    if settings.cache_path and not settings.no_cache:
        _check_creatable(Path(settings.cache_path), "--mtmcs-cache", folder=False)


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


def check_before_running(
    settings: Settings,
    baselines: BaselineSet,
    resources: Resources,
    suites: Iterable[str],
    *,
    writes_report: bool,
) -> None:
    """Once dialogues are collected, before any model runs: the report folder can be written,
    every named baseline exists and has every collected suite (or the user said it may lack
    one) and reads cleanly, the adjudications file reads cleanly, and the response cache opens. Raises ConfigError naming the option."""
    if settings.report_dir is not None and writes_report:
        _check_writable_folder(settings.report_dir, "--mtmcs-report")
    check_baselines(settings, baselines, sorted(suites))
    # People's labels: a bad or conflicting line stops the run before any model runs.
    resources.adjudications  # noqa: B018
    if settings.no_cache:
        return
    try:
        # Opened here rather than at the first dialogue: the process keeps it for the run.
        resources.cache  # noqa: B018
    except MtmcsError as exc:
        raise ConfigError(f"{exc}") from None
    except OSError as exc:
        raise ConfigError(
            f"response cache: {_os_reason(exc)} (--mtmcs-cache / --mtmcs-no-cache)"
        ) from None


def check_baselines(settings: Settings, baselines: BaselineSet, suites: list[str]) -> None:
    """Every named baseline exists and holds every suite of the run, and each file reads
    cleanly (conflict markers, truncation, hand edits are file:line errors).

    Recording (--snapshot-update) may create the first name, or add a suite to it; a broken
    primary baseline is then replaced, unless the run is partial and would have to merge into it.
    A baseline name that does not exist is a usage error naming those that do: a typo must not
    turn the regression gate off."""
    if not baselines.names:
        return
    root = baselines.root
    existing = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    for i, name in enumerate(baselines.names):
        recording = settings.updating and i == 0
        if not (root / name).is_dir():
            if recording:
                continue
            where = f" in {root}" if existing else f": {root} holds no baselines"
            known = f"; baselines{where}: {', '.join(existing)}" if existing else where
            raise ConfigError(
                f"--mtmcs-baseline={name}: no such baseline{known}. To record it, run with "
                f"--snapshot-update --mtmcs-baseline={name}"
            )
        for suite in suites:
            b = baselines.get(name, suite)
            broken = baselines.broken.get((name, suite))
            if broken and settings.partial:
                raise ConfigError(
                    f"{broken}. A partial run (-k, -m or node ids) cannot merge into it: "
                    "re-record the whole suite with --snapshot-update"
                )
            if b is None and not broken and not recording and not settings.allow_missing_suite:
                has = sorted(p.stem for p in (root / name).glob("*.ambr"))
                raise ConfigError(
                    f"--mtmcs-baseline={name}: the baseline has no results for suite {suite} "
                    f"(it has: {', '.join(has) or 'none'}); the gate cannot compare that suite. "
                    f"Record it with --snapshot-update --mtmcs-baseline={name}, or pass "
                    "--mtmcs-allow-missing-suite to report the suite as new"
                )


def check_collected(runner: Any, dialogues: list[Any]) -> None:
    """Once the dialogues to run are known (after -k/-m deselection): a model is set, buckets
    and thresholds fit each suite, the outputs and baselines are usable, and the model and judge
    build (a model folder that does not exist, an unknown tiny: name, a judge that cannot be
    built). Raises the MtmcsError that says what is wrong; nothing has run yet."""
    from pytest_mtmcs.analysis.buckets import Buckets
    from pytest_mtmcs.analysis.thresholds import thresholds_for, validate_thresholds
    from pytest_mtmcs.harness.items import DIALOGUE_KEY

    settings, store = runner.settings, runner.suites
    if store.clashes:
        raise ConfigError("; ".join(store.clashes))
    if not settings.model:
        raise ConfigError(
            "dialogues were collected but no model is set: pass --mtmcs-model=SPEC (e.g. "
            "tiny:qwen2.5-vl, hf:PATH, openai:MODEL) or set mtmcs_model in "
            "[tool.pytest.ini_options]; or deselect them (-m 'not mtmcs') to run only the "
            "other tests"
        )
    for name, meta in store.meta.items():
        try:
            validate_thresholds(
                thresholds_for(settings.thresholds, settings.threshold_origin, meta.as_dict()),
                Buckets.parse(store.bucket_spec(name)),
            )
        except ConfigError as exc:
            raise ConfigError(f"suite {name}: {exc}") from None
    suites = sorted({i.stash[DIALOGUE_KEY].suite for i in dialogues})
    check_before_running(
        settings,
        runner.primary.baselines,
        runner.resources,
        suites,
        writes_report=not settings.is_worker,
    )
    runner.build()


@contextmanager
def building(config: pytest.Config, item: Any) -> Iterator[None]:
    """Around building the backend and judge at the first dialogue: a failure (a model folder
    that does not exist, a judge that cannot be built) fails that dialogue with the message
    alone, every later one with the same message at once (nothing is rebuilt, nothing graded),
    and stops the run after it."""
    failed = config.stash.get(BUILD_ERROR_KEY, None)
    if failed is None:
        try:
            yield
            return
        except MtmcsError as exc:
            failed = config.stash[BUILD_ERROR_KEY] = str(exc)
        item.session.shouldfail = f"pytest-mtmcs: cannot build the model or judge: {failed}"
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
    report folder that went away) or one of our errors is caught and kept as `error`, the text
    the summary shows, never an internal traceback after every dialogue has run."""

    def __init__(self) -> None:
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
        return True


__all__ = [
    "EndOfRunFailed",
    "building",
    "check_baselines",
    "check_before_running",
    "check_output_paths",
]
