"""Several servers behind one `openai:` backend: least-in-flight choice and a circuit breaker.

`--mtmcs-base-url=http://a:8000/v1,http://b:8000/v1` (or the option repeated) spreads requests
over replicas of one model. Each request (and each retry of it) goes to the replica with the fewest
requests in flight, ties to the one listed first. A replica whose connections fail or that answers
5xx `failures_to_trip` times in a row is set aside for `cooldown_s` (a monotonic clock, injectable
for tests); its requests go to the others. When the cool-down is over it gets traffic again: one
success restores it, one more failure sets it aside again. When every replica is set aside, the
one due back first is tried anyway, so that the run waits in the backend's backoff rather than
failing at once. Each trip and restore is kept as an event for the run's summary.

Runs on the backend's event-loop thread only: no locks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

P = TypeVar("P")

FAILURES_TO_TRIP = 3
COOLDOWN_S = 10.0


@dataclass
class Replica(Generic[P]):
    """One server: its URL (credentials removed), its connection pool and its health."""

    shown: str
    pool: P
    in_flight: int = 0
    failures: int = 0  # consecutive
    down_until: float | None = None  # set aside until this clock time
    trips: int = 0
    reasons: list[str] = field(default_factory=list)
    restored: bool = False


class ReplicaSet(Generic[P]):
    def __init__(
        self,
        replicas: Sequence[Replica[P]],
        *,
        failures_to_trip: int = FAILURES_TO_TRIP,
        cooldown_s: float = COOLDOWN_S,
        clock: Callable[[], float] = time.monotonic,
        on_event: Callable[[str], None] | None = None,
    ) -> None:
        if not replicas:
            raise ValueError("no replicas")
        self.replicas = list(replicas)
        self.failures_to_trip = max(1, failures_to_trip)
        self.cooldown_s = cooldown_s
        self.clock = clock
        self.events: list[str] = []
        self._on_event = on_event

    def _event(self, text: str) -> None:
        self.events.append(text)
        if self._on_event is not None:
            self._on_event(text)

    def pick(self, avoid: Replica[P] | None = None) -> Replica[P]:
        """The replica for the next attempt: up, fewest in flight, not `avoid` when there is
        another one up."""
        replicas = self.replicas
        if len(replicas) == 1:
            return replicas[0]
        now = self.clock()
        best: Replica[P] | None = None
        for r in replicas:
            if r.down_until is not None and now < r.down_until:
                continue
            if r is avoid:
                continue
            if best is None or r.in_flight < best.in_flight:
                best = r
        if best is not None:
            return best
        if avoid is not None and (avoid.down_until is None or now >= avoid.down_until):
            return avoid
        return min(replicas, key=lambda r: (r.down_until or 0.0, r.in_flight))

    def has_other_up(self, replica: Replica[P]) -> bool:
        now = self.clock()
        return any(
            r is not replica and (r.down_until is None or now >= r.down_until)
            for r in self.replicas
        )

    def succeeded(self, replica: Replica[P]) -> None:
        replica.failures = 0
        if replica.down_until is not None:
            replica.down_until = None
            replica.restored = True
            self._event(f"replica {replica.shown} restored")

    def failed(self, replica: Replica[P], reason: str, started: float | None = None) -> None:
        """A connection failure or a 5xx from `replica`, of an attempt begun at clock time
        `started` (default: now). The failure of an attempt begun before the replica's cool-down
        ended is old news and does not set it aside again."""
        if len(self.replicas) == 1:
            return  # nowhere else to go: the backend's retries and backoff decide
        now = self.clock()
        if replica.down_until is not None and (now if started is None else started) < (
            replica.down_until
        ):
            return
        replica.failures += 1
        back_on_probation = replica.down_until is not None and now >= replica.down_until
        if replica.failures >= self.failures_to_trip or back_on_probation:
            replica.down_until = now + self.cooldown_s
            replica.trips += 1
            replica.restored = False
            replica.failures = 0
            if reason not in replica.reasons:
                replica.reasons.append(reason)
            self._event(f"replica {replica.shown} set aside ({reason})")

    def summary(self) -> list[str]:
        """One line per replica that was set aside, e.g.
        `replica http://h:8000/v1 set aside 1x (connection refused), restored`."""
        lines = []
        for r in self.replicas:
            if r.trips:
                state = "restored" if r.restored else "still set aside at the end"
                lines.append(
                    f"replica {r.shown} set aside {r.trips}x ({'; '.join(r.reasons)}), {state}"
                )
        return lines
