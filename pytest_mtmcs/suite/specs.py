"""`--mtmcs-suite` specs -> suites: `mtmcs-bench:PATH` and `safemt:PATH` go to their importers,
anything else is a native suite folder (or its suite.toml).

The same specs are taken by `pytest-mtmcs import SPEC OUT` and by `pytest-mtmcs merge`.
"""

from __future__ import annotations

import importlib
import os
import re
from typing import Any

from pytest_mtmcs.errors import ConfigError
from pytest_mtmcs.records import Suite
from pytest_mtmcs.suite.native import load_suite
from pytest_mtmcs.suite.releases import release_hint

# `--mtmcs-suite` prefixes handled by importers; anything else is a native suite path.
SUITE_PREFIXES: tuple[str, ...] = ("mtmcs-bench", "safemt")

_SPEC_PREFIX_RE = re.compile(r"([A-Za-z][A-Za-z0-9_.+-]+):")


def is_native_spec(spec: str) -> bool:
    """Whether `resolve_suite` reads `spec` as a native suite path (no importer prefix)."""
    m = _SPEC_PREFIX_RE.match(spec)
    return m is None or os.path.exists(spec)


def misnamed_release(
    spec: str, use: str = "--mtmcs-suite={spec}", shown: str | None = None
) -> str | None:
    """The message for a native-suite spec that names a benchmark release folder (the importer
    prefix is missing), or None. Checked when the options are read: a usage error, not a broken
    suite. `use` and `shown` as in `releases.release_advice`."""
    return release_hint(spec, use, shown) if is_native_spec(spec) else None


def resolve_suite(spec: str, **importer_kwargs: Any) -> Suite:
    """Turns a `--mtmcs-suite` value into a Suite.

    `mtmcs-bench:PATH` and `safemt:PATH` go to their importers (which take `importer_kwargs`);
    anything else is a native suite folder (importer options do not apply to it).
    """
    if is_native_spec(spec):
        return load_suite(spec)
    prefix = spec.split(":", 1)[0]
    if prefix not in SUITE_PREFIXES:
        known = ", ".join(f"{p}:PATH" for p in SUITE_PREFIXES)
        raise ConfigError(
            f"--mtmcs-suite={spec}: unknown suite kind '{prefix}:' and no such path; "
            f"use {known}, or the path of a native suite folder"
        )
    path = spec[len(prefix) + 1 :]
    if not path:
        raise ConfigError(f"--mtmcs-suite={spec}: give the folder after '{prefix}:'")
    # Imported here: importers pull in pandas/pyarrow, which native suites never need.
    module = importlib.import_module(f"pytest_mtmcs.suite.importers.{prefix.replace('-', '_')}")
    suite: Suite = module.load(path, **importer_kwargs)
    return suite
