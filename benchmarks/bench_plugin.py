"""Speed of the plugin at benchmark scale, measured side by side in one run (issue 3).

    python benchmarks/bench_plugin.py [--only floor,hf,openai,cache,xdist] [--workdir DIR]
        [--repeat N] [--floor-xdist]

Measurements (each printed, and written as its own section of benchmarks/RESULTS.md together with
the exact command line; a section not measured in this run is left as it was):

- floor: the plugin with an instant backend (`scripted:refuse-all`, no cache) on a 30,080-dialogue
  native suite against pytest running 30,080 trivial parametrized tests: collection and total time.
- hf: `tiny:qwen2.5-vl` through the engine (no pytest), batch 16 against batch 1, outputs compared.
- openai: the `openai:` backend against the stub server (a separate process, 50 ms per answer),
  32 requests in flight against 1, connections warmed first.
- cache: a cold plugin run against a warm-cache re-run (tiny checkpoint, 16 new tokens).
- xdist: `-n 2` against `-n 0` on the tiny checkpoint (1,024 dialogues, 16 new tokens).

Times are wall-clock seconds of whole processes (the interpreter start included), medians of
`--repeat` rounds where repeated (the floor: medians of per-round ratios too), plus CPU seconds (user + system, the process and its reaped
children) because shared machines are noisy. Subprocesses run with the repository first on
PYTHONPATH, in scratch folders under `--workdir` that have no pytest configuration of their own.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "RESULTS.md"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

import make_native_scale  # noqa: E402

MEASUREMENTS = ("floor", "hf", "openai", "cache", "xdist")
FLOOR_TESTS = make_native_scale.DIALOGUES
SUMMARY_RE = re.compile(
    r"(\d+) (?:turns|answers?) from cache(?: \(model and judge\))?, (\d+) (?:generated|model requests?)"
)
TINY = "tiny:qwen2.5-vl"
SECTION_TITLES = {
    "floor": "Plugin overhead: instant backend vs pytest's floor (30,080 dialogues)",
    "hf": "hf: batched generation, batch 16 vs batch 1 (tiny checkpoint)",
    "openai": "openai: 32 requests in flight vs 1 (stub server, 50 ms per answer)",
    "cache": "Response cache: warm re-run vs cold run (tiny checkpoint)",
    "xdist": "xdist: -n 2 vs -n 0 (tiny checkpoint)",
}
TARGETS = {
    "floor": "collection within 2x, total within 1.3x (wall, median of per-round ratios)",
    "hf": ">= 3x dialogues/s, matching outputs",
    "openai": ">= 20x requests/s",
    "cache": "0 generated on the warm run, >= 10x faster",
    "xdist": ">= 1.5x",
}


@dataclass(frozen=True)
class Timed:
    wall_s: float
    cpu_s: float
    rc: int
    output: str


@dataclass
class Section:
    key: str
    lines: list[str]
    met: bool | None  # None: not applicable / could not tell


# --- running things -------------------------------------------------------------------------


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    # Colour codes and terminal width would change what is written, not what is measured.
    env.pop("PYTEST_ADDOPTS", None)
    env["NO_COLOR"] = "1"
    return env


def _plugin_args() -> list[str]:
    """`-p pytest_mtmcs.plugin` when the package is not installed with its entry point."""
    eps = entry_points(group="pytest11")
    return (
        []
        if any(ep.value == "pytest_mtmcs.plugin" for ep in eps)
        else ["-p", "pytest_mtmcs.plugin"]
    )


def run_timed(
    cmd: Sequence[str], cwd: Path, *, timeout_s: float = 3600, source: Path | None = None
) -> Timed:
    """Runs a command, output to a file; wall time and CPU time of it and its reaped children.

    `source`: another checkout of the plugin to import instead of this one (first on PYTHONPATH).
    """
    env = _env()
    if source is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(source), env["PYTHONPATH"]])
    with tempfile.TemporaryFile("w+b") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(list(cmd), cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = start + timeout_s
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.01)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode("utf-8", "replace")
    return Timed(wall, usage.ru_utime + usage.ru_stime, proc.returncode, text)


def pytest_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *_plugin_args(), *args]


def _check(t: Timed, what: str, ok_codes: Sequence[int] = (0,)) -> Timed:
    if t.rc not in ok_codes:
        tail = "\n".join(t.output.splitlines()[-30:])
        raise SystemExit(f"{what} failed (exit {t.rc}):\n{tail}")
    return t


def summary_counts(output: str) -> tuple[int, int] | None:
    """(turns from cache, generated) from the plugin's summary line."""
    m = SUMMARY_RE.search(output)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("inf")


