"""Collecting a synthetic MTMCS-Bench-scale release folder against pytest's own floor.

Builds 752 rows per split (images as PNG bytes in the parquet, like the release), then times, side
by side in one run, `pytest --collect-only` of the release through the importer
(`--mtmcs-suite=mtmcs-bench:DIR`) against `pytest --collect-only` of as many trivial parametrized
tests. Writes its section of benchmarks/RESULTS.md.

    python benchmarks/bench_import.py [--rows 752] [--variant-images] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
START, END = "<!-- bench_import -->", "<!-- /bench_import -->"


def timed(cmd: list[str], cwd: Path) -> tuple[float, str]:
    started = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return elapsed, out.stdout


def collected(stdout: str) -> int:
    m = re.search(r"(\d+) tests? collected", stdout)
    return int(m.group(1)) if m else -1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=752)
    parser.add_argument("--variant-images", action="store_true")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(HERE))
    from make_mtmcs_scale import build

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        release = build(work / "release", rows=args.rows)
        extra = ["--mtmcs-variant-images"] if args.variant_images else []
        plugin = [
            sys.executable,
            "-m",
            "pytest",
            "--collect-only",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--mtmcs-suite=mtmcs-bench:{release}",
            *extra,
            str(work / "empty"),
        ]
        (work / "empty").mkdir()
        # Count first, so the floor collects exactly as many tests.
        _, out = timed(plugin, work)
        n = collected(out)
        floor_dir = work / "floor"
        floor_dir.mkdir()
        (floor_dir / "test_floor.py").write_text(
            f"import pytest\n\n@pytest.mark.parametrize('i', range({n}))\ndef test_x(i):\n    pass\n"
        )
        floor = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
        floor_s, plugin_s = [], []
        for _ in range(args.repeat):  # interleaved: both see the same machine load
            floor_s.append(timed(floor, floor_dir)[0])
            plugin_s.append(timed(plugin, work)[0])
    f, p = min(floor_s), min(plugin_s)
    ratio = p / f
    load = os.getloadavg()[0]
    command = "python benchmarks/bench_import.py" + (
        " --variant-images" if args.variant_images else ""
    )
    section = "\n".join(
        [
            START,
            "## Importer: collecting an MTMCS-Bench-scale release folder vs pytest's floor",
            "",
            f"Command: `{command}` (2 CPU cores, 1-minute load average {load:.1f}). "
            f"Target: < 3x: {'met' if ratio < 3 else '**MISSED**'}.",
            "",
            f"Synthetic release (`benchmarks/make_mtmcs_scale.py`): {args.rows} rows per split, "
            "images as PNG bytes in the parquet; collected through "
            f"`--mtmcs-suite=mtmcs-bench:DIR{' --mtmcs-variant-images' if args.variant_images else ''}` "
            f"({n} dialogues) against `pytest --collect-only` of {n} trivial parametrized tests. "
            f"Best of {args.repeat}, whole-process wall time.",
            "",
            "| | seconds |",
            "|---|---|",
            f"| pytest floor, {n} trivial tests | {f:.2f} |",
            f"| plugin, importer + collection | {p:.2f} |",
            f"| ratio | {ratio:.2f}x |",
            END,
        ]
    )
    print(section)
    if not args.no_write:
        text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
        if START in text:
            text = text[: text.index(START)] + section + text[text.index(END) + len(END) :]
        else:
            text = text.rstrip() + "\n\n" + section + "\n"
        tmp = RESULTS.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(RESULTS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
