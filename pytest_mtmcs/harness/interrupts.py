"""Ctrl-C and SIGTERM mid-run: an interrupted run ends cleanly and says what it finished.

SIGTERM (what CI runners and `timeout` send) is turned into the KeyboardInterrupt pytest already
handles, for the session only: the previous handler is restored when the session ends. An
interrupted run writes no baseline, no report and applies no gate (its numbers are partial); the
summary says it was interrupted and how many dialogues finished. Finished turns are in the
response cache (each commit is atomic), so a re-run resumes without regenerating them.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

import pytest

INTERRUPT_KEY = pytest.StashKey[str]()


class InterruptGuard:
    """A plugin object: installs the SIGTERM handler for the session, records interrupts."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self._previous: Any = None
        self._installed = False

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        # Only the main thread may set handlers; xdist workers are stopped by their controller.
        if threading.current_thread() is not threading.main_thread():
            return
        if getattr(self.config, "workerinput", None) is not None:
            return
        self._previous = signal.signal(signal.SIGTERM, _terminate)
        self._installed = True

    def pytest_keyboard_interrupt(self, excinfo: pytest.ExceptionInfo[BaseException]) -> None:
        text = str(excinfo.value) or "Ctrl-C"
        self.config.stash[INTERRUPT_KEY] = "SIGTERM" if text == "SIGTERM" else "Ctrl-C"

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self.restore()

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        self.restore()

    def restore(self) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous)
            self._installed = False


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt("SIGTERM")


def interrupted_summary(
    config: pytest.Config, session: pytest.Session, finished: int
) -> list[str] | None:
    """The summary of an interrupted run, or None when the run was not interrupted."""
    how = config.stash.get(INTERRUPT_KEY, None)
    if how is None:
        return None
    total = max(int(getattr(session, "testscollected", 0) or 0), finished)
    return [
        f"run INTERRUPTED ({how}): {finished} of {total} dialogues finished.",
        "No baseline written, no report, no gate: the numbers of a partial run mean nothing.",
        "Finished turns are in the response cache: re-run the same command to resume.",
    ]


__all__ = ["INTERRUPT_KEY", "InterruptGuard", "interrupted_summary"]
