"""Suites: the native format (`native`: reading, `writer`: writing), `specs` (`--mtmcs-suite`
values -> loader or importer), the content hash every loader gives (`content`), images, intent
questions, and importers of the benchmarks' releases (`importers/`).

`resolve_suite(spec)` turns a spec (a suite folder, `mtmcs-bench:PATH`, `safemt:PATH`) into a
`records.Suite`; `load_suite` reads a native folder; `write_suite` writes one.
"""

from __future__ import annotations

from pytest_mtmcs.suite.native import load_suite
from pytest_mtmcs.suite.specs import resolve_suite
from pytest_mtmcs.suite.writer import write_suite

__all__ = ["load_suite", "resolve_suite", "write_suite"]
