"""Suites: the native format (reading, writing), images, intent questions, importers of the
benchmarks' releases (`importers/`).

`resolve_suite(spec)` turns a spec (a suite folder, `mtmcs-bench:PATH`, `safemt:PATH`) into a
`records.Suite`; `write_suite` writes one as a native folder.
"""

from __future__ import annotations

from pytest_mtmcs.suite.native import load_suite, resolve_suite, write_suite

__all__ = ["load_suite", "resolve_suite", "write_suite"]