def _suite(workdir: Path, dialogues: int) -> Path:
    folder = workdir / f"native-{dialogues}" / "suite"
    if not (folder / "dialogues.jsonl").is_file():
        make_native_scale.build(folder, dialogues=dialogues)
    return folder


def _verdict(met: bool | None) -> str:
    return {True: "met", False: "**MISSED**", None: "n/a"}[met]


# --- 1. instant backend vs pytest's floor -----------------------------------------------------


def _median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def bench_floor(
    workdir: Path,
    repeat: int,
    xdist: bool = False,
    variants: Sequence[tuple[str, Path]] = (),
    tests: int = FLOOR_TESTS,
) -> Section:
    """The plugin on an instant backend against pytest's floor, side by side in every round.

    Each round times the floor and the plugin back to back (the order alternating between rounds,
    so that drift on a shared machine hits both alike) and takes their ratio; the table reports
    the median over rounds of each time and of each ratio. `variants` (label, checkout): other
    versions of the plugin (e.g. `git worktree add DIR COMMIT`) timed in the same rounds, for a
    before/after table of the total run.
    """
    suite = _suite(workdir, tests)
    project = suite.parent
    floor_dir = workdir / ("floor" if tests == FLOOR_TESTS else f"floor-{tests}")
    floor_dir.mkdir(parents=True, exist_ok=True)
    (floor_dir / "test_floor.py").write_text(
        f'import pytest\n\n\n@pytest.mark.parametrize("i", range({tests}))\n'
        "def test_x(i):\n    pass\n",
        encoding="utf-8",
    )
    plugin = ["suite", "-q", "--mtmcs-no-cache", "--mtmcs-model=scripted:refuse-all"]
    floor = ["test_floor.py", "-q"]
    phases: list[tuple[str, str, list[str]]] = [
        ("collection (`--collect-only`)", "c", ["--collect-only"]),
        ("total run", "r", []),
    ]
    if xdist:
        phases.append(("total run, `-n 2`", "x", ["-n", "2"]))
    runs: dict[str, list[Timed]] = {f"{side}{key}": [] for _, key, _ in phases for side in "fp"}
    for label, _ in variants:
        runs[f"v:{label}"] = []
    for i in range(repeat):
        for _, key, extra in phases:
            order: list[tuple[str, Path, list[str], Path | None]] = [
                (f"f{key}", floor_dir, floor, None),
                (f"p{key}", project, plugin, None),
            ]
            if key == "r":
                order += [(f"v:{label}", project, plugin, src) for label, src in variants]
            if i % 2:
                order.reverse()
            for name, cwd, args, src in order:
                runs[name].append(
                    _check(run_timed(pytest_cmd(*args, *extra), cwd, source=src), name)
                )
        print(
            f"  floor round {i + 1}/{repeat}: "
            + ", ".join(f"{k} {v[-1].wall_s:.1f}s/{v[-1].cpu_s:.1f}cpu" for k, v in runs.items()),
            flush=True,
        )
    lines = [
        f"Suite: `make_native_scale.py`, {tests:,} dialogues (lengths 1-8, twins, "
        "images, 2 questions each); plugin: `pytest suite -q -p no:cacheprovider "
        "--mtmcs-no-cache --mtmcs-model=scripted:refuse-all`; floor: `pytest test_floor.py -q "
        f'-p no:cacheprovider` with `@pytest.mark.parametrize("i", range({tests}))`. '
        f"{repeat} rounds, floor and plugin back to back in each (order alternating); medians "
        "over rounds of the times and of the per-round ratios.",
        "",
        "| | floor wall s | plugin wall s | ratio | floor CPU s | plugin CPU s | CPU ratio | target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    met = True
    for title, key, _ in phases:
        f, p = runs[f"f{key}"], runs[f"p{key}"]
        wall_ratio = _median([_ratio(b.wall_s, a.wall_s) for a, b in zip(f, p, strict=True)])
        cpu_ratio = _median([_ratio(b.cpu_s, a.cpu_s) for a, b in zip(f, p, strict=True)])
        target = 2.0 if key == "c" else 1.3
        met = met and wall_ratio <= target
        lines.append(
            f"| {title} | {_median([r.wall_s for r in f]):.1f} | {_median([r.wall_s for r in p]):.1f} "
            f"| {wall_ratio:.2f}x | {_median([r.cpu_s for r in f]):.1f} | "
            f"{_median([r.cpu_s for r in p]):.1f} | {cpu_ratio:.2f}x | <= {target:g}x |"
        )
    if variants:
        lines += [
            "",
            "Versions of the plugin timed in the same rounds (total run):",
            "",
            "| plugin | wall s | ratio | CPU s | CPU ratio |",
            "|---|---|---|---|---|",
        ]
        fr = runs["fr"]
        for label, key in [
            *((label, f"v:{label}") for label, _ in variants),
            ("this checkout", "pr"),
        ]:
            v = runs[key]
            lines.append(
                f"| {label} | {_median([r.wall_s for r in v]):.1f} | "
                f"{_median([_ratio(b.wall_s, a.wall_s) for a, b in zip(fr, v, strict=True)]):.2f}x | "
                f"{_median([r.cpu_s for r in v]):.1f} | "
                f"{_median([_ratio(b.cpu_s, a.cpu_s) for a, b in zip(fr, v, strict=True)]):.2f}x |"
            )
    lines += [
        "",
        "Per-round wall ratios (plugin / floor): "
        + "; ".join(
            f"{title.split(' (')[0]}: "
            + ", ".join(
                f"{_ratio(b.wall_s, a.wall_s):.2f}"
                for a, b in zip(runs[f"f{key}"], runs[f"p{key}"], strict=True)
            )
            for title, key, _ in phases
        )
        + ".",
    ]
    return Section("floor", lines, met)


# --- 2. hf batching ---------------------------------------------------------------------------


def _engine_run(batch: int, dialogues: Sequence[Any], max_new: int) -> tuple[float, dict[str, Any]]:
    from pytest_mtmcs.backends import BackendOptions, create_backend
    from pytest_mtmcs.engine.runner import Engine
    from pytest_mtmcs.judges import create_judge
    from pytest_mtmcs.records import GenerationSettings

    backend = create_backend(TINY, BackendOptions(batch_size=batch, device="cpu"))
    try:
        engine = Engine(backend, create_judge("rules"), GenerationSettings(max_new_tokens=max_new))
        engine.run(dialogues[:4])  # warm-up: first-call allocations, image decoding code paths
        start = time.perf_counter()
        out = engine.run(dialogues)
        return time.perf_counter() - start, out
    finally:
        backend.close()


def _outputs(result: Any) -> tuple[Any, ...]:
    return (
        tuple(r.text for r in result.replies),
        tuple(q.raw for q in result.questions),
        result.error,
    )


def bench_hf(workdir: Path, n: int, max_new: int) -> Section:
    from pytest_mtmcs.suite import load_suite

    suite = load_suite(_suite(workdir, 1024))
    dialogues = list(suite.dialogues[:n])
    calls = sum(d.user_turns + len(d.questions) for d in dialogues)
    t16, out16 = _engine_run(16, dialogues, max_new)
    print(f"  batch 16: {t16:.1f}s", flush=True)
    t1, out1 = _engine_run(1, dialogues, max_new)
    print(f"  batch 1: {t1:.1f}s", flush=True)
    same = sum(1 for d in dialogues if _outputs(out1[d.id]) == _outputs(out16[d.id]))
    errors = sum(1 for r in out16.values() if r.error) + sum(1 for r in out1.values() if r.error)
    speedup = _ratio(t1, t16)
    met = speedup >= 3.0 and same == len(dialogues) and not errors
    lines = [
        f"{len(dialogues)} dialogues of the 1,024-dialogue native suite ({calls} generations: "
        f"turns and intent questions), `{TINY}`, max_new_tokens {max_new}, CPU, through "
        "`runner.Engine` (no pytest, no cache), after a 4-dialogue warm-up.",
        "",
        "| batch | seconds | dialogues/s | generations/s |",
        "|---|---|---|---|",
        f"| 1 | {t1:.1f} | {len(dialogues) / t1:.1f} | {calls / t1:.1f} |",
        f"| 16 | {t16:.1f} | {len(dialogues) / t16:.1f} | {calls / t16:.1f} |",
        "",
        f"Speed-up {speedup:.2f}x (target >= 3x). Outputs (every reply and intent answer) "
        f"identical for {same}/{len(dialogues)} dialogues; backend errors: {errors}.",
    ]
    return Section("hf", lines, met)


# --- 3. openai concurrency --------------------------------------------------------------------


def _start_stub(latency_ms: float) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest_mtmcs.testing.stub_server",
            "--port",
            "0",
            "--latency-ms",
            str(latency_ms),
        ],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    m = re.search(r"(http://127\.0\.0\.1:\d+/v1)", line)
    if not m:
        proc.kill()
        raise SystemExit(f"stub server did not start: {line!r}")
    return proc, m.group(1)


