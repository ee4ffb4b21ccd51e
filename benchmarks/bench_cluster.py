"""Does a run keep a serving cluster busy? Efficiency of whole pytest runs against stub replicas.

Each configuration (requests in flight, xdist processes, replicas, latency fixed or heavy-tailed,
schedule) runs the same generated native suite twice, side by side: against R stub servers that
answer after the latency, and against the same servers answering at once. Then

    efficiency = (requests x mean latency / concurrency) / (wall slow - wall instant)

the share of the slots the run kept busy (the instant run takes out start-up, collection and the
harness's own CPU). Heavy tail: lognormal with p99 = 10x the median (sigma 0.99), the median set
so that the mean is the fixed latency; the mean used is the one the stubs actually drew. The
latency is `concurrency / --rate`, so every configuration asks the same requests per second of
the machine (the harness must not be CPU-bound on 2 cores). The stubs run in this process
(threads, one per connection); pytest runs in a subprocess. Also reported: the run's own measure
of requests in flight (run.json `in_flight`) and the peak RSS of the pytest processes.

`--rss N,N,...` instead measures peak RSS at those look-aheads (fixed latency, one replica,
serial, the first concurrency, the auto look-ahead last). `--window-bytes N` measures, in this
process with tracemalloc, what one dialogue costs while it sits in the window (admitted, finished,
not yet handed to pytest): a pipeline over N dialogues asked for the last one first holds all N.
`--same-results N` checks that the schedule changes no result: the same N-dialogue suite run
with `--mtmcs-schedule=rounds --mtmcs-lookahead=256` and with the defaults against one stub whose
replies depend on the whole conversation; results.csv (every column but latency_s) and
summary.md must be identical.

    python benchmarks/bench_cluster.py [--dialogues 2048 | --dialogues 256=2048,1024=8192]
        [--rate 512] [--concurrency 256,1024] [--procs 1,2] [--replicas 1,4]
        [--tails fixed,lognormal] [--schedules auto,rounds] [--rss 256,1024,4096]
        [--window-bytes 4096] [--same-results 1024]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

import bench_plugin  # noqa: E402

from pytest_mtmcs.testing import StubServer  # noqa: E402

SIGMA = math.log(10) / 2.3263  # p99 / median = 10
# Main's behaviour: lock-step rounds, 256 dialogues ahead.
SCHEDULE_ARGS = {
    "auto": [],
    "rounds": ["--mtmcs-schedule=rounds", "--mtmcs-lookahead=256"],
}


@dataclass
class Run:
    wall_s: float
    max_rss_mb: float
    requests: int
    mean_latency_s: float
    in_flight: dict[str, Any]


def run_pytest(project: Path, args: list[str], stubs: list[StubServer], report: Path | None) -> Run:
    """One pytest run; wall time, peak RSS (the largest of its processes), what the stubs saw.
    Without a report folder (the RSS runs: writing parquet loads pandas) no in-flight figure."""
    for s in stubs:
        s.reset()
        s.latency_waited, s.latency_draws = 0.0, 0
    cmd = bench_plugin.pytest_cmd(*args, *([f"--mtmcs-report={report}"] if report else []))
    with tempfile.TemporaryFile("w+b") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(
            cmd, cwd=project, env=bench_plugin._env(), stdout=out, stderr=subprocess.STDOUT
        )
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        out.seek(0)
        text = out.read().decode("utf-8", "replace")
    rc = os.waitstatus_to_exitcode(status)
    if rc not in (0, 1) or "model backend failed" in text:
        raise SystemExit(f"run failed (exit {rc}): {' '.join(args)}\n{text[-3000:]}")
    requests = sum(s.counts.get(200, 0) for s in stubs)
    draws = sum(s.latency_draws for s in stubs)
    mean = (
        sum(s.latency_waited for s in stubs) / draws if draws else stubs[0].latency_s
    )  # fixed latency: no draws
    run_json = json.loads((report / "run.json").read_text()) if report else {}
    return Run(wall, usage.ru_maxrss / 1024, requests, mean, run_json.get("in_flight") or {})


def set_latency(stubs: list[StubServer], mean_s: float, tail: str) -> None:
    for s in stubs:
        if tail == "lognormal" and mean_s > 0:
            s.latency_s, s.latency_sigma = mean_s / math.exp(SIGMA**2 / 2), SIGMA
        else:
            s.latency_s, s.latency_sigma = mean_s, 0.0


def parse_sizes(value: str, concurrencies: list[int]) -> dict[int, int]:
    if "=" not in value:
        return dict.fromkeys(concurrencies, int(value))
    sizes: dict[int, int] = {}
    for part in value.split(","):
        c, n = part.split("=")
        sizes[int(c)] = int(n)
    return {c: sizes[c] for c in concurrencies}


def base_args(urls: str, concurrency: int, procs: int) -> list[str]:
    xdist = ["-n", str(procs)] if procs > 1 else []
    return [
        "suite",
        "-q",
        "--mtmcs-model=openai:stub-model",
        f"--mtmcs-base-url={urls}",
        "--mtmcs-no-cache",
        f"--mtmcs-concurrency={concurrency}",
        "--mtmcs-progress=off",
        *xdist,
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dialogues", default="2048", help="N, or C=N,C=N per concurrency")
    parser.add_argument(
        "--rate", type=float, default=512.0, help="requests/s asked: latency C/rate"
    )
    parser.add_argument("--concurrency", default="256,1024")
    parser.add_argument("--procs", default="1,2")
    parser.add_argument("--replicas", default="1,4")
    parser.add_argument("--tails", default="fixed,lognormal")
    parser.add_argument("--schedules", default="auto")
    parser.add_argument("--rss", default="", help="look-aheads to measure peak RSS at")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--window-bytes", type=int, default=0, help="dialogues held in a window")
    parser.add_argument(
        "--same-results", type=int, default=0, help="dialogues run in both schedules, compared"
    )
    args = parser.parse_args()
    if args.window_bytes:
        return window_bytes(args.window_bytes)
    if args.same_results:
        concurrency = int(args.concurrency.split(",")[0])
        return same_results(args.same_results, concurrency)
    concurrencies = [int(x) for x in args.concurrency.split(",")]
    sizes = parse_sizes(args.dialogues, concurrencies)
    max_replicas = max(int(x) for x in args.replicas.split(","))
    stubs = [
        StubServer(latency_seed=args.seed + i, log=os.devnull).start() for i in range(max_replicas)
    ]
    rows: list[str] = []
    try:
        with tempfile.TemporaryDirectory(prefix="mtmcs-cluster-") as tmp:
            work = Path(tmp)
            if args.rss:
                rows = bench_rss(work, stubs[0], concurrencies[0], sizes, args)
            else:
                rows = bench_efficiency(work, stubs, concurrencies, sizes, args)
    finally:
        for s in stubs:
            s.stop()
    print("\n".join(rows))
    return 0


def bench_efficiency(
    work: Path,
    stubs: list[StubServer],
    concurrencies: list[int],
    sizes: dict[int, int],
    args: argparse.Namespace,
) -> list[str]:
    rows = [
        "| latency | in flight | -n | replicas | schedule | dialogues | requests | mean latency "
        "(s) | wall slow (s) | wall instant (s) | ideal (s) | efficiency | run.json mean in "
        "flight | peak RSS (MB) |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for tail in args.tails.split(","):
        for c in concurrencies:
            project = bench_plugin._suite(work, sizes[c]).parent
            (project / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
            for procs in (int(x) for x in args.procs.split(",")):
                for replicas in (int(x) for x in args.replicas.split(",")):
                    mine = stubs[:replicas]
                    urls = ",".join(s.base_url for s in mine)
                    for schedule in args.schedules.split(","):
                        cmd = base_args(urls, c, procs) + SCHEDULE_ARGS[schedule]
                        set_latency(mine, c / args.rate, tail)
                        slow = run_pytest(project, cmd, mine, work / "slow")
                        set_latency(mine, 0.0, "fixed")
                        fast = run_pytest(project, cmd, mine, work / "fast")
                        ideal = slow.requests * slow.mean_latency_s / c
                        eff = ideal / (slow.wall_s - fast.wall_s)
                        busy = slow.in_flight.get("mean", float("nan"))
                        row = (
                            f"| {tail} | {c} | {procs} | {replicas} | {schedule} | {sizes[c]:,} "
                            f"| {slow.requests:,} | {slow.mean_latency_s:.3f} | {slow.wall_s:.1f} "
                            f"| {fast.wall_s:.1f} | {ideal:.1f} | **{eff:.2f}** | {busy:.0f} "
                            f"({busy / c:.0%}) | {max(slow.max_rss_mb, fast.max_rss_mb):.0f} |"
                        )
                        rows.append(row)
                        print(row, file=sys.stderr, flush=True)
    return rows


def bench_rss(
    work: Path,
    stub: StubServer,
    concurrency: int,
    sizes: dict[int, int],
    args: argparse.Namespace,
) -> list[str]:
    project = bench_plugin._suite(work, sizes[concurrency]).parent
    (project / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    rows = [
        f"{sizes[concurrency]:,} dialogues, {concurrency} in flight, serial, fixed latency "
        f"{concurrency / args.rate:.2f} s\n",
        "| --mtmcs-lookahead | wall (s) | peak RSS (MB) |",
        "|---|---:|---:|",
    ]
    for lookahead in [*args.rss.split(","), "auto"]:
        set_latency([stub], concurrency / args.rate, "fixed")
        cmd = [*base_args(stub.base_url, concurrency, 1), f"--mtmcs-lookahead={lookahead}"]
        run = run_pytest(project, cmd, [stub], None)
        row = f"| {lookahead} | {run.wall_s:.1f} | {run.max_rss_mb:.0f} |"
        rows.append(row)
        print(row, file=sys.stderr, flush=True)
    return rows


def window_bytes(n: int) -> int:
    """Bytes per dialogue held in the window, and per result handed out, by tracemalloc."""
    import tracemalloc

    from pytest_mtmcs.engine.runner import Engine
    from pytest_mtmcs.engine.schedule import Pipeline
    from pytest_mtmcs.judges.rules import RulesJudge
    from pytest_mtmcs.records import GenerationSettings
    from pytest_mtmcs.suite import resolve_suite

    class Instant:
        """A streaming backend answering at once, on the caller's thread."""

        spec = "instant:"
        concurrency = 256

        def fingerprint(self) -> dict[str, str]:
            return {"spec": self.spec}

        def generate(self, requests: Any) -> list[Any]:
            return [bench_plugin.make_native_scale.WORDS[0] * 40 for _ in requests]

        def submit(self, requests: Any, done: Any) -> None:
            for i, text in enumerate(self.generate(requests)):
                done(i, text)

        def close(self) -> None:
            pass

    with tempfile.TemporaryDirectory(prefix="mtmcs-window-") as tmp:
        suite = resolve_suite(str(bench_plugin._suite(Path(tmp), n)))
    settings = GenerationSettings()
    share = [(d.id, d, settings) for d in suite.dialogues]
    engine = Engine(Instant(), RulesJudge(), settings)
    pipeline = Pipeline(share, concurrency=256, lookahead=n)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    # Admits and finishes all n (the instant backend answers within the pump), none handed out.
    pipeline._engine_for = lambda s: engine
    pipeline._fill_window()
    pipeline._pump(block=False)
    held = tracemalloc.get_traced_memory()[0] - before
    results: dict[str, Any] = {}
    for key, _, _ in share:
        if key not in results:
            results.update(pipeline.run_through(key, lambda s: engine))
    left = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    print(
        f"{n:,} native dialogues: {held / n / 1024:.1f} KiB per dialogue held in the window "
        f"(peak window {pipeline.peak_window:,}); {left / n / 1024:.1f} KiB per result kept "
        "after it was handed out"
    )
    return 0


