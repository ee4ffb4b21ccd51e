"""The whole `openai:` run vs the same run on the instant backend: CPU of the pytest process.

Side by side in one run: `pytest suite -q --mtmcs-no-cache --mtmcs-model=scripted:refuse-all`
and `pytest suite -q --mtmcs-no-cache --mtmcs-model=openai:stub-model --mtmcs-concurrency=64
--mtmcs-base-url=STUB` on the `make_native_scale.py` suite (4,096 dialogues by default), the stub in
another process answering at once. The figure is the pytest process's CPU (user + system, read
from `wait4`, so the stub's CPU is not in it); goal: openai <= 3x scripted. With `--old COMMIT`
the openai run of the plugin as of COMMIT (extracted from git into a temp folder; e.g. the
version on our own HTTP/1.1 client, `bench_http.OWN_COMMIT`) is timed in the same rounds.
`--profile FILE` also writes a cProfile of one openai run.

    python benchmarks/bench_openai_run.py [--dialogues 4096] [--repeat 2] [--old COMMIT]
        [--profile out.prof]
"""

from __future__ import annotations

import argparse
import io
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_http  # noqa: E402
import bench_plugin  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dialogues", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--profile", help="write a cProfile of one openai run here")
    parser.add_argument("--old", help="also time the openai run of the plugin as of this commit")
    args = parser.parse_args()
    stub, url = bench_http.start_stub()
    try:
        with tempfile.TemporaryDirectory(prefix="mtmcs-bench-") as tmp:
            old_source = extract(args.old, Path(tmp) / "old") if args.old else None
            suite = bench_plugin._suite(Path(tmp), args.dialogues)
            project = suite.parent
            base = ["suite", "-q", "--mtmcs-no-cache"]
            scripted = [*base, "--mtmcs-model=scripted:refuse-all"]
            openai = [
                *base,
                "--mtmcs-model=openai:stub-model",
                f"--mtmcs-base-url={url}",
                f"--mtmcs-concurrency={args.concurrency}",
            ]
            runs: list[tuple[str, list[str], Path | None]] = [
                ("scripted", scripted, None),
                ("openai", openai, None),
            ]
            if old_source is not None:
                runs.append(("openai-old", openai, old_source))
            cpu: dict[str, list[float]] = {name: [] for name, _, _ in runs}
            wall: dict[str, list[float]] = {name: [] for name, _, _ in runs}
            for i in range(args.repeat):
                order = runs[i % len(runs) :] + runs[: i % len(runs)]
                for name, cmd, source in order:
                    t = bench_plugin.run_timed(
                        bench_plugin.pytest_cmd(*cmd), project, source=source
                    )
                    bench_plugin._check(t, name, ok_codes=(0, 1))
                    if name != "scripted" and "model backend failed" in t.output:
                        raise SystemExit(f"the {name} run had backend errors:\n{t.output[-2000:]}")
                    cpu[name].append(t.cpu_s)
                    wall[name].append(t.wall_s)
                    print(f"{name}: {t.cpu_s:.2f} s CPU, {t.wall_s:.2f} s wall", file=sys.stderr)
            if args.profile:
                cmd = [
                    sys.executable,
                    "-m",
                    "cProfile",
                    "-o",
                    str(Path(args.profile).resolve()),
                    "-m",
                    "pytest",
                    "-p",
                    "no:cacheprovider",
                    *openai,
                ]
                bench_plugin._check(bench_plugin.run_timed(cmd, project), "profile", (0, 1))
    finally:
        stub.terminate()
        stub.wait(timeout=10)
    s, o = statistics.median(cpu["scripted"]), statistics.median(cpu["openai"])
    lines = [
        f"\n{args.dialogues:,} dialogues, --mtmcs-no-cache, median of {args.repeat}:\n",
        "| run | pytest process CPU (s) | wall (s) | CPU / scripted |",
        "|---|---:|---:|---:|",
        f"| scripted:refuse-all | {s:.2f} | {statistics.median(wall['scripted']):.2f} | 1.00x |",
        f"| openai: against the stub, {args.concurrency} in flight | {o:.2f} | "
        f"{statistics.median(wall['openai']):.2f} | **{o / s:.2f}x** (goal <= 3x) |",
    ]
    if "openai-old" in cpu:
        old = statistics.median(cpu["openai-old"])
        lines.append(
            f"| openai: as of {args.old[:7]} | {old:.2f} | "
            f"{statistics.median(wall['openai-old']):.2f} | {old / s:.2f}x |"
        )
    print("\n".join(lines))
    return 0


def extract(commit: str, dest: Path) -> Path:
    """The package `pytest_mtmcs` as of `commit`, under `dest` (for PYTHONPATH)."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", commit, "pytest_mtmcs"],
        cwd=HERE.parent,
        check=True,
        capture_output=True,
    ).stdout
    dest.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
    return dest


if __name__ == "__main__":
    raise SystemExit(main())
