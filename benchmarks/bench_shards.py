"""Shards + merge at MTMCS-Bench scale (issue 12): the 30,080-dialogue native suite run as 4 shards
and merged, against one run, on an instant backend (`scripted:refuse-all`, no cache).

    python benchmarks/bench_shards.py [--workdir DIR] [--shards 4]

Measures wall and CPU seconds (user + system of the process and its reaped children) of the one
run, of each shard, and of `pytest-mtmcs merge` (target: merging 4 shards of 30,080 dialogues
takes < 10 s), checks the merged summary.md equals the one run's, and writes its section of
benchmarks/RESULTS.md (between `<!-- bench_shards -->` markers) with the command line.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shlex
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "RESULTS.md"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

import make_native_scale  # noqa: E402
from bench_plugin import Timed, _check, pytest_cmd, run_timed  # noqa: E402

MODEL = "scripted:refuse-all"
TARGET_S = 10.0
START, END = "<!-- bench_shards -->", "<!-- /bench_shards -->"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--workdir", default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--shards", type=int, default=4, help="number of shards (default: 4)")
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="mtmcs-bench-shards-"))
    workdir.mkdir(parents=True, exist_ok=True)
    suite = workdir / "suite"
    if not (suite / "dialogues.jsonl").is_file():
        make_native_scale.build(suite, dialogues=make_native_scale.DIALOGUES)
    (workdir / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    load_before = f"{os.getloadavg()[0]:.1f}"
    base = ["suite", "-q", "--mtmcs-no-cache", f"--mtmcs-model={MODEL}", "--mtmcs-progress=off"]

    one = _check(run_timed(pytest_cmd(*base, "--mtmcs-report=single"), workdir), "one run")
    print(f"one run: {one.wall_s:.1f} s wall, {one.cpu_s:.1f} s CPU")
    n = args.shards
    shards: list[Timed] = []
    for k in range(1, n + 1):
        t = run_timed(pytest_cmd(*base, f"--mtmcs-shard={k}/{n}", f"--mtmcs-report=s{k}"), workdir)
        shards.append(_check(t, f"shard {k}/{n}"))
        print(f"shard {k}/{n}: {t.wall_s:.1f} s wall, {t.cpu_s:.1f} s CPU")
    merge_cmd = [
        sys.executable, "-m", "pytest_mtmcs", "merge", *(f"s{k}" for k in range(1, n + 1)),
        "--out", "merged",
    ]  # fmt: skip
    merged = _check(run_timed(merge_cmd, workdir), "merge")
    print(f"merge: {merged.wall_s:.1f} s wall, {merged.cpu_s:.1f} s CPU")
    same = (workdir / "single" / "summary.md").read_bytes() == (
        workdir / "merged" / "summary.md"
    ).read_bytes()
    dialogues = re.search(r"merged \d+ shards: (\d+) dialogues", merged.output)
    load_after = f"{os.getloadavg()[0]:.1f}"

    shard_cpu = sum(t.cpu_s for t in shards)
    shard_wall_max = max(t.wall_s for t in shards)
    met = merged.wall_s < TARGET_S and same
    lines = [
        START,
        f"## Shards + merge: {n} shards of 30,080 dialogues vs one run (instant backend)",
        "",
        f"Command: `python benchmarks/bench_shards.py --shards {n}` "
        f"({time.strftime('%Y-%m-%d')}; Python {platform.python_version()}, {os.cpu_count()} CPU "
        f"cores, no GPU; 1-minute load average {load_before} before, {load_after} after; other "
        "work was running on the machine). "
        f"Target: merge < {TARGET_S:g} s: {'met' if met else '**MISSED**'}.",
        "",
        f"Suite: `make_native_scale.py`, 30,080 dialogues; each run: `pytest {shlex.join(base)} "
        "--mtmcs-report=DIR` (a shard adds `--mtmcs-shard=K/N`), shards one after another on this "
        f"machine; merge: `{shlex.join(['pytest-mtmcs', *merge_cmd[3:]])}`. "
        f"Merged {dialogues.group(1) if dialogues else '?'} dialogues; merged summary.md "
        f"{'identical to' if same else '**differs from**'} the one run's.",
        "",
        "| | wall s | CPU s |",
        "|---|---|---|",
        f"| one run (all dialogues, report written) | {one.wall_s:.1f} | {one.cpu_s:.1f} |",
        *(
            f"| shard {k}/{n} | {t.wall_s:.1f} | {t.cpu_s:.1f} |"
            for k, t in enumerate(shards, start=1)
        ),
        f"| **merge** of the {n} report folders (checks, aggregation, gate, report) | "
        f"**{merged.wall_s:.1f}** | {merged.cpu_s:.1f} |",
        f"| {n} shards + merge, total CPU | | {shard_cpu + merged.cpu_s:.1f} "
        f"({(shard_cpu + merged.cpu_s) / one.cpu_s:.2f}x the one run) |",
        f"| {n} shards on {n} machines + merge, wall (longest shard + merge) | "
        f"{shard_wall_max + merged.wall_s:.1f} ({(shard_wall_max + merged.wall_s) / one.wall_s:.2f}x "
        "the one run) | |",
        END,
    ]
    block = "\n".join(lines)
    print(block)
    if not args.no_write:
        text = RESULTS.read_text(encoding="utf-8")
        pattern = re.compile(re.escape(START) + r".*?" + re.escape(END), re.DOTALL)
        found = pattern.search(text)
        if found:
            text = text[: found.start()] + block + text[found.end() :]
        else:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
        tmp = RESULTS.with_name(f".{RESULTS.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, RESULTS)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
