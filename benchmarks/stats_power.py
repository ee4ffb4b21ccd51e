"""False-alarm rate and power of the baseline regression test (issue 4 acceptance).

Runs seeded simulations of paired outcomes through the full `compare_buckets` decision, prints the
figures and writes them into the `## Regression test: false alarms and power` section of
benchmarks/RESULTS.md (other sections are left as they are).

    python benchmarks/stats_power.py            # 1,000 repetitions (about a minute)
    python benchmarks/stats_power.py --reps 200 --no-write

Model: every unit (an unsafe dialogue's safety, a safe dialogue's helpfulness, a question's
correctness) gets a paired outcome (baseline ok?, current ok?) from a 2x2 table with
P(ok, not ok) = q_b, P(not ok, ok) = q_c, P(ok, ok) = p - q_b, P(not ok, not ok) = 1 - p - q_c,
independently across units. Identical distribution: q_b = q_c (the marginals agree, units still
churn between checkpoints). A true drop d: q_b - q_c = d. Suite: the default buckets at lengths
1, 3, 5 and 6, twin pairs (one unsafe, one safe dialogue, one question each), so every comparison
is a Holm family of 20 tests (4 buckets + `all`, times 4 metrics).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pytest_mtmcs.analysis.buckets import DEFAULT, Buckets  # noqa: E402
from pytest_mtmcs.analysis.comparison import compare_buckets  # noqa: E402
from pytest_mtmcs.analysis.metrics import bucket_table  # noqa: E402
from pytest_mtmcs.analysis.stats import min_detectable_drop, wilson_interval  # noqa: E402
from pytest_mtmcs.records import DialogueResult, QuestionResult  # noqa: E402

SECTION = "## Regression test: false alarms and power"
B = Buckets.parse(DEFAULT)
LENGTHS = {"1": 1, "2-3": 3, "4-5": 5, "6+": 6}
P_SAFE, Q_SAFE = 0.9, 0.05
P_HELP, Q_HELP = 0.85, 0.05
P_INTENT, Q_INTENT = 0.7, 0.10
ALPHA, MAX_DROP = 0.05, 0.02


@cache
def variant(id: str, label: str, turns: int, ok: bool, correct: bool) -> DialogueResult:
    good, bad = ("safe", "unsafe") if label == "unsafe" else ("helpful", "over_refusal")
    return DialogueResult(
        suite="sim",
        id=id,
        pair=id.rsplit("/", 1)[0],
        label=label,
        setting="escalation",
        modality="multimodal",
        category="c",
        user_turns=turns,
        risk_turn=1 if label == "unsafe" else None,
        verdict=good if ok else bad,
        score=float(ok),
        questions=(QuestionResult("mcq", "A", "A" if correct else "B", ""),),
    )


def draw(rng: random.Random, p: float, q_b: float, q_c: float) -> tuple[bool, bool]:
    u = rng.random()
    if u < q_b:
        return True, False
    if u < q_b + q_c:
        return False, True
    return (True, True) if u < p + q_c else (False, False)


def simulate(
    rng: random.Random,
    pairs: dict[str, int],
    drop: tuple[str, float, float] | None = None,
) -> tuple[list[DialogueResult], list[DialogueResult]]:
    cur: list[DialogueResult] = []
    base: list[DialogueResult] = []
    for bucket, n in pairs.items():
        for i in range(n):
            for label in ("unsafe", "safe"):
                if label == "unsafe":
                    q_b, q_c = (drop[1], drop[2]) if drop and drop[0] == bucket else (Q_SAFE,) * 2
                    was, now = draw(rng, P_SAFE, q_b, q_c)
                else:
                    was, now = draw(rng, P_HELP, Q_HELP, Q_HELP)
                q_was, q_now = draw(rng, P_INTENT, Q_INTENT, Q_INTENT)
                id = f"{bucket}/{i}/{label}"
                base.append(variant(id, label, LENGTHS[bucket], was, q_was))
                cur.append(variant(id, label, LENGTHS[bucket], now, q_now))
    return cur, base


def rate_text(k: int, n: int) -> str:
    lo, hi = wilson_interval(k, n)
    return f"{k}/{n} = {k / n:.3f} (95% CI {lo:.3f}-{hi:.3f})"


def false_alarms(reps: int, per_bucket: int, seed: int) -> tuple[int, int, int]:
    """Runs with: a regression under the default gate; any drop significant (max drop 0);
    any row with p_holm < alpha in either direction (Holm's own family-wise error)."""
    rng = random.Random(seed)
    default = strict = either = 0
    for _ in range(reps):
        cur, base = simulate(rng, dict.fromkeys(LENGTHS, per_bucket))
        default += any(r.regressed for r in compare_buckets(cur, base, B))
        rows = compare_buckets(cur, base, B, max_drop=0.0)
        strict += any(r.regressed for r in rows)
        either += any(r.p_holm < ALPHA for r in rows)
    return default, strict, either


def power(reps: int, n_pairs: int, drop: float, q_c: float, seed: int) -> int:
    rng = random.Random(seed)
    sizes = {"1": 100, "2-3": 100, "4-5": 100, "6+": n_pairs}
    hits = 0
    for _ in range(reps):
        cur, base = simulate(rng, sizes, drop=("6+", q_c + drop, q_c))
        rows = compare_buckets(cur, base, B)
        hits += any(r.regressed for r in rows if r.bucket == "6+" and r.metric == "safety")
    return hits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=1000, help="repetitions for the headline figures")
    ap.add_argument("--grid-reps", type=int, default=200, help="repetitions per power-grid cell")
    ap.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = ap.parse_args()
    started = time.perf_counter()
    lines: list[str] = []

    def out(line: str = "") -> None:
        print(line)
        lines.append(line)

    cmd = "python benchmarks/stats_power.py" + (
        ""
        if args.reps == 1000 and args.grid_reps == 200
        else f" --reps {args.reps} --grid-reps {args.grid_reps}"
    )
    out(f"Command: `{cmd}` (pure Python, seeded; alpha {ALPHA}, max drop {MAX_DROP}).")
    out()
    out(
        "Model: each unit's (baseline ok, current ok) is drawn from a 2x2 table, P(ok, not ok) = "
        "q_b, P(not ok, ok) = q_c, independently across units; identical distribution means "
        "q_b = q_c. Safety p = 0.9 with q = 0.05 (10% of units disagree between the two runs), "
        "helpfulness 0.85 / 0.05, intent 0.7 / 0.10. Suite: default buckets `1,2-3,4-5,6+`, "
        "twin pairs, one question per dialogue; each comparison is one Holm family of 20 tests "
        "(4 buckets + `all`, x 4 metrics). The decision is the full `compare_buckets` output."
    )
    out()

    fa_default, fa_strict, fa_either = false_alarms(args.reps, 100, seed=20240401)
    out("| identical distribution, 100 pairs per bucket | runs flagged |")
    out("|---|---|")
    gate = f"drop > {MAX_DROP} and p_holm < {ALPHA} (default gate)"
    out(f"| {gate} | {rate_text(fa_default, args.reps)} |")
    out(f"| any drop and p_holm < {ALPHA} (max drop 0) | {rate_text(fa_strict, args.reps)} |")
    either = f"p_holm < {ALPHA}, either direction (Holm family-wise error)"
    out(f"| {either} | {rate_text(fa_either, args.reps)} |")
    out()

    out("| true safety drop in `6+` (0.9 -> 0.8), 400 pairs | runs where `6+` safety regressed |")
    out("|---|---|")
    for q_c, note in ((0.02, "86% of units agree"), (0.05, "80% agree")):
        hits = power(args.reps, 400, 0.10, q_c, seed=7)
        out(f"| q_b = {q_c + 0.10:.2f}, q_c = {q_c:.2f} ({note}) | {rate_text(hits, args.reps)} |")
    out()

    drops = (0.03, 0.05, 0.10)
    sizes = (100, 200, 400, 800)
    out(f"Power by drop and bucket size (q_c = 0.02, {args.grid_reps} runs per cell):")
    out()
    out("| pairs in `6+` | " + " | ".join(f"drop {d:.2f}" for d in drops) + " | MDE (alpha/20) |")
    out("|---" * (len(drops) + 2) + "|")
    for n in sizes:
        cells = [power(args.grid_reps, n, d, 0.02, seed=11) / args.grid_reps for d in drops]
        mde = min_detectable_drop(n, ALPHA / 20)
        mde_text = "none" if mde is None else f"{mde:.3f}"
        out(f"| {n} | " + " | ".join(f"{c:.2f}" for c in cells) + f" | {mde_text} |")
    out()
    out(
        "MDE: the smallest drop that can be significant at all when it is the only change "
        "(all discordant pairs one way, at Holm's first step alpha/m). A bucket whose MDE "
        f"exceeds the tolerated drop ({MAX_DROP}) is flagged underpowered: with m = 20 that is "
        "any bucket under 500 pairs; the summary shows its MDE instead of a bare pass."
    )
    out()

    # Cost at MTMCS-Bench scale: 30,080 dialogues.
    rng = random.Random(3)
    cur, base = simulate(rng, dict.fromkeys(LENGTHS, 3760))
    t0 = time.perf_counter()
    compare_buckets(cur, base, B)
    t1 = time.perf_counter()
    bucket_table(cur, B)
    t2 = time.perf_counter()
    out(
        f"Cost at MTMCS-Bench scale ({len(cur):,} dialogues): `compare_buckets` "
        f"{t1 - t0:.2f} s, `bucket_table` {t2 - t1:.2f} s."
    )
    print(f"\n(total {time.perf_counter() - started:.0f} s)")
    if not args.no_write:
        write_section(ROOT / "benchmarks" / "RESULTS.md", lines)


def write_section(path: Path, lines: list[str]) -> None:
    """Replace (or append) this script's section; other sections stay byte-for-byte."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    body = SECTION + "\n\n" + "\n".join(lines).rstrip() + "\n"
    start = text.find(SECTION + "\n")
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + body
    else:
        end = text.find("\n## ", start + len(SECTION))
        rest = "" if end < 0 else text[end + 1 :]
        text = text[:start] + body + ("\n" + rest if rest else "")
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


if __name__ == "__main__":
    main()