def same_results(n: int, concurrency: int) -> int:
    """Runs one suite in both schedules; 0 when results.csv and summary.md are identical."""
    import csv
    import hashlib

    from pytest_mtmcs.testing.stub_judges import VARIED_REPLIES, varied_respond

    def respond(body: dict[str, Any]) -> str:
        # Intent answers as the stub gives them; replies from the whole conversation, so that a
        # turn sent with the wrong history would change a result.
        reply = varied_respond(body)
        if reply not in VARIED_REPLIES:
            return reply
        digest = hashlib.sha256(json.dumps(body["messages"], sort_keys=True).encode()).digest()
        return VARIED_REPLIES[digest[0] % len(VARIED_REPLIES)]

    def table(report: Path) -> list[dict[str, str]]:
        with open(report / "results.csv", encoding="utf-8", newline="") as fh:
            return [{k: v for k, v in r.items() if k != "latency_s"} for r in csv.DictReader(fh)]

    with tempfile.TemporaryDirectory(prefix="mtmcs-same-") as tmp:
        work = Path(tmp)
        project = bench_plugin._suite(work, n).parent
        (project / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
        with StubServer(respond=respond, log=os.devnull) as stub:
            runs = {}
            for schedule in ("rounds", "auto"):
                cmd = base_args(stub.base_url, concurrency, 1) + SCHEDULE_ARGS[schedule]
                report = work / schedule
                run = run_pytest(project, cmd, [stub], report)
                runs[schedule] = (table(report), (report / "summary.md").read_text(), run)
    (rows_r, md_r, run_r), (rows_a, md_a, run_a) = runs["rounds"], runs["auto"]
    verdicts: dict[str, int] = {}
    for r in rows_a:
        verdicts[r["verdict"]] = verdicts.get(r["verdict"], 0) + 1
    same = rows_r == rows_a and md_r == md_a
    print(
        f"{n:,} native dialogues, {concurrency} in flight, rounds vs auto: results.csv "
        f"{'identical' if rows_r == rows_a else 'DIFFERENT'} ({len(rows_a):,} rows, all columns "
        f"but latency_s; verdicts {dict(sorted(verdicts.items()))}), summary.md "
        f"{'identical' if md_r == md_a else 'DIFFERENT'}; {run_r.requests:,} and "
        f"{run_a.requests:,} requests answered"
    )
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
