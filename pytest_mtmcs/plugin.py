"""pytest entry point (`pytest11`): options and wiring, nothing heavy.

torch, transformers, pandas and HTTP clients are imported only where a model runs or a report is
written, so `pytest --help` and runs that do not touch a suite stay fast.
"""

from __future__ import annotations

import pytest

from pytest_mtmcs.harness import options as opts

SESSION_PLUGIN = "mtmcs-session"
XDIST_PLUGIN = "mtmcs-xdist"
INTERRUPTS_PLUGIN = "mtmcs-interrupts"


def pytest_addoption(parser: pytest.Parser) -> None:
    opts.add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    from pytest_mtmcs.errors import ConfigError
    from pytest_mtmcs.harness.items import SESSION_KEY
    from pytest_mtmcs.harness.session import MtmcsSession, XdistHooks

    session = MtmcsSession(config)
    try:
        session.validate()
    except ConfigError as exc:
        raise pytest.UsageError(f"pytest-mtmcs: {exc}") from None
    config.stash[SESSION_KEY] = session
    config.pluginmanager.register(session, SESSION_PLUGIN)
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(XdistHooks(session), XDIST_PLUGIN)
    from pytest_mtmcs.harness.interrupts import InterruptGuard

    config.pluginmanager.register(InterruptGuard(config), INTERRUPTS_PLUGIN)


def pytest_unconfigure(config: pytest.Config) -> None:
    for name in (SESSION_PLUGIN, XDIST_PLUGIN, INTERRUPTS_PLUGIN):
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
    specs = opts.value(config, "--mtmcs-suite") or ()
    if specs:
        from pytest_mtmcs.harness.items import fresh_specs
        from pytest_mtmcs.harness.session import load_all

        fresh = fresh_specs(config, specs)
        items.extend(load_all(session, fresh))
    if opts.raw(config, "--mtmcs-shard"):
        from pytest_mtmcs.harness.items import SESSION_KEY

        config.stash[SESSION_KEY].select_shard(config, items)
