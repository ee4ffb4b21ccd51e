"""A discrete-event simulation of the two schedules, for sizes no 2-core machine can run.

The same policy code as a run (`engine.schedule.admission_units`, `priorities`,
`auto_lookahead`, the pipeline's admission budget) drives a virtual clock: C slots, requests
beyond them wait in order (the backend's semaphore), each request takes a latency drawn fixed or
lognormal (p99 = 10x the median, mean 1), pytest takes each result the moment it is there, in
share order, and costs nothing. Twins' identical leading turns are one request, as in a run.
It reports the share of the slots kept busy, `requests x mean latency / (C x makespan)`, which is
what `bench_cluster.py` measures on real runs minus the harness's CPU: compare the two where they
overlap before trusting it at 30,080 dialogues.

    python benchmarks/sim_cluster.py --suite native:2048 [--suite mtmcs-bench:752] \\
        [--concurrency 256,1024] [--tails fixed,lognormal] [--seeds 3] [--schedules auto,rounds]
        [--lookahead N] [--lead X] [--window X]

`native:N` is `make_native_scale.py`'s suite of N dialogues (lengths 1-8, two questions);
`mtmcs-bench:ROWS` imports `make_mtmcs_scale.py`'s release of ROWS rows per split (both
modalities, variant images: 40 x ROWS dialogues, 30,080 for 752; 3 turns each, their MCQ and
true/false questions).
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import statistics
import sys
import tempfile
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from pytest_mtmcs.engine.schedule import (  # noqa: E402
    ROUNDS_LOOKAHEAD,
    ShareItem,
    admission_units,
    auto_lookahead,
    chain_and_requests,
    priorities,
)
from pytest_mtmcs.records import Dialogue, GenerationSettings  # noqa: E402

SIGMA = math.log(10) / 2.3263


def load(spec: str, work: Path) -> list[Dialogue]:
    from pytest_mtmcs.suite import resolve_suite

    kind, _, n = spec.partition(":")
    if kind == "native":
        import make_native_scale

        folder = work / f"native-{n}"
        make_native_scale.build(folder, dialogues=int(n))
        return list(resolve_suite(str(folder)).dialogues)
    if kind == "mtmcs-bench":
        import make_mtmcs_scale

        folder = work / f"mtmcs-{n}"
        make_mtmcs_scale.build(folder, rows=int(n))
        # With the variant images, as at full scale: 40 dialogues per row (30,080 for 752).
        suite = resolve_suite(f"mtmcs-bench:{folder}", variant_images=True)
        return list(suite.dialogues)
    raise SystemExit(f"--suite {spec}: expected native:N or mtmcs-bench:ROWS")


def unit_requests(share: Sequence[ShareItem], first: int, end: int) -> list[tuple[int, int, int]]:
    """Per dialogue of a unit: (leading turns it shares with the twin before it, live turns,
    questions). Shared turns are identical requests, sent once for both."""
    out = []
    shared = 0
    if end - first == 2:
        a, b = share[first][1], share[first + 1][1]
        ua = [(t.text, a.image) for t in a.turns if t.role == "user"]
        ub = [(t.text, b.image) for t in b.turns if t.role == "user"]
        while shared < min(len(ua), len(ub)) and ua[shared] == ub[shared]:
            shared += 1
    for i, p in enumerate(range(first, end)):
        d = share[p][1]
        out.append((shared if i else 0, len(d.live_user_turns()), len(d.questions)))
    return out


def step_sizes(per: Sequence[tuple[int, int, int]]) -> list[int]:
    """Requests a unit sends at each of its sequential steps (turns, then questions)."""
    longest = max(live + (1 if q else 0) for _, live, q in per)
    sizes = []
    for step in range(longest):
        n = 0
        for skip, live, q in per:
            if step < live:
                n += 0 if step < skip else 1
            elif step == live:
                n += q
        sizes.append(n)
    return sizes


class Sim:
    def __init__(self, concurrency: int, latency: Callable[[], float]) -> None:
        self.c = concurrency
        self.latency = latency
        self.t = 0.0
        self.events: list[tuple[float, int, int]] = []  # (time, seq, request owner)
        self.waiting: deque[int] = deque()
        self.running = 0
        self.seq = 0
        self.outstanding = 0

    def send(self, owner: int) -> None:
        self.outstanding += 1
        self.waiting.append(owner)
        self._start()

    def _start(self) -> None:
        while self.waiting and self.running < self.c:
            owner = self.waiting.popleft()
            self.running += 1
            self.seq += 1
            heapq.heappush(self.events, (self.t + self.latency(), self.seq, owner))

    def next(self) -> int:
        self.t, _, owner = heapq.heappop(self.events)
        self.running -= 1
        self.outstanding -= 1
        self._start()
        return owner


def simulate_pipeline(
    share: Sequence[ShareItem], c: int, latency: Callable[[], float], lookahead: int | None
) -> tuple[float, int]:
    """(makespan, requests) of the pipeline policy."""
    costs = [chain_and_requests(d) for _, d, _ in share]
    mean_requests = sum(r for _, r in costs) / len(costs)
    window = lookahead or auto_lookahead(c, mean_requests, max(ch for ch, _ in costs))
    units = admission_units(share)
    prio = priorities(share, units, c)
    budget = c + max(1, c // 8)
    sim = Sim(c, latency)
    # Per unit: the requests of each sequential step.
    steps = [deque(step_sizes(unit_requests(share, f, e))) for f, e in units]
    pending = [0] * len(units)
    done = [False] * len(units)
    heap: list[tuple[float, int]] = []
    pushed = head = 0
    admitted = [False] * len(units)
    sent = 0

    def step(u: int) -> None:
        nonlocal sent
        while steps[u]:
            n = steps[u].popleft()
            if n:
                pending[u] = n
                sent += n
                for _ in range(n):
                    sim.send(u)
                return
        done[u] = True

    while True:
        while pushed < len(units) and units[pushed][0] < units[head][0] + window:
            heapq.heappush(heap, (prio[pushed], pushed))
            pushed += 1
        if not admitted[head]:
            admitted[head] = True
            step(head)
        while heap and sim.outstanding < budget:
            _, u = heapq.heappop(heap)
            if not admitted[u]:
                admitted[u] = True
                step(u)
        while head < len(units) and done[head]:
            head += 1
        if head == len(units):
            return sim.t, sent
        if not sim.events:
            continue
        u = sim.next()
        pending[u] -= 1
        if pending[u] == 0:
            step(u)


def simulate_rounds(
    share: Sequence[ShareItem], c: int, latency: Callable[[], float], lookahead: int | None
) -> tuple[float, int]:
    """(makespan, requests) of lock-step rounds over chunks of `lookahead` dialogues."""
    window = lookahead or ROUNDS_LOOKAHEAD
    sim = Sim(c, latency)
    units = admission_units(share)
    sent = 0
    i = 0
    while i < len(units):
        j = i
        while j < len(units) and units[j][0] < units[i][0] + window:
            j += 1
        per = [x for f, e in units[i:j] for x in unit_requests(share, f, e)]
        # One round per live turn (every dialogue still going), then all questions in one batch.
        batches = [
            sum(1 for skip, live, _ in per if step < live and step >= skip)
            for step in range(max(live for _, live, _ in per))
        ]
        batches.append(sum(q for _, _, q in per))
        for n in batches:
            for _ in range(n):
                sim.send(0)
            sent += n
            while sim.events:
                sim.next()
        i = j
    return sim.t, sent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", action="append", default=[])
    parser.add_argument("--concurrency", default="256,1024")
    parser.add_argument("--tails", default="fixed,lognormal")
    parser.add_argument("--schedules", default="auto,rounds")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--lookahead", type=int, default=None)
    parser.add_argument("--lead", type=float, help="override engine.schedule.LEAD")
    parser.add_argument("--window", type=float, help="override engine.schedule.WINDOW")
    args = parser.parse_args()
    import pytest_mtmcs.engine.schedule as policy

    if args.lead is not None:
        policy.LEAD = args.lead
    if args.window is not None:
        policy.WINDOW = args.window
    print(
        "| suite | dialogues | requests | in flight | latency | schedule | slots kept busy "
        f"(mean of {args.seeds} seeds, min-max) |\n|---|---:|---:|---:|---|---|---|"
    )
    with tempfile.TemporaryDirectory(prefix="mtmcs-sim-") as tmp:
        for spec in args.suite or ["native:2048"]:
            dialogues = load(spec, Path(tmp))
            settings = GenerationSettings()
            share = [(d.id, d, settings) for d in dialogues]
            for c in (int(x) for x in args.concurrency.split(",")):
                for tail in args.tails.split(","):
                    for schedule in args.schedules.split(","):
                        busy = []
                        requests = 0
                        for seed in range(args.seeds):
                            rng = random.Random(seed)
                            if tail == "lognormal":
                                med = math.exp(-(SIGMA**2) / 2)

                                def latency(rng: random.Random = rng, med: float = med) -> float:
                                    return med * math.exp(SIGMA * rng.gauss(0, 1))
                            else:

                                def latency() -> float:
                                    return 1.0

                            run = simulate_pipeline if schedule == "auto" else simulate_rounds
                            makespan, requests = run(share, c, latency, args.lookahead)
                            busy.append(requests / (c * makespan))
                        print(
                            f"| {spec} | {len(share):,} | {requests:,} | {c} | {tail} | "
                            f"{schedule} | {statistics.mean(busy):.2f} ({min(busy):.2f}-"
                            f"{max(busy):.2f}) |",
                            flush=True,
                        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