def _requests(workdir: Path, n: int) -> list[Any]:
    from pytest_mtmcs.records import ChatRequest, GenerationSettings, Message, RequestMeta
    from pytest_mtmcs.suite import load_suite

    suite = load_suite(_suite(workdir, 1024))
    settings = GenerationSettings(max_new_tokens=16)
    out = []
    for i in range(n):
        d = suite.dialogues[i % len(suite.dialogues)]
        out.append(
            ChatRequest(
                (Message("user", d.turns[0].text, d.image),),
                settings,
                RequestMeta(f"{d.id}#{i}", 1),
            )
        )
    return out


def _rate(concurrency: int, base_url: str, requests: Sequence[Any]) -> tuple[float, int]:
    from pytest_mtmcs.backends import BackendOptions, create_backend
    from pytest_mtmcs.errors import BackendError

    backend = create_backend(
        "openai:stub", BackendOptions(base_url=base_url, concurrency=concurrency, max_retries=0)
    )
    try:
        backend.generate(requests[: 2 * concurrency])  # open and warm every connection
        start = time.perf_counter()
        out = backend.generate(requests)
        elapsed = time.perf_counter() - start
    finally:
        backend.close()
    return elapsed, sum(1 for r in out if isinstance(r, BackendError))


def bench_openai(workdir: Path, n32: int, n1: int, latency_ms: float) -> Section:
    proc, base_url = _start_stub(latency_ms)
    try:
        requests = _requests(workdir, max(n32, n1))
        t32, e32 = _rate(32, base_url, requests[:n32])
        print(f"  32 in flight: {n32} requests in {t32:.2f}s", flush=True)
        t1, e1 = _rate(1, base_url, requests[:n1])
        print(f"  1 in flight: {n1} requests in {t1:.2f}s", flush=True)
    finally:
        proc.terminate()
        proc.wait(10)
    r32, r1 = n32 / t32, n1 / t1
    speedup = _ratio(r32, r1)
    met = speedup >= 20.0 and not (e32 or e1)
    lines = [
        f"Stub: `python -m pytest_mtmcs.testing.stub_server --port 0 --latency-ms {latency_ms:g}` "
        "in its own process; requests: the first user turn of native-suite dialogues (half with "
        'an image, sent as a data URL); `create_backend("openai:stub", '
        "BackendOptions(concurrency=N))`, connections warmed with 2N requests first.",
        "",
        "| in flight | requests | seconds | requests/s | errors |",
        "|---|---|---|---|---|",
        f"| 1 | {n1} | {t1:.2f} | {r1:.1f} | {e1} |",
        f"| 32 | {n32} | {t32:.2f} | {r32:.1f} | {e32} |",
        "",
        f"Speed-up {speedup:.1f}x (target >= 20x; the ceiling is 32x, "
        f"{1000 / latency_ms * 32:.0f} requests/s).",
    ]
    return Section("openai", lines, met)


