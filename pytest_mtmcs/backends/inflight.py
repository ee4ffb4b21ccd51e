"""How busy a backend kept its servers: the time-weighted mean of requests in flight.

A backend calls `enter` when a request goes on the wire and `leave` when its answer (or failure)
is back; the meter integrates the count over time. The mean over the span from the first request
out to the last answer in, against the configured concurrency, says whether raising the
concurrency could help: near it, the run used every slot it was allowed; well under it, the
limit was elsewhere (the harness, or dialogues waiting on their own previous turn).

Measured, never estimated. Not thread-safe: a backend calls it from one thread (openai: its event
loop). `stats` is plain data for run.json; `combine` merges the processes of one run (xdist
workers on one machine: wall-clock start and end, summed request-seconds).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any


class InFlightMeter:
    def __init__(
        self,
        clock: Callable[[], float] = time.perf_counter,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self._wall = wall
        self.in_flight = 0
        self.peak = 0
        self.requests = 0  # attempts answered or failed
        self._area = 0.0  # request-seconds
        self._last = 0.0  # clock time of the last change
        self._first: float | None = None  # clock time of the first request out
        self._wall_first = 0.0

    def enter(self) -> None:
        now = self._clock()
        if self._first is None:
            self._first = self._last = now
            self._wall_first = self._wall()
        self._area += self.in_flight * (now - self._last)
        self._last = now
        self.in_flight += 1
        if self.in_flight > self.peak:
            self.peak = self.in_flight

    def leave(self) -> None:
        now = self._clock()
        self._area += self.in_flight * (now - self._last)
        self._last = now
        self.in_flight -= 1
        self.requests += 1

    def stats(self, concurrency: int) -> dict[str, Any] | None:
        """Plain data: mean in flight over the span so far, or None before any request."""
        if self._first is None:
            return None
        span = self._last - self._first
        return {
            "concurrency": concurrency,
            "mean": round(self._area / span, 2) if span > 0 else 0.0,
            "peak": self.peak,
            "requests": self.requests,
            "seconds": round(span, 3),
            "request_seconds": round(self._area, 3),
            "start": round(self._wall_first, 3),
            "end": round(self._wall_first + span, 3),
            "processes": 1,
        }


def combine(parts: Iterable[Mapping[str, Any] | None]) -> dict[str, Any] | None:
    """One figure for processes that ran side by side: their request-seconds over the span from
    the first one's start to the last one's end; the concurrency is their sum."""
    got = [p for p in parts if p]
    if not got:
        return None
    if len(got) == 1:
        return dict(got[0])
    start = min(float(p["start"]) for p in got)
    end = max(float(p["end"]) for p in got)
    area = sum(float(p["request_seconds"]) for p in got)
    span = end - start
    return {
        "concurrency": sum(int(p["concurrency"]) for p in got),
        "mean": round(area / span, 2) if span > 0 else 0.0,
        "peak": max(int(p["peak"]) for p in got),  # of one process: peaks need not coincide
        "requests": sum(int(p["requests"]) for p in got),
        "seconds": round(span, 3),
        "request_seconds": round(area, 3),
        "start": round(start, 3),
        "end": round(end, 3),
        "processes": sum(int(p.get("processes", 1)) for p in got),
    }


def describe(stats: Mapping[str, Any]) -> str:
    """`servers kept busy: 243.1 of 256 requests in flight on average (95%) ...`, with what it
    means for --mtmcs-concurrency."""
    mean, limit = float(stats["mean"]), int(stats["concurrency"])
    share = mean / limit if limit else 0.0
    if share >= 0.9:
        hint = "the concurrency was the limit: raise --mtmcs-concurrency if the servers take more"
    else:
        hint = (
            "below the concurrency: raising --mtmcs-concurrency would not help "
            "(see docs/scale-out.md)"
        )
    return (
        f"servers kept busy: {mean:.1f} of {limit} requests in flight on average ({share:.0%}) "
        f"over {stats['seconds']:.1f} s; {hint}"
    )
