"""pytest entry point (`pytest11`): options and wiring, nothing heavy.

`pytest_configure` reads the settings once and registers the roles a process plays:
- every process: the settings, the suites it loads, and `DialogueReports` (what a dialogue test
  reports);
- a process that runs dialogues (a single-process run, an xdist worker): `DialogueRunner`;
- a process that ends the run (a single-process run, the xdist controller): `RunController`, plus
  `XdistHooks` on an xdist controller.

torch, transformers, pandas and HTTP clients are imported only where a model runs or a report is
written, so `pytest --help` and runs that do not touch a suite stay fast.
"""

from __future__ import annotations

import pytest

from pytest_mtmcs.harness import options as opts

PLUGINS = ("mtmcs-reports", "mtmcs-runner", "mtmcs-controller", "mtmcs-xdist", "mtmcs-interrupts")


def pytest_addoption(parser: pytest.Parser) -> None:
    opts.add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    from pytest_mtmcs.errors import ConfigError
    from pytest_mtmcs.harness.controller import RunController
    from pytest_mtmcs.harness.execution import DialogueRunner
    from pytest_mtmcs.harness.interrupts import InterruptGuard
    from pytest_mtmcs.harness.items import MARKER_HELP, REPORTS_KEY, SETTINGS_KEY, SUITES_KEY
    from pytest_mtmcs.harness.preflight import check_output_paths
    from pytest_mtmcs.harness.reporting import DialogueReports
    from pytest_mtmcs.harness.resources import Resources
    from pytest_mtmcs.harness.settings import Settings
    from pytest_mtmcs.harness.suites import SuiteStore

    config.addinivalue_line("markers", MARKER_HELP)
    try:
        settings = Settings.from_config(config)
        check_output_paths(settings)
    except ConfigError as exc:
        raise pytest.UsageError(f"pytest-mtmcs: {exc}") from None
    cache = getattr(config, "cache", None)
    resources = Resources(settings, cache.mkdir("mtmcs") if cache is not None else None)
    suites = SuiteStore(settings)
    baselines = settings.baseline_set()
    config.stash[SETTINGS_KEY] = settings
    config.stash[SUITES_KEY] = suites
    pm = config.pluginmanager
    controls = not settings.is_worker
    # xdist's own rule for starting its controller (DSession): no collection, workers run tests.
    xdist_controller = (
        controls
        and pm.hasplugin("xdist")
        and config.getvalue("dist") != "no"
        and not settings.collect_only
    )
    runner = None
    if not xdist_controller:
        runner = DialogueRunner(config, settings, suites, resources, baselines)
        pm.register(runner, "mtmcs-runner")
    reports = DialogueReports(settings, runner)
    config.stash[REPORTS_KEY] = reports
    pm.register(reports, "mtmcs-reports")
    if controls:
        controller = RunController(config, settings, suites, resources, baselines, runner)
        pm.register(controller, "mtmcs-controller")
        if pm.hasplugin("xdist"):
            from pytest_mtmcs.harness.xdist import XdistHooks

            pm.register(XdistHooks(controller), "mtmcs-xdist")
    pm.register(InterruptGuard(config), "mtmcs-interrupts")


def pytest_unconfigure(config: pytest.Config) -> None:
    for name in PLUGINS:
        plugin = config.pluginmanager.get_plugin(name)
        if plugin is not None:
            config.pluginmanager.unregister(plugin, name)


def pytest_collect_file(file_path, parent):  # type: ignore[no-untyped-def]
    """A `suite.toml` under the test paths is a suite: its dialogues are collected as tests."""
    if file_path.name == "suite.toml":
        from pytest_mtmcs.harness.items import SuiteCollector, note_suite_file

        note_suite_file(parent.config, file_path)
        return SuiteCollector.from_parent(parent, path=file_path)
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Adds the `--mtmcs-suite` suites and keeps this shard's dialogues (`--mtmcs-shard`),
    before -k/-m deselection sees the items."""
    from pytest_mtmcs.harness.items import SETTINGS_KEY

    settings = config.stash[SETTINGS_KEY]
    if settings.suite_specs:
        from pytest_mtmcs.harness.items import collect_specs, fresh_specs

        items.extend(collect_specs(session, fresh_specs(config, settings.suite_specs)))
    if settings.shard is not None:
        from pytest_mtmcs.harness.sharding import select_shard

        runner = config.pluginmanager.get_plugin("mtmcs-runner")
        info = select_shard(config, settings.shard, items)
        if runner is not None:
            runner.shard_info = info


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    """Once the dialogues to run are known (after -k/-m deselection): no model, or an output
    that cannot be written, or a baseline that does not exist, is a usage error before any
    model runs. `--co`, `--fixtures` and runs whose dialogues are all deselected need no model."""
    from pytest_mtmcs.harness.items import SETTINGS_KEY, DialogueItem
    from pytest_mtmcs.harness.preflight import check_before_running

    config = session.config
    settings = config.stash[SETTINGS_KEY]
    dialogues = [i for i in session.items if isinstance(i, DialogueItem)]
    if not dialogues or settings.collect_only or config.option.showfixtures:
        return
    from pytest_mtmcs.errors import ConfigError
    from pytest_mtmcs.harness.interrupts import usage_error
    from pytest_mtmcs.harness.items import DIALOGUE_KEY, SUITES_KEY

    if not settings.model:
        raise usage_error(
            config,
            "dialogues were collected but no model is set: pass --mtmcs-model=SPEC (e.g. "
            "tiny:qwen2.5-vl, hf:PATH, openai:MODEL) or set mtmcs_model in "
            "[tool.pytest.ini_options]; or deselect them (-m 'not mtmcs') to run only the "
            "other tests",
        )
    suites = sorted({i.stash[DIALOGUE_KEY].suite for i in dialogues})
    store = config.stash[SUITES_KEY]
    runner = config.pluginmanager.get_plugin("mtmcs-runner")
    try:
        _check_suite_settings(settings, store)
        check_before_running(
            settings,
            runner.primary.baselines,
            runner.resources,
            suites,
            writes_report=not settings.is_worker,
        )
    except ConfigError as exc:
        raise usage_error(config, str(exc)) from None


def _check_suite_settings(settings, store) -> None:  # type: ignore[no-untyped-def]
    """Buckets and thresholds against each collected suite, before any model runs."""
    from pytest_mtmcs.analysis.buckets import Buckets
    from pytest_mtmcs.analysis.thresholds import thresholds_for, validate_thresholds
    from pytest_mtmcs.errors import ConfigError

    for name, meta in store.meta.items():
        try:
            validate_thresholds(
                thresholds_for(settings.thresholds, settings.threshold_origin, meta.as_dict()),
                Buckets.parse(store.bucket_spec(name)),
            )
        except ConfigError as exc:
            raise ConfigError(f"suite {name}: {exc}") from None
