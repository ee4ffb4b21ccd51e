"""Load: the `openai:` backend over the native suite at scale, with 1% faults of every kind.

For each size (7,520 / 15,040 / 30,080 dialogues by default): a fresh stub in another process
injecting a 1% share of faults (429, 500, 502, 503, dropped connections, latency spikes, malformed
and truncated 200s, resets mid-body; seeded), `pytest suite -q --mtmcs-model=openai:stub-model
--mtmcs-concurrency=64 --mtmcs-cache=FILE`, then:

- lost: dialogues that ended neither passed/failed nor as a counted error (from pytest's counts);
- duplicated: chat bodies the stub answered with a real completion more than once (its log holds
  a hash per request), and whether that count equals the rows written to the cache;
- peak RSS of the pytest process (`wait4`), which should grow with the results only.

    python benchmarks/bench_load.py [--sizes 7520,15040,30080] [--rate 0.01]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import bench_plugin  # noqa: E402
import make_native_scale  # noqa: E402

KINDS = "429,500,502,503,drop,spike,malformed,truncated,reset"
OUTCOME_RE = re.compile(r"(\d+) (passed|failed|xfailed|xpassed|error|errors|skipped)")


def run_size(workdir: Path, dialogues: int, rate: float, concurrency: int) -> dict[str, object]:
    suite = workdir / f"native-{dialogues}" / "suite"
    if not (suite / "dialogues.jsonl").is_file():
        make_native_scale.build(suite, dialogues=dialogues)
    log = workdir / f"stub-{dialogues}.jsonl"
    cache = workdir / f"cache-{dialogues}.sqlite"
    stub = subprocess.Popen(
        [
            *(sys.executable, "-m", "pytest_mtmcs.testing.stub_server", "--port", "0"),
            *("--fault-rate", str(rate), "--fault-kinds", KINDS, "--seed", "7", "--log", str(log)),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert stub.stdout is not None
    url = stub.stdout.readline().split(" at ", 1)[1].split(" ", 1)[0]
    try:
        cmd = bench_plugin.pytest_cmd(
            "suite",
            "-q",
            "--mtmcs-model=openai:stub-model",
            f"--mtmcs-base-url={url}",
            f"--mtmcs-concurrency={concurrency}",
            f"--mtmcs-cache={cache}",
            "--mtmcs-progress=off",
        )
        start = time.perf_counter()
        with tempfile.TemporaryFile("w+") as out:
            proc = subprocess.Popen(cmd, cwd=suite.parent, stdout=out, stderr=subprocess.STDOUT)
            # wait4: the peak RSS of the pytest process itself (not of the stub).
            _, _, usage = os.wait4(proc.pid, 0)
            out.seek(0)
            output = out.read()
        wall = time.perf_counter() - start
    finally:
        stub.terminate()
        stub.communicate(timeout=60)
    peak_mb = usage.ru_maxrss / 1024
    counts = Counter()
    for n, what in OUTCOME_RE.findall(output.splitlines()[-1] if output else ""):
        counts["error" if what.startswith("error") else what] += int(n)
    answered: Counter[str] = Counter()
    faults: Counter[str] = Counter()
    for line in log.read_text().splitlines():
        rec = json.loads(line)
        if rec["fault"]:
            faults[rec["fault"]] += 1
        if rec["status"] == 200 and rec["fault"] not in ("malformed", "truncated"):
            answered[rec["body"]] += 1
        elif rec["status"] == "unsent":
            answered[rec["body"]] -= 1
    with sqlite3.connect(cache) as db:
        cached = db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
    # Twins' unsafe halves may be expected failures (xfail/xpass): finished all the same.
    finished = counts["passed"] + counts["failed"] + counts["xfailed"] + counts["xpassed"]
    return {
        "dialogues": dialogues,
        "finished": finished,
        "errors": counts["error"],
        "lost": dialogues - finished - counts["error"],
        "generated": sum(1 for n in answered.values() if n > 0),
        "duplicated": sum(n - 1 for n in answered.values() if n > 1),
        "cache_rows": cached,
        "faults": sum(faults.values()),
        "fault_kinds": dict(faults),
        "peak_rss_mb": round(peak_mb, 1),
        "wall_s": round(wall, 1),
        "tail": output.splitlines()[-1] if output else "",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="7520,15040,30080")
    parser.add_argument("--rate", type=float, default=0.01)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="mtmcs-load-") as tmp:
        for size in (int(x) for x in args.sizes.split(",")):
            row = run_size(Path(tmp), size, args.rate, args.concurrency)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    print(
        f"\n{args.rate:.0%} faults of kinds {KINDS}, {args.concurrency} in flight:\n\n"
        "| dialogues | finished | errors | lost | generated | duplicated | cache rows | "
        "faults injected | peak RSS (MB) | wall (s) |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    for r in rows:
        print(
            f"| {r['dialogues']:,} | {r['finished']:,} | {r['errors']} | {r['lost']} | "
            f"{r['generated']:,} | {r['duplicated']} | {r['cache_rows']:,} | {r['faults']:,} | "
            f"{r['peak_rss_mb']} | {r['wall_s']} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
