"""How the share of replies a cascade escalates trades against agreement with human labels.

    python benchmarks/judge_cascade.py [--local SPEC] [--labelled FILE ...] [--thresholds 0,0.5,...]

For each labelled file (default: the judge dev and test splits) the local judge (default: the
plugin's default judge) labels every reply once, with its confidence; then, for each threshold,
the cascade `cascade:LOCAL,oracle` is evaluated: replies below the threshold (or unlabelled, or
without a confidence) take the human label, as a perfect model judge would answer. The table
gives, per threshold, the share escalated and the agreement it buys (3-class accuracy and kappa,
compliance vs not, refusal precision/recall). A real model judge is not perfect: these are upper
bounds of what escalation buys, at exactly the share of model-judge calls shown.

The decision is `pytest_mtmcs.judges.cascade.escalates`, the one the cascade judge uses;
`--check` also runs the real `cascade:LOCAL,oracle` judge at one threshold and compares.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pytest_mtmcs.judges import Judgment  # noqa: E402
from pytest_mtmcs.judges.agreement import (  # noqa: E402
    build_judge,
    default_judge,
    judge_rows,
    load_labelled_records,
    measure,
)
from pytest_mtmcs.judges.cascade import escalates  # noqa: E402
from pytest_mtmcs.judges.ngram_training import ensure_split  # noqa: E402

DATA = REPO / "tests" / "data" / "judge"
THRESHOLDS = (0.0, 0.3, 0.45, 0.55, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.99, 1.0)


def sweep(local: str, path: Path, thresholds: list[float], check: float | None) -> list[str]:
    rows = load_labelled_records(path)
    judge = build_judge(local, rows)
    start = time.perf_counter()
    judged = judge_rows(judge, rows)
    seconds = time.perf_counter() - start
    gold = [r.label for r in rows]
    lines = [
        f"### {path.name}: {len(rows)} replies, local judge {judge.identity} "
        f"({seconds:.1f} s to judge)",
        "",
        "| threshold | escalated | 3-class acc | kappa | compliance vs not [95% CI] | "
        "refusal P | refusal R |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in thresholds:
        labels: list[str | None] = []
        sent = 0
        for g, label, conf in zip(gold, judged.labels, judged.confidence, strict=True):
            if escalates(Judgment(label, confidence=conf), t):
                sent += 1
                labels.append(g)
            else:
                labels.append(label)
        m = measure(gold, labels)
        lo, hi = m.compliance_accuracy.interval
        lines.append(
            f"| {t:g} | {sent / len(rows):.1%} ({sent}) | {m.three_class.accuracy:.3f} | "
            f"{m.three_class.kappa:.3f} | {m.compliance_accuracy.value:.3f} "
            f"[{lo:.3f}, {hi:.3f}] | {m.refusal_precision.value:.3f} | "
            f"{m.refusal_recall.value:.3f} |"
        )
        if check is not None and t == check:
            real = build_judge(f"cascade:{local},oracle", rows, threshold=t)
            got = judge_rows(real, rows).labels
            if got != labels or real.counts["escalated"] != sent:
                raise SystemExit(f"{path.name}: the cascade judge disagrees with the sweep at {t}")
            lines.append(f"|  | (checked against the cascade judge at {t:g}) |  |  |  |  |  |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--local", default=None, help="local judge spec (default: the plugin's)")
    p.add_argument("--labelled", action="append", default=None, help="labelled file(s)")
    p.add_argument("--thresholds", default=",".join(f"{t:g}" for t in THRESHOLDS))
    p.add_argument("--check", type=float, default=None, help="threshold to check end to end")
    args = p.parse_args(argv)
    local = args.local or default_judge()
    files = (
        [Path(f) for f in args.labelled]
        if args.labelled
        else [ensure_split(DATA, "dev"), DATA / "test.jsonl"]
    )
    thresholds = [float(x) for x in args.thresholds.split(",")]
    print(f"cascade:{local},oracle — share escalated vs agreement (oracle = human labels)\n")
    for f in files:
        print("\n".join(sweep(local, f, thresholds, args.check)))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
