"""Judging speed: replies per second and per-reply latency of judges, side by side in one run.

    python benchmarks/bench_judge.py [--judge SPEC ...] [--labelled FILE] [--limit N] [--rounds R]

Judges (default: the plugin's default judge and `rules`) label the same replies, with the
requests they answer, from the labelled test split. Each reply is judged as the answer to the
risk turn of an unsafe dialogue, so a judge of both axes decides both (the `ngram` judge's harm
and off-target heads run on every reply). Each round runs every judge in turn
(interleaved, so that machine load hits all of them alike) twice: once over all replies in one
call (throughput, replies/s) and once reply by reply (latency per reply: mean and p99). Memo caches
in the judge modules are cleared before each pass: every reply is judged from scratch. The
figure of merit is the ratio to `rules` measured in the same run; absolute numbers depend on the
machine. One process, one thread: what one of 2 cores gives (xdist runs one judge per worker).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pytest_mtmcs import defaults  # noqa: E402
from pytest_mtmcs.judges import JudgeInput  # noqa: E402
from pytest_mtmcs.judges.agreement import (  # noqa: E402
    build_judge,
    judge_inputs,
    load_labelled_records,
)

DATA = REPO / "tests" / "data" / "judge"


def clear_memos(judges: list[Any]) -> None:
    """Empty every functools cache in the judge modules and on the judges (and their parts):
    each pass judges from scratch."""
    owners: list[Any] = [
        m for n, m in list(sys.modules.items()) if n.startswith("pytest_mtmcs.judges")
    ]
    for j in judges:
        owners.append(j)
        owners.extend(v for v in vars(j).values() if hasattr(v, "__dict__"))
    for owner in owners:
        for obj in list(vars(owner).values()):
            clear = getattr(obj, "cache_clear", None)
            if callable(clear):
                clear()


def one_round(judge: Any, items: list[JudgeInput]) -> tuple[float, list[float]]:
    clear_memos([judge])
    gc.collect()
    start = time.perf_counter()
    judge.judge(items)
    batch = time.perf_counter() - start
    clear_memos([judge])
    gc.collect()
    lat = []
    for it in items:
        t0 = time.perf_counter()
        judge.judge([it])
        lat.append(time.perf_counter() - t0)
    return batch, lat


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--judge",
        action="append",
        default=None,
        help="judge spec, repeatable (default: the plugin's default judge and rules)",
    )
    p.add_argument("--labelled", default=str(DATA / "test.jsonl"))
    p.add_argument("--limit", type=int, default=0, help="first N replies only (default: all)")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    specs = list(dict.fromkeys(args.judge or [defaults.JUDGE, "rules"]))
    rows = load_labelled_records(args.labelled)
    if args.limit:
        rows = rows[: args.limit]
    items = judge_inputs(rows)
    judges = {s: build_judge(s, rows) for s in specs}
    for j in judges.values():  # load artefacts, compile patterns
        j.judge(items[:20])
    batch: dict[str, list[float]] = {s: [] for s in specs}
    lat: dict[str, list[float]] = {s: [] for s in specs}
    for _ in range(args.rounds):
        for s, j in judges.items():
            b, per = one_round(j, items)
            batch[s].append(b)
            lat[s].extend(per)
    chars = statistics.mean(len(r.text) for r in rows)
    print(
        f"{len(items)} replies from {Path(args.labelled).name} (mean {chars:.0f} characters), "
        f"{args.rounds} rounds, one thread"
    )
    print()
    print("| judge | replies/s (batch) | vs rules | latency mean | latency p99 |")
    print("|---|---|---|---|---|")
    base = len(items) / statistics.median(batch["rules"]) if "rules" in batch else None
    for s in specs:
        rate = len(items) / statistics.median(batch[s])
        q = sorted(lat[s])
        p99 = q[min(len(q) - 1, int(0.99 * len(q)))]
        ratio = f"{rate / base:.2f}x" if base else "-"
        print(
            f"| `{s}` ({judges[s].identity.name}) | {rate:,.0f} | {ratio} | "
            f"{statistics.mean(q) * 1e3:.2f} ms | {p99 * 1e3:.2f} ms |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
