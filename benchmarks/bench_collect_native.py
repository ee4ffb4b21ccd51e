"""Collecting a large native suite: this tree's plugin against the plugin as of an older commit.

Builds a `make_native_scale.py` suite (30,080 dialogues by default), then times, side by side in
alternating rounds, `pytest --co -q --mtmcs-suite=SUITE -p no:cacheprovider` (whole process, wall
time) with `pytest_mtmcs` imported from this tree and from `git archive OLD` (the same interpreter
and packages). Written for issue 23 (the suite hash became a hash of the dialogues' content
instead of the files' bytes), but any two commits compare. Writes its section of RESULTS.md.

    python benchmarks/bench_collect_native.py --old COMMIT [--dialogues 30080] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_openai_run import extract  # noqa: E402

RESULTS = HERE / "RESULTS.md"
START, END = "<!-- bench_collect_native -->", "<!-- /bench_collect_native -->"


def timed(cmd: list[str], cwd: Path, pythonpath: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    started = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    m = re.search(r"(\d+) tests? collected", out.stdout)
    if out.returncode != 0 or m is None:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return elapsed


LOAD = (
    "import sys, time\n"
    "from pytest_mtmcs.suite.native import load_suite\n"
    "t = time.perf_counter(); load_suite(sys.argv[1]); print(time.perf_counter() - t)\n"
)


def load_time(suite: Path, pythonpath: Path) -> float:
    """`load_suite` alone, timed inside the process: the part the suite hash is in."""
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    out = subprocess.run(
        [sys.executable, "-c", LOAD, str(suite)], env=env, capture_output=True, text=True
    )
    if out.returncode != 0:
        raise SystemExit(f"load_suite failed:\n{out.stderr[-2000:]}")
    return float(out.stdout.strip())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", required=True, help="the commit to compare with")
    parser.add_argument("--dialogues", type=int, default=30_080)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print, do not edit RESULTS.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mtmcs-bench-") as tmp:
        root = Path(tmp)
        old = extract(args.old, root / "old")
        suite = root / "suite"
        make = [sys.executable, str(HERE / "make_native_scale.py"), "--out", str(suite)]
        subprocess.run([*make, "--dialogues", str(args.dialogues)], check=True, capture_output=True)
        empty = root / "cwd"
        empty.mkdir()
        cmd = [sys.executable, "-m", "pytest", "--co", "-q", f"--mtmcs-suite={suite}"]
        cmd += ["-p", "no:cacheprovider"]
        sides = {"this tree": HERE.parent, f"as of {args.old[:7]}": old}
        walls: dict[str, list[float]] = {name: [] for name in sides}
        loads: dict[str, list[float]] = {name: [] for name in sides}
        timed(cmd, empty, HERE.parent)  # warm the file system cache
        for _ in range(args.repeat):
            for name, path in sides.items():
                walls[name].append(timed(cmd, empty, path))
                loads[name].append(load_time(suite, path))
    (new_name, new), (old_name, before) = walls.items()
    new_load, old_load = loads[new_name], loads[old_name]
    ratios = [a / b for a, b in zip(new, before, strict=True)]
    load = os.getloadavg()[0]
    lines = [
        "## Collection of a large native suite: the content hash (issue 23)",
        "",
        f"Command: `python benchmarks/bench_collect_native.py --old {args.old[:7]} "
        f"--dialogues {args.dialogues} --repeat {args.repeat}` (2 CPU cores, 1-minute load "
        f"average {load:.1f} at the end). `pytest --co -q --mtmcs-suite=SUITE -p no:cacheprovider` "
        f"of a `make_native_scale.py` suite of {args.dialogues:,} dialogues, whole process, wall "
        "time, the two sides alternating round by round.",
        "",
        "| plugin | collection, median s | best s | `load_suite` alone, median s | best s |",
        "|---|---|---|---|---|",
        f"| {old_name} (suite hash = sha256 of the files) | {statistics.median(before):.2f} | "
        f"{min(before):.2f} | {statistics.median(old_load):.2f} | {min(old_load):.2f} |",
        f"| {new_name} (suite hash = sha256 of the canonical content) | "
        f"{statistics.median(new):.2f} | {min(new):.2f} | {statistics.median(new_load):.2f} | "
        f"{min(new_load):.2f} |",
        "",
        "Per-round collection ratios (this tree / old): "
        + ", ".join(f"{r:.2f}" for r in ratios)
        + ".",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        current = RESULTS.read_text(encoding="utf-8")
        block = f"{START}\n{text}\n{END}"
        if START in current:
            head, rest = current.split(START, 1)
            current = head + block + rest.split(END, 1)[1]
        else:
            current = current.rstrip("\n") + "\n\n" + block + "\n"
        RESULTS.write_text(current, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
