"""Ctrl-C, SIGTERM and runs stopped early: a run that did not finish says so, and what finished.

- SIGTERM (what CI runners and `timeout` send) becomes the KeyboardInterrupt pytest already
  handles, for the session only: the previous handler comes back when the session ends.
- SIGINT: a process started in the background by a non-interactive shell (`pytest ... &` in a
  script) inherits SIGINT *ignored*, and Python then installs no Ctrl-C handler of its own, so
  `kill -INT` would do nothing. The run installs Python's handler for the session in that case
  (and only then), so `kill -INT` stops it as Ctrl-C does.
- A run stopped by `-x`/`--maxfail` or by a failure to build the model or judge is not an
  interrupt: it is recorded as stopped early, with pytest's own reason.

An interrupted run writes no baseline and applies no gate (its numbers are partial); the summary
says it was interrupted and how many dialogues finished. Finished turns are in the response cache
(each commit is atomic), so a re-run resumes without regenerating them.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

import pytest

# How the run was cut short: "Ctrl-C", "SIGTERM", or "stopped: <pytest's reason>".
INTERRUPT_KEY = pytest.StashKey[str]()
# The message of a usage error this plugin raised once the session had started.
USAGE_ERROR_KEY = pytest.StashKey[str]()


class InterruptGuard:
    """A plugin object: installs the SIGTERM (and, where ignored, SIGINT) handlers for the
    session, and records how a run was cut short."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self._previous: dict[int, Any] = {}

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        # Only the main thread may set handlers; xdist workers are stopped by their controller.
        if threading.current_thread() is not threading.main_thread():
            return
        if getattr(self.config, "workerinput", None) is not None:
            return
        self._previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, _terminate)
        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            self._previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)

    def pytest_keyboard_interrupt(self, excinfo: pytest.ExceptionInfo[BaseException]) -> None:
        exc = excinfo.value
        if type(exc) is KeyboardInterrupt:
            self.config.stash[INTERRUPT_KEY] = "SIGTERM" if str(exc) == "SIGTERM" else "Ctrl-C"
        else:
            # pytest's Session.Interrupted and xdist's Interrupted subclass KeyboardInterrupt:
            # a stop asked for by -x, --maxfail or a plugin, not by a signal.
            self.config.stash.setdefault(INTERRUPT_KEY, f"stopped: {exc}")

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self.restore()

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        self.restore()

    def restore(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()


class DeferredSignals:
    """Around the end of the run (gate, report, baseline): Ctrl-C and SIGTERM are noted, not
    raised, until it is done. Every dialogue has finished by then, and the end takes seconds;
    cutting it in the middle would leave a report or a baseline half-updated."""

    def __init__(self) -> None:
        self.received: list[str] = []
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> DeferredSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._note)
        return self

    def _note(self, signum: int, frame: FrameType | None) -> None:
        self.received.append("SIGTERM" if signum == signal.SIGTERM else "Ctrl-C")

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt("SIGTERM")


def usage_error(config: pytest.Config, message: str) -> pytest.UsageError:
    """pytest's usage error (exit code 4), remembered so the end of the run can say why it did
    not run. `raise usage_error(config, msg)`."""
    config.stash[USAGE_ERROR_KEY] = message
    return pytest.UsageError(f"pytest-mtmcs: {message}")


__all__ = ["INTERRUPT_KEY", "USAGE_ERROR_KEY", "DeferredSignals", "InterruptGuard", "usage_error"]
