"""A progress line for long runs: dialogues done, turns per second and time left.

One line per process (the label is the xdist worker id, or `mtmcs`), printed at most every
`min_interval_s`. On a terminal the line is rewritten in place; in CI logs each update is a line
of its own. Formatting is pure (`format_progress`, `format_finish`) so it is tested without a
clock.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO


def format_duration(seconds: float) -> str:
    """`H:MM:SS`; hours grow past 24 rather than wrapping into days."""
    if not math.isfinite(seconds) or seconds < 0:
        seconds = 0.0
    total = math.floor(seconds + 0.5)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def _prefix(label: str) -> str:
    return "[mtmcs]" if label in ("", "mtmcs") else f"[mtmcs {label}]"


def _rate(count: float, elapsed: float) -> float:
    # Below a microsecond there is no meaningful rate (and a tiny divisor overflows to inf).
    return count / elapsed if elapsed >= 1e-6 else 0.0


def format_progress(label: str, done: int, total: int, turns: int, elapsed: float) -> str:
    """`[mtmcs gw0] 312/1504 dialogues, 41.2 turns/s, ETA 0:00:29`.

    The ETA extrapolates the dialogue rate so far; it reads `?` until one dialogue has finished.
    """
    rate = _rate(turns, elapsed)
    remaining = max(total - done, 0)
    if remaining == 0:
        eta = format_duration(0)
    elif done <= 0 or elapsed <= 0:
        eta = "?"
    else:
        eta = format_duration(remaining * elapsed / done)
    return f"{_prefix(label)} {done}/{total} dialogues, {rate:.1f} turns/s, ETA {eta}"


def format_finish(
    label: str,
    done: int,
    total: int,
    turns: int,
    elapsed: float,
    in_flight: Mapping[str, Any] | None = None,
) -> str:
    """`[mtmcs gw0] done: 1504/1504 dialogues, 6016 dialogue turns in 0:02:26 (41.2 turns/s)`,
    and with the backend's measure `, 121.4 of 128 requests in flight on average (95%)`.

    Turns are the dialogues' live user turns answered (from the model or the cache); the end of
    run's summary counts model requests, which include the intent questions."""
    rate = _rate(turns, elapsed)
    busy = ""
    if in_flight:
        mean, limit = float(in_flight["mean"]), int(in_flight["concurrency"])
        busy = (
            f", {mean:.1f} of {limit} requests in flight on average "
            f"({mean / limit if limit else 0.0:.0%})"
        )
    return (
        f"{_prefix(label)} done: {done}/{total} dialogues, {turns} dialogue turns in "
        f"{format_duration(elapsed)} ({rate:.1f} turns/s){busy}"
    )


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        # Closed or stand-in streams (pytest capture, StringIO subclasses) count as logs.
        return False


class Progress:
    """Counts finished dialogues and turns and reports them on `stream`, throttled.

    `enabled=False` (under `-q`) prints nothing but still counts.
    """

    def __init__(
        self,
        total: int,
        label: str,
        stream: TextIO,
        *,
        min_interval_s: float = 1.0,
        enabled: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.label = label
        self.stream = stream
        self.min_interval_s = min_interval_s
        self.enabled = enabled
        self.clock = clock
        self.done = 0
        self.turns = 0
        self.finished = False
        self._start = clock()
        self._last_emit = self._start
        self._tty = _isatty(stream)
        self._shown = 0  # width of the line now on a terminal, to blank what a shorter one leaves
        # The backend's requests in flight (backends/inflight.py), set when the share is done.
        self.in_flight: Mapping[str, Any] | None = None

    @property
    def elapsed(self) -> float:
        return max(self.clock() - self._start, 0.0)

    def line(self) -> str:
        return format_progress(self.label, self.done, self.total, self.turns, self.elapsed)

    def advance(self, dialogues: int = 0, turns: int = 0) -> None:
        """Add finished dialogues and generated turns; print if `min_interval_s` has passed."""
        self.done += dialogues
        self.turns += turns
        if not self.enabled or self.finished:
            return
        now = self.clock()
        if now - self._last_emit < self.min_interval_s:
            return
        self._last_emit = now
        self._write(self.line(), final=False)

    def finish(self) -> None:
        """Print the totals and elapsed time once; later calls do nothing."""
        if self.finished:
            return
        self.finished = True
        if not self.enabled:
            return
        self._write(self.final_line(), final=True)

    def final_line(self) -> str:
        """The totals and elapsed time (`format_finish`), for `finish` or for another process
        to print (an xdist worker's, printed by the controller)."""
        return format_finish(
            self.label, self.done, self.total, self.turns, self.elapsed, self.in_flight
        )

    def _write(self, text: str, *, final: bool) -> None:
        try:
            if self._tty:
                pad = " " * max(self._shown - len(text), 0)
                self.stream.write("\r" + text + pad + ("\n" if final else ""))
                self._shown = 0 if final else len(text)
            else:
                self.stream.write(text + "\n")
            self.stream.flush()
        except (ValueError, OSError):
            # A progress line is never worth failing the run for (closed stream, broken pipe).
            self.enabled = False