# --- 4. warm cache ----------------------------------------------------------------------------


def bench_cache(workdir: Path, dialogues: int, max_new: int) -> Section:
    suite = _suite(workdir, dialogues)
    project = suite.parent
    cache = workdir / "cache-bench.sqlite"
    for p in (cache, Path(f"{cache}-wal"), Path(f"{cache}-shm")):
        p.unlink(missing_ok=True)
    args = [
        "suite",
        "-q",
        f"--mtmcs-model={TINY}",
        f"--mtmcs-max-new-tokens={max_new}",
        f"--mtmcs-cache={cache}",
    ]
    cold = _check(run_timed(pytest_cmd(*args), project), "cold run")
    print(f"  cold: {cold.wall_s:.1f}s", flush=True)
    warm = _check(run_timed(pytest_cmd(*args), project), "warm run")
    print(f"  warm: {warm.wall_s:.1f}s", flush=True)
    cold_counts, warm_counts = summary_counts(cold.output), summary_counts(warm.output)
    speedup = _ratio(cold.wall_s, warm.wall_s)
    met = bool(warm_counts and warm_counts[1] == 0 and speedup >= 10.0)
    lines = [
        f"`pytest suite -q -p no:cacheprovider --mtmcs-model={TINY} "
        f"--mtmcs-max-new-tokens={max_new} --mtmcs-cache=FILE` on the {dialogues:,}-dialogue "
        "native suite, run twice on a fresh cache file.",
        "",
        "| run | wall s | CPU s | summary: from cache, generated |",
        "|---|---|---|---|",
        f"| cold | {cold.wall_s:.1f} | {cold.cpu_s:.1f} | {cold_counts} |",
        f"| warm | {warm.wall_s:.1f} | {warm.cpu_s:.1f} | {warm_counts} |",
        "",
        f"Warm re-run {speedup:.1f}x faster (target >= 10x); model calls on the warm run: "
        f"{warm_counts[1] if warm_counts else 'unknown'} (target 0).",
    ]
    if cold_counts and warm_counts and warm_counts[0] != cold_counts[1]:
        lines += [
            "",
            f"The warm run found {warm_counts[0]} distinct cached replies for the cold run's "
            f"{cold_counts[1]} model calls: twins with an identical conversation prefix (escalation "
            "twins share every turn before the last) were both generated, in the same batch, and stored once.",
        ]
    return Section("cache", lines, met)


