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
    # syrupy's warning that an interrupted xdist run sent it no snapshot reports: this plugin
    # writes its baselines itself (once, on the controller), so it says nothing about them.
    config.addinivalue_line(
        "filterwarnings", "ignore:syrupy. received .* xdist worker snapshot reports:UserWarning"
    )
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
