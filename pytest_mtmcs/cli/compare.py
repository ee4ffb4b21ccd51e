"""`pytest-mtmcs compare A B`: two result tables (or report folders, or baseline `.ambr` files)
compared offline, with the run's statistics; prints summary.md, optionally writes report.html."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path

from pytest_mtmcs.analysis.buckets import DEFAULT, Buckets
from pytest_mtmcs.errors import ConfigError
from pytest_mtmcs.outcome.gate import judge_cells
from pytest_mtmcs.outcome.markdown import summary_markdown
from pytest_mtmcs.outcome.model import ReportData
from pytest_mtmcs.outcome.report import write_files
from pytest_mtmcs.outcome.results_table import results_from_rows
from pytest_mtmcs.outcome.verdict import decide
from pytest_mtmcs.records import DialogueResult


@dataclass
class Loaded:
    """One side of `compare`: results per suite, a display name, and headers when known."""

    name: str
    results: dict[str, list[DialogueResult]]
    headers: dict[str, dict[str, str]]
    buckets: dict[str, str]
    model: str | None = None
    judge: dict[str, str] = field(default_factory=dict)


def load_side(path_text: str) -> Loaded:
    """A report folder written by --mtmcs-report (its results.parquet, else results.csv), such a
    results table itself, or a baseline .ambr file."""
    path = Path(path_text)
    if path.is_dir():
        found = next(
            (path / f for f in ("results.parquet", "results.csv") if (path / f).is_file()), None
        )
        if found is None:
            raise ConfigError(
                f"{path}: a folder without results.parquet or results.csv (expected a report "
                "folder written by --mtmcs-report)"
            )
        path = found
    if not path.is_file():
        raise ConfigError(
            f"{path}: no such file or folder (expected a report folder, results.parquet/csv or "
            "a baseline .ambr file)"
        )
    suffix = path.suffix.lower()
    if suffix == ".ambr":
        return _load_ambr(path)
    if suffix not in (".parquet", ".csv"):
        raise ConfigError(f"{path}: unknown kind of file: expected .parquet, .csv or .ambr")
    import pandas as pd

    try:
        if suffix == ".parquet":
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:  # pyarrow/pandas raise many kinds; say which file
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    results = results_from_rows(df.to_dict("records"), str(path))
    by_suite: dict[str, list[DialogueResult]] = {}
    for r in results:
        by_suite.setdefault(r.suite, []).append(r)
    headers: dict[str, dict[str, str]] = {}
    buckets: dict[str, str] = {}
    model = None
    judge: dict[str, str] = {}
    run_file = path.with_name("run.json")
    if run_file.is_file():
        try:
            run = json.loads(run_file.read_text(encoding="utf-8"))
            model = run.get("model")
            judge = {k: str(v) for k, v in (run.get("judge") or {}).items()}
            for name, s in (run.get("suites") or {}).items():
                headers[name] = {k: str(v) for k, v in (s.get("header") or {}).items()}
                if s.get("buckets"):
                    buckets[name] = str(s["buckets"])
        except (OSError, ValueError, AttributeError):
            pass  # run.json is a convenience: without it, no header check
    name = model or path.parent.name or path.stem
    return Loaded(name, by_suite, headers, buckets, model, judge)


def _load_ambr(path: Path) -> Loaded:
    from pytest_mtmcs.baseline.store import read_ambr

    suite = path.stem
    b = read_ambr(path, path.parent.name or suite, suite)
    if not b.entries:
        raise ConfigError(f"{path}: holds no dialogue entries")
    header = b.header
    judge = {
        "name": header.get("judge", "-"),
        "model": "" if header.get("judge_model", "-") == "-" else header["judge_model"],
        "prompt_hash": (
            "" if header.get("judge_prompt_hash", "-") == "-" else header["judge_prompt_hash"]
        ),
        "version": header.get("judge_version", ""),
        "artefact_hash": header.get("judge_artefact_hash", ""),
    }
    return Loaded(b.name, {suite: b.results}, {suite: header}, {}, header.get("model"), judge)


def compare_data(
    current: Loaded,
    baseline: Loaded,
    *,
    buckets_spec: str | None,
    max_drop: float,
    alpha: float,
    fail_inconclusive: bool = False,
) -> ReportData:
    """Builds the same outcome objects a run builds, from two loaded sides."""
    from pytest_mtmcs.analysis.comparison import compare_buckets
    from pytest_mtmcs.analysis.flips import item_flips
    from pytest_mtmcs.analysis.metrics import bucket_tables
    from pytest_mtmcs.baseline.store import mismatches
    from pytest_mtmcs.outcome.model import BaselineComparison, SuiteOutcome

    pairs: list[tuple[str, str]] = []
    notes: list[str] = []
    if len(current.results) == 1 and len(baseline.results) == 1:
        (a,), (b,) = current.results, baseline.results
        pairs.append((a, b))
        if a != b:
            notes.append(f"comparing suite {a} with suite {b} (names differ)")
    else:
        for name in sorted(current.results):
            if name in baseline.results:
                pairs.append((name, name))
            else:
                notes.append(f"suite {name}: not in {baseline.name}")
        for name in sorted(set(baseline.results) - set(current.results)):
            notes.append(f"suite {name}: only in {baseline.name}")
    if not pairs:
        raise ConfigError("compare: the two files share no suite")

    base_label = baseline.name if baseline.name != current.name else f"{baseline.name} (B)"
    data = ReportData(
        suites=[],
        info={"model": current.model or current.name, "judge": current.judge},
        title=f"pytest-mtmcs compare: {current.name} vs {base_label}",
        current_name=current.name,
        notes=notes,
    )
    for a, b in pairs:
        spec = buckets_spec or current.buckets.get(a) or baseline.buckets.get(b) or DEFAULT
        buckets = Buckets.parse(spec, "--buckets")
        cur = sorted(current.results[a], key=lambda r: r.id)
        base = [r if r.suite == a else _renamed(r, a) for r in baseline.results[b]]
        diff = []
        if a in current.headers and b in baseline.headers:
            diff = mismatches(baseline.headers[b], current.headers[a])
        bc = BaselineComparison(base_label, True, mismatches=diff)
        bc.comparisons = compare_buckets(cur, base, buckets, max_drop=max_drop, alpha=alpha)
        bc.flips = item_flips(cur, base, buckets)
        failures, unsure = judge_cells(bc.comparisons, base_label, max_drop)
        tables = bucket_tables(cur, buckets, (None, "setting", "modality"))
        data.suites.append(
            SuiteOutcome(
                suite=a,
                meta={"name": a},
                buckets=buckets,
                results=cur,
                table=tables[None],
                by_setting=tables["setting"],
                by_modality=tables["modality"],
                checks=[],
                baselines=[bc],
                judge_errors=sum(1 for r in cur if r.verdict == "judge_error"),
                failures=failures,
                inconclusive=unsure,
                checked=[f"no significant drop beyond {max_drop:g} against {base_label}"],
            )
        )
        data.baseline_results[(a, base_label)] = base
    data.verdict = decide(
        [f for s in data.suites for f in s.failures],
        [c for s in data.suites for c in s.inconclusive],
        [c for s in data.suites for c in s.checked],
        fail_inconclusive=fail_inconclusive,
    )
    return data


def _renamed(r: DialogueResult, suite: str) -> DialogueResult:
    from dataclasses import replace

    return replace(r, suite=suite)


def compare_main(args: argparse.Namespace) -> int:
    """`pytest-mtmcs compare A B`: the gate verdict's exit status (0 passed, 1 failed; 4 on bad input, by cli)."""
    if not 0.0 <= args.max_drop <= 1.0:
        raise ConfigError(f"--max-drop={args.max_drop}: expected a share between 0 and 1")
    if not 0.0 < args.alpha < 1.0:
        raise ConfigError(f"--alpha={args.alpha}: expected a level between 0 and 1")
    current, baseline = load_side(args.current), load_side(args.baseline)
    data = compare_data(
        current,
        baseline,
        buckets_spec=args.buckets,
        max_drop=args.max_drop,
        alpha=args.alpha,
        fail_inconclusive=args.fail_inconclusive,
    )
    print(summary_markdown(data), end="")
    if args.out:
        out = Path(args.out)
        write_files(out, data, tables=False)
        print(f"\nwrote {out / 'summary.md'} and {out / 'report.html'}")
    return data.verdict.exit_status if data.verdict is not None else 0