# --- 5. xdist ---------------------------------------------------------------------------------


def _failure(t: Timed) -> str:
    """The most telling line of a failed run's output, for the results page."""
    lines = [ln.strip() for ln in t.output.splitlines() if ln.strip()]
    for marker in ("INTERNALERROR> E", "INTERNALERROR>", "Error:", "error"):
        found = [ln for ln in lines if marker in ln and "Traceback" not in ln]
        if found:
            return found[-1][:300]
    return lines[-1][:300] if lines else "(no output)"


def bench_xdist(workdir: Path, dialogues: int, max_new: int) -> Section:
    suite = _suite(workdir, dialogues)
    project = suite.parent
    args = [
        "suite",
        "-q",
        f"--mtmcs-model={TINY}",
        f"--mtmcs-max-new-tokens={max_new}",
        "--mtmcs-no-cache",
    ]
    serial = _check(run_timed(pytest_cmd(*args, "-n", "0"), project), "-n 0 run")
    print(f"  -n 0: {serial.wall_s:.1f}s", flush=True)
    par = run_timed(pytest_cmd(*args, "-n", "2"), project)
    print(f"  -n 2: {par.wall_s:.1f}s (exit {par.rc})", flush=True)
    s_counts, p_counts = summary_counts(serial.output), summary_counts(par.output)
    speedup = _ratio(serial.wall_s, par.wall_s)
    same_calls = s_counts is not None and s_counts == p_counts
    crashed = "node down" in par.output
    met = speedup >= 1.5 and same_calls and par.rc == 0 and not crashed
    lines = [
        f"`pytest suite -q -p no:cacheprovider --mtmcs-model={TINY} "
        f"--mtmcs-max-new-tokens={max_new} --mtmcs-no-cache -n N` on the {dialogues:,}-dialogue "
        f"native suite; {os.cpu_count()} CPU cores, no GPU.",
        "",
        "| run | exit | wall s | CPU s | summary: from cache, generated |",
        "|---|---|---|---|---|",
        f"| -n 0 | {serial.rc} | {serial.wall_s:.1f} | {serial.cpu_s:.1f} | {s_counts} |",
        f"| -n 2 | {par.rc} | {par.wall_s:.1f} | {par.cpu_s:.1f} | {p_counts} |",
        "",
        f"Speed-up {speedup:.2f}x (target >= 1.5x); model calls equal: {same_calls}.",
    ]
    if par.rc != 0 or crashed:
        lines += [
            "",
            f"The `-n 2` run did not complete cleanly (exit {par.rc}"
            + (", a worker went down" if crashed else "")
            + f"): `{_failure(par)}`. Its time is not a valid measurement.",
        ]
    return Section("xdist", lines, met)


