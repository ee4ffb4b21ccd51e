"""The `pytest-mtmcs` command line: one module per command (`main` dispatches)."""

from __future__ import annotations

from pytest_mtmcs.cli.main import main

__all__ = ["main"]
