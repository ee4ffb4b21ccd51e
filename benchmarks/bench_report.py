"""Time write_report for 30,080 synthetic dialogue results (MTMCS-Bench scale) with 2 baselines."""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path

from pytest_mtmcs.analysis.buckets import DEFAULT, Buckets
from pytest_mtmcs.analysis.comparison import compare_buckets
from pytest_mtmcs.analysis.flips import item_flips
from pytest_mtmcs.analysis.metrics import bucket_table
from pytest_mtmcs.outcome.gate import BaselineComparison, SuiteOutcome
from pytest_mtmcs.outcome.model import ReportData
from pytest_mtmcs.outcome.report import write_files
from pytest_mtmcs.records import DialogueResult, QuestionResult, ReplyResult

N = 30_080
rng = random.Random(0)
B = Buckets.parse(DEFAULT)
REPLY = (
    "Sure! Here's a practical way to approach your question about balconies: 1. Gather what "
    "you need first. 2. Work through it one step at a time. 3. Check the result."
)


def make(p_ok: float, seed: int, with_text: bool) -> list[DialogueResult]:
    r = random.Random(seed)
    out = []
    for i in range(N):
        label = "unsafe" if i % 2 else "safe"
        turns = 3 + (i // 2) % 6  # 3-8 replies
        ok = r.random() < p_ok - 0.02 * turns
        bad = "compliance" if label == "unsafe" else "refusal"
        good = "refusal" if label == "unsafe" else "compliance"
        replies = tuple(
            ReplyResult(
                t, REPLY if with_text else "", bad if (not ok and t == turns) else good, False, 0.01
            )
            for t in range(1, turns + 1)
        )
        qs = tuple(
            QuestionResult(
                "mcq" if q < 4 else "tf",
                "A",
                "A" if r.random() < 0.8 else None,
                "The answer is A.",
                "safe_intent",
            )
            for q in range(6)
        )
        verdict = (
            ("safe" if ok else "unsafe")
            if label == "unsafe"
            else ("helpful" if ok else "over_refusal")
        )
        out.append(
            DialogueResult(
                "mtmcs_bench",
                f"type_{'ab'[i % 4 // 2]}/{i // 4:05d}/{'mm' if i % 8 < 4 else 'text'}/{label}",
                f"p{i // 2}",
                label,
                ("escalation", "context_switch")[i % 4 // 2],
                ("multimodal", "text")[i % 8 // 4],
                f"cat{i % 17}",
                turns,
                1 if label == "unsafe" else None,
                verdict,
                1.0 if ok else 0.0,
                replies,
                qs,
                None,
                None,
                0,
                0.05,
            )
        )
    return out


now = make(0.95, 1, True)
bases = {"qwen2-vl": make(0.93, 2, False), "qwen2.5-vl": make(0.96, 3, False)}
t0 = time.perf_counter()
comps = []
for name, base in bases.items():
    bc = BaselineComparison(name, True)
    bc.comparisons = compare_buckets(now, base, B)
    bc.flips = item_flips(now, base, B)
    comps.append(bc)
outcome = SuiteOutcome(
    "mtmcs_bench",
    {"name": "mtmcs_bench"},
    B,
    now,
    bucket_table(now, B),
    bucket_table(now, B, by="setting"),
    bucket_table(now, B, by="modality"),
    [],
    comps,
    0,
    [],
)
t1 = time.perf_counter()
data = ReportData(
    [outcome],
    {"model": "hf:Qwen/Qwen2.5-VL-7B-Instruct", "judge": {"name": "rules"}},
    {("mtmcs_bench", n): b for n, b in bases.items()},
    current_name="this run",
)
out = Path(tempfile.mkdtemp())
t2, c2 = time.perf_counter(), time.process_time()
write_files(out, data)
t3, c3 = time.perf_counter(), time.process_time()
print(f"dialogues {N}, replies {sum(len(r.replies) for r in now)}, baselines {len(bases)}")
print(f"aggregation (not part of the report, done by aggregate): {t1 - t0:.2f} s")
print(f"write_report (files + plots + HTML): {t3 - t2:.2f} s wall, {c3 - c2:.2f} s CPU")
for f in sorted(out.iterdir()):
    print(f"  {f.name}: {f.stat().st_size / 1e6:.2f} MB")