# --- RESULTS.md -------------------------------------------------------------------------------


def _markers(key: str) -> tuple[str, str]:
    return f"<!-- bench_plugin:{key} -->", f"<!-- /bench_plugin:{key} -->"


def render(section: Section, command: str, when: str, load: str) -> str:
    start, end = _markers(section.key)
    body = [
        start,
        f"## {SECTION_TITLES[section.key]}",
        "",
        f"Command: `{command}` ({when}; Python {platform.python_version()}, {os.cpu_count()} CPU "
        f"cores, no GPU; 1-minute load average {load}). "
        f"Target: {TARGETS[section.key]}: {_verdict(section.met)}.",
        "",
        *section.lines,
        end,
    ]
    return "\n".join(body)


def update_results(path: Path, blocks: dict[str, str]) -> None:
    """Replaces (or appends) only this script's sections; written atomically."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    for key in MEASUREMENTS:
        if key not in blocks:
            continue
        start, end = _markers(key)
        pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
        found = pattern.search(text)
        if found:
            text = text[: found.start()] + blocks[key] + text[found.end() :]
        else:
            text = text.rstrip("\n") + "\n\n" + blocks[key] + "\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _placeholders(argv: list[str]) -> list[str]:
    """The command line as RESULTS.md records it: folders of this machine (the work folder, the
    other checkouts timed) as DIR, DIR2, ..., so that no machine path is written there."""
    out: list[str] = []
    folders = 0
    take_dir = False
    for a in argv:
        if take_dir:
            folders += 1
            out.append("DIR" if folders == 1 else f"DIR{folders}")
            take_dir = False
            continue
        if a == "--workdir":
            take_dir = True
        elif a.startswith("--workdir="):
            folders += 1
            a = "--workdir=" + ("DIR" if folders == 1 else f"DIR{folders}")
        elif "=" in a and Path(a.rpartition("=")[2]).is_dir():  # LABEL=DIR, --variant=LABEL=DIR
            folders += 1
            a = a.rpartition("=")[0] + "=" + f"DIR{folders}"
        out.append(a)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--only",
        default=",".join(MEASUREMENTS),
        help=f"comma-separated subset of {', '.join(MEASUREMENTS)}",
    )
    parser.add_argument("--workdir", help="scratch folder (default: a fresh temporary folder)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of the floor measurement")
    parser.add_argument(
        "--floor-xdist", action="store_true", help="floor measurement: also time both with -n 2"
    )
    parser.add_argument(
        "--floor-dialogues",
        type=int,
        default=FLOOR_TESTS,
        help="floor measurement: suite size (and as many trivial tests)",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="LABEL=DIR",
        help="floor measurement: also time the plugin from another checkout DIR (repeatable)",
    )
    parser.add_argument("--hf-dialogues", type=int, default=512)
    parser.add_argument("--openai-requests", type=int, default=512)
    parser.add_argument(
        "--openai-sequential", type=int, default=128, help="requests timed with 1 in flight"
    )
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument(
        "--dialogues", type=int, default=1024, help="suite size of the cache and xdist measurements"
    )
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md")
    args = parser.parse_args(argv)
    chosen = [m.strip() for m in args.only.split(",") if m.strip()]
    unknown = sorted(set(chosen) - set(MEASUREMENTS))
    if unknown:
        parser.error(f"--only: unknown {', '.join(unknown)}; choose from {', '.join(MEASUREMENTS)}")
    variants: list[tuple[str, Path]] = []
    for v in args.variant:
        label, sep, folder = v.partition("=")
        if not sep or not (Path(folder) / "pytest_mtmcs" / "plugin.py").is_file():
            parser.error(f"--variant {v!r}: expected LABEL=DIR with DIR a checkout of the plugin")
        variants.append((label, Path(folder).resolve()))
    command = "python benchmarks/bench_plugin.py" + "".join(
        f" {shlex.quote(a)}" for a in _placeholders(argv if argv is not None else sys.argv[1:])
    )
    with tempfile.TemporaryDirectory(prefix="mtmcs-bench-") as tmp:
        workdir = Path(args.workdir) if args.workdir else Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        runners: dict[str, Callable[[], Section]] = {
            "floor": lambda: bench_floor(
                workdir, args.repeat, args.floor_xdist, variants, args.floor_dialogues
            ),
            "hf": lambda: bench_hf(workdir, args.hf_dialogues, args.max_new_tokens),
            "openai": lambda: bench_openai(
                workdir, args.openai_requests, args.openai_sequential, args.latency_ms
            ),
            "cache": lambda: bench_cache(workdir, args.dialogues, args.max_new_tokens),
            "xdist": lambda: bench_xdist(workdir, args.dialogues, args.max_new_tokens),
        }
        blocks: dict[str, str] = {}
        for key in MEASUREMENTS:
            if key not in chosen:
                continue
            print(f"== {key}", flush=True)
            load_before = os.getloadavg()[0]
            section = runners[key]()
            load = f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
            block = render(section, command, time.strftime("%Y-%m-%d"), load)
            print(block, flush=True)
            blocks[key] = block
            if not args.no_write:
                # Written as each finishes, so a long run interrupted late keeps what it measured.
                update_results(RESULTS, {key: block})
    missed = [k for k in blocks if "**MISSED**" in blocks[k]]
    print("targets missed: " + (", ".join(missed) if missed else "none"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
