"""`--mtmcs-report=DIR` and `pytest-mtmcs compare`: what a run leaves behind for people and tools.

Written once per run, on the controller, from plain results:

- `results.parquet` / `results.csv`: one row per dialogue (columns: `RESULT_COLUMNS`, then one
  `baseline_<name>_verdict` per baseline);
- `transcripts.jsonl`: every generated reply and intent answer (images by content hash only),
  enough for the `replay:` backend to answer a re-run;
- `summary.md`: per-bucket tables, gate failures and flipped dialogues, short enough for a CI step
  summary (also appended to `$GITHUB_STEP_SUMMARY` when set) or a PR comment;
- `report.html`: one self-contained page with plots (see `report_html`);
- `run.json`: model, judge and per-suite header, so `compare` can check two tables are comparable.

pandas and matplotlib are imported inside the functions that use them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_mtmcs.analysis.buckets import ALL, DEFAULT, Buckets
from pytest_mtmcs.analysis.flips import flip_of
from pytest_mtmcs.errors import ConfigError
from pytest_mtmcs.outcome.terminal import BUCKET_HEADER, bucket_rows
from pytest_mtmcs.records import Dialogue, DialogueResult, QuestionResult, ReplyResult

if TYPE_CHECKING:
    import argparse

    from pytest_mtmcs.baseline.store import BaselineSet
    from pytest_mtmcs.outcome.model import SuiteOutcome
    from pytest_mtmcs.outcome.shards import Shard
    from pytest_mtmcs.outcome.verdict import GateVerdict

REPORT_SCHEMA = 1
# One row per dialogue, in this order; `baseline_<name>_verdict` columns follow `flip`.
RESULT_COLUMNS: tuple[str, ...] = (
    "suite",
    "id",
    "pair",
    "setting",
    "label",
    "modality",
    "category",
    "bucket",
    "user_turns",
    "risk_turn",
    "trajectory",
    "verdict",
    "ok",
    "score",
    "turn_labels",
    "intent_correct",
    "intent_total",
    "intent_bits",
    "unparsed",
    "flip",
    "cache_hits",
    "latency_s",
    "error",
)
# Lists in summary.md are capped so the file fits a PR comment (GitHub allows 65,536 chars).
MAX_MD_FLIPS = 15
MAX_MD_FAILURES = 20
MDE_LEGEND = (
    "_mde: minimum detectable drop: the smallest drop in a cell that could be significant at "
    "this size (Holm-corrected); a cell whose mde exceeds the tolerated drop cannot show a drop "
    "of that size, so its pass is weak._"
)


def baseline_column(name: str) -> str:
    return f"baseline_{name}_verdict"


@dataclass
class ReportData:
    """Everything the Markdown and HTML renderers read: the outcomes plus the baselines' own
    results (the plots show each checkpoint's rates, not just the paired comparison)."""

    suites: list[SuiteOutcome]
    info: dict[str, Any]
    # (suite, baseline name) -> that baseline's stored results for the suite
    baseline_results: dict[tuple[str, str], list[DialogueResult]] = field(default_factory=dict)
    # suite -> dialogue id -> Dialogue, when the suite could be loaded (user text in transcripts)
    dialogues: dict[str, dict[str, Dialogue]] = field(default_factory=dict)
    title: str = "pytest-mtmcs report"
    # The gate's verdict: the first heading of summary.md says it (None: no gate, e.g. compare
    # without thresholds still has one; only a bare render has none).
    verdict: GateVerdict | None = None
    current_name: str = "this run"
    notes: list[str] = field(default_factory=list)
    # suite -> dialogue id -> ready transcripts.jsonl lines (a merge copies the shards' lines)
    transcripts: dict[str, Mapping[str, Sequence[str]]] = field(default_factory=dict)

    def baseline_names(self) -> list[str]:
        names: list[str] = []
        for s in self.suites:
            for b in s.baselines:
                if b.name not in names:
                    names.append(b.name)
        return names


# --- results table ----------------------------------------------------------------------------


def result_rows(data: ReportData) -> list[dict[str, Any]]:
    names = data.baseline_names()
    rows: list[dict[str, Any]] = []
    for s in data.suites:
        base_by_name = {
            n: {r.id: r for r in data.baseline_results.get((s.suite, n), ())} for n in names
        }
        primary = base_by_name[names[0]] if names else {}
        first = s.baselines[0] if s.baselines else None
        compared = first is None or not first.refused
        memo: dict[int, str] = {}
        for r in s.results:
            bucket = memo.get(r.user_turns)
            if bucket is None:
                bucket = memo[r.user_turns] = s.buckets.bucket_of(r.user_turns)
            row: dict[str, Any] = {
                "suite": r.suite,
                "id": r.id,
                "pair": r.pair,
                "setting": r.setting,
                "label": r.label,
                "modality": r.modality,
                "category": r.category,
                "bucket": bucket,
                "user_turns": r.user_turns,
                "risk_turn": r.risk_turn,
                "trajectory": r.trajectory,
                "verdict": r.verdict,
                "ok": r.ok,
                "score": r.score,
                "turn_labels": " ".join(r.turn_labels),
                "intent_correct": r.intent_correct,
                "intent_total": r.intent_total,
                "intent_bits": "".join("1" if q.correct else "0" for q in r.questions),
                "unparsed": r.unparsed,
                "flip": flip_of(r, primary.get(r.id), compared=compared),
                "cache_hits": r.cache_hits,
                "latency_s": r.latency_s,
                "error": r.error,
            }
            for n in names:
                before = base_by_name[n].get(r.id)
                row[baseline_column(n)] = None if before is None else before.verdict
            rows.append(row)
    return rows


def results_frame(data: ReportData) -> Any:
    """The results table as a pandas DataFrame (column order: RESULT_COLUMNS, then baselines)."""
    import pandas as pd

    columns = [*RESULT_COLUMNS, *(baseline_column(n) for n in data.baseline_names())]
    df = pd.DataFrame.from_records(result_rows(data), columns=columns)
    # Nullable integers: a missing risk turn stays missing instead of becoming a float NaN.
    return df.astype({"risk_turn": "Int64", "user_turns": "int64", "score": "float64"})


def _none(v: Any) -> Any:
    """NaN / NA / empty CSV cells -> None."""
    if v is None or v == "":
        return None
    try:
        if v != v:  # NaN
            return None
    except (TypeError, ValueError):  # pandas.NA refuses comparisons
        return None
    return v


def results_from_rows(rows: Iterable[Mapping[str, Any]], where: str) -> list[DialogueResult]:
    """DialogueResults from results-table rows: the fields statistics need (no reply text)."""
    out: list[DialogueResult] = []
    for i, row in enumerate(rows, start=2):  # line 1 of a CSV is its header
        try:
            labels = [t for t in str(row["turn_labels"] or "").split() if t]
            replies = tuple(
                ReplyResult(k, "", None if lab == "-" else lab)
                for k, lab in enumerate(labels, start=1)
                if lab != "scripted"
            )
            bits = str(_none(row.get("intent_bits")) or "")
            n = int(row["intent_total"])
            if len(bits) != n:
                bits = "1" * int(row["intent_correct"]) + "0" * (n - int(row["intent_correct"]))
            questions = tuple(QuestionResult("tf", "1", "1" if b == "1" else "0", "") for b in bits)
            risk = _none(row.get("risk_turn"))
            pair, traj = _none(row.get("pair")), _none(row.get("trajectory"))
            out.append(
                DialogueResult(
                    suite=str(row["suite"]),
                    id=str(row["id"]),
                    pair=None if pair is None else str(pair),
                    label=str(row["label"]),
                    setting=str(row["setting"]),
                    modality=str(row["modality"]),
                    category=str(row["category"]),
                    user_turns=int(row["user_turns"]),
                    risk_turn=None if risk is None else int(float(risk)),
                    verdict=str(row["verdict"]),
                    score=float(row["score"]),
                    replies=replies,
                    questions=questions,
                    error=_none(row.get("error")),
                    trajectory=None if traj is None else str(traj),
                    cache_hits=int(float(_none(row.get("cache_hits")) or 0)),
                    latency_s=float(_none(row.get("latency_s")) or 0.0),
                )
            )
        except KeyError as exc:
            raise ConfigError(
                f"{where}: column {exc.args[0]!r} is missing: expected a results table written "
                "by --mtmcs-report"
            ) from None
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: row {i} (id {row.get('id')!r}): {exc}") from None
    return out


# --- transcripts ------------------------------------------------------------------------------


def transcript_rows(
    results: Iterable[DialogueResult],
    dialogues: Mapping[str, Dialogue] | None = None,
    image_placement: str = "last",
) -> Iterable[dict[str, Any]]:
    """One row per generated reply (`kind: turn`) and per intent answer (`kind: question`).

    Question rows carry the question's 1-based index and, when the suite's dialogues are known,
    its text and options: the `replay:` backend matches an intent prompt on them exactly.
    """
    for r in results:
        d = dialogues.get(r.id) if dialogues else None
        image = d.image.sha256 if d is not None and d.image is not None else None
        with_image = d.image_turns(image_placement) if d is not None else frozenset()
        for rep in r.replies:
            yield {
                "kind": "turn",
                "suite": r.suite,
                "dialogue_id": r.id,
                "user_turn": rep.user_turn,
                "label": rep.label,
                "text": rep.text,
                "cached": rep.cached,
                "latency_s": rep.latency_s,
                "judge_error": rep.judge_error,
                "image_sha256": image if rep.user_turn in with_image else None,
            }
        for i, q in enumerate(r.questions, start=1):
            asked = d.questions[i - 1] if d is not None and len(d.questions) >= i else None
            yield {
                "kind": "question",
                "suite": r.suite,
                "dialogue_id": r.id,
                "index": i,
                "question_kind": q.kind,
                "tag": q.tag,
                "question": asked.text if asked is not None else None,
                "options": list(asked.options) if asked is not None else None,
                "expected": q.expected,
                "raw": q.raw,
                "parsed": q.answer,
                "correct": q.correct,
                "image_sha256": image,
            }


# --- Markdown ---------------------------------------------------------------------------------


def _f(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _md_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def md_table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> list[str]:
    out = ["| " + " | ".join(_md_cell(h) for h in header) + " |"]
    out.append("|" + "|".join("---" for _ in header) + "|")
    out.extend("| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows)
    return out


def summary_markdown(data: ReportData) -> str:
    heading = data.verdict.heading() if data.verdict is not None else f"## {data.title}"
    lines = [heading, ""]
    if data.verdict is not None:
        lines += [f"**{data.verdict.line()}**", ""]
        if data.title != "pytest-mtmcs report":
            lines += [f"_{data.title}_", ""]
    info = data.info
    judge = info.get("judge") or {}
    lines.append(
        f"model `{info.get('model') or '-'}` · judge `{judge.get('name', '-')}`"
        + (
            f" · baselines {', '.join(f'`{n}`' for n in data.baseline_names())}"
            if data.baseline_names()
            else ""
        )
    )
    from pytest_mtmcs.judges.datasheet import summary_line

    lines += ["", summary_line(info)]
    lines.extend(f"> {n}" for n in data.notes)
    for s in data.suites:
        mark = "❌" if s.failures else "⚠️" if s.inconclusive else "✅"
        word = " (inconclusive cells)" if s.inconclusive and not s.failures else ""
        lines += ["", f"### {mark} {s.suite} ({len(s.results)} dialogues){word}", ""]
        rows, base = bucket_rows(s)
        lines += md_table(rows, [h.format(base=base) for h in BUCKET_HEADER])
        errors = s.table[(ALL, ALL)]["errors"].k
        if errors or s.judge_errors:
            lines += ["", f"errors: {errors} backend, {s.judge_errors} judge"]
        if s.failures:
            lines += ["", "**Gate failures:**", ""]
            lines += [f"- {f}" for f in s.failures[:MAX_MD_FAILURES]]
            if len(s.failures) > MAX_MD_FAILURES:
                lines.append(f"- ... and {len(s.failures) - MAX_MD_FAILURES} more")
        if s.inconclusive:
            lines += ["", "**Inconclusive cells** (⚠️ neither a pass nor a regression):", ""]
            lines += [f"- {c}" for c in s.inconclusive[:MAX_MD_FAILURES]]
        if any(c.underpowered for b in s.baselines for c in b.comparisons):
            lines += ["", MDE_LEGEND]
        for b in s.baselines:
            lines.append("")
            if not b.found:
                lines.append(f"baseline `{b.name}`: no stored results for suite {s.suite}")
                continue
            if b.mismatches:
                word = "REFUSED" if b.refused else "warning (compared anyway)"
                lines.append(f"baseline `{b.name}`: {word}: " + "; ".join(b.mismatches))
            if b.flips is None:
                continue
            fl = b.flips
            lines.append(f"**against `{b.name}`:** {fl.counts_text()}")
            for title, group in (("regressed", fl.regressed), ("fixed", fl.fixed)):
                if not group:
                    continue
                lines.append("")
                lines.append(f"<details><summary>{len(group)} {title}</summary>")
                lines.append("")
                for f in group[:MAX_MD_FLIPS]:
                    lines.append(
                        f"- `{f.id}` [{f.bucket}]: {f.before_verdict} → {f.after_verdict} "
                        f"(turns {' '.join(f.before_labels)} → {' '.join(f.after_labels)})"
                    )
                if len(group) > MAX_MD_FLIPS:
                    lines.append(f"- ... and {len(group) - MAX_MD_FLIPS} more (see report.html)")
                lines += ["", "</details>"]
    return "\n".join(lines) + "\n"


# --- writing ----------------------------------------------------------------------------------


def _suite_dialogues(
    dialogues: Callable[[str], Mapping[str, Dialogue]] | None, suite: str
) -> dict[str, Dialogue]:
    """The suite's dialogues, for user text and intent questions in transcripts; {} if unknown.

    Under xdist the controller never loaded the suites: `dialogues` loads them, from their spec.
    """
    if dialogues is None:
        return {}
    try:
        return dict(dialogues(suite))
    except Exception:  # a report must not fail for lack of user text
        # The report still has every reply; only user text and question text are lost.
        return {}


def _json_default(v: Any) -> Any:
    return str(v)


def write_report(
    dir: str | os.PathLike[str],
    suites: list[SuiteOutcome],
    info: dict[str, Any],
    baselines: BaselineSet | None,
    verdict: GateVerdict | None = None,
    *,
    dialogues: Callable[[str], Mapping[str, Dialogue]] | None = None,
    transcripts: Callable[[str], Mapping[str, Sequence[str]]] | None = None,
    shard: Shard | None = None,
) -> Path:
    """Writes the report files into `dir` (created if needed) and returns it.

    `dialogues(suite)` gives user and question text to transcripts.jsonl; `transcripts(suite)`
    gives its lines ready-made (a merge of shards copies theirs).
    """
    out = Path(dir)
    out.mkdir(parents=True, exist_ok=True)
    model = info.get("model")
    data = ReportData(
        suites=list(suites),
        info=dict(info),
        current_name=f"this run ({model})" if model else "this run",
        verdict=verdict,
    )
    if shard is not None:
        from pytest_mtmcs.outcome.terminal import shard_note

        data.notes.append(shard_note(shard))
    for s in suites:
        for b in s.baselines:
            # The results the comparison used (re-judged ones with --mtmcs-rejudge) when the
            # outcome carries them; else the stored baseline.
            compared = getattr(b, "results", None)
            if compared is not None:
                data.baseline_results[(s.suite, b.name)] = list(compared)
                continue
            stored = baselines.get(b.name, s.suite) if baselines is not None and b.found else None
            if stored is not None:
                data.baseline_results[(s.suite, b.name)] = stored.results
        if transcripts is None:
            data.dialogues[s.suite] = _suite_dialogues(dialogues, s.suite)
            continue
        data.transcripts[s.suite] = transcripts(s.suite)
        # With ready transcripts, only report.html's flipped dialogues show user text: load the
        # suite (seconds at benchmark scale) only when there are some.
        if any(b.flips and (b.flips.regressed or b.flips.fixed) for b in s.baselines):
            data.dialogues[s.suite] = _suite_dialogues(dialogues, s.suite)
    write_files(out, data)
    return out


def write_files(out: Path, data: ReportData, *, tables: bool = True) -> None:
    """Writes the report files of `data` into `out` (tables=False: summary and HTML only)."""
    from pytest_mtmcs.outcome.html import render_html

    out.mkdir(parents=True, exist_ok=True)
    if tables:
        df = results_frame(data)
        _atomic(out / "results.parquet", lambda p: df.to_parquet(p, index=False))
        _atomic(out / "results.csv", lambda p: df.to_csv(p, index=False))
        _write_transcripts(out / "transcripts.jsonl", data)
        _write_text(
            out / "run.json",
            json.dumps(run_json(data), indent=2, sort_keys=True, default=_json_default) + "\n",
        )
    _write_summary(out, summary_markdown(data))
    _write_text(out / "report.html", render_html(data))


def _write_summary(out: Path, md: str) -> None:
    """summary.md, also appended to the CI step summary (`$GITHUB_STEP_SUMMARY`) when set."""
    _write_text(out / "summary.md", md)
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary:
        with open(step_summary, "a", encoding="utf-8") as fh:
            fh.write(md + "\n")


def write_not_run_summary(
    dir: str | os.PathLike[str], verdict: GateVerdict, info: dict[str, Any]
) -> None:
    """summary.md of a run whose gate did not run: its heading and why. An earlier run's green
    summary must not stand in the folder (the other files there are left as they were)."""
    out = Path(dir)
    out.mkdir(parents=True, exist_ok=True)
    model = info.get("model")
    lines = [verdict.heading(), "", f"**{verdict.line()}**", ""]
    if model:
        lines += [f"model `{model}`", ""]
    lines += [line for line in verdict.explain()]
    others = sorted(
        p.name for p in out.iterdir() if p.name != "summary.md" and not p.name.startswith(".")
    )
    if others:
        lines += [
            "",
            f"The other files in this folder ({', '.join(others)}) are from an earlier run.",
        ]
    _write_summary(out, "\n".join(lines) + "\n")


def run_json(data: ReportData) -> dict[str, Any]:
    from pytest_mtmcs.outcome.model import run_header

    info = data.info
    return {
        "schema": REPORT_SCHEMA,
        "model": info.get("model"),
        "fingerprint": info.get("fingerprint", {}),
        "judge": info.get("judge", {}),
        "baselines": data.baseline_names(),
        "suites": {
            s.suite: {
                "dialogues": len(s.results),
                "buckets": s.buckets.spec,
                "header": run_header(s.meta, info),
            }
            for s in data.suites
        },
    }


def _write_transcripts(path: Path, data: ReportData) -> None:
    # One encoder for every row: json.dumps with a non-default option builds a new one per call.
    encode = json.JSONEncoder(ensure_ascii=False).encode

    def write(p: Path) -> None:
        with open(p, "w", encoding="utf-8") as fh:
            for s in data.suites:
                ready = data.transcripts.get(s.suite)
                if ready is not None:
                    fh.writelines(line for r in s.results for line in ready.get(r.id, ()))
                    continue
                placement = str(s.meta.get("settings", {}).get("image_placement") or "last")
                rows = transcript_rows(s.results, data.dialogues.get(s.suite), placement)
                fh.writelines(encode(row) + "\n" for row in rows)

    _atomic(path, write)


def _write_text(path: Path, text: str) -> None:
    _atomic(path, lambda p: p.write_text(text, encoding="utf-8"))


def _atomic(path: Path, write: Any) -> None:
    """Write to a temporary sibling, then rename: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


# --- compare ----------------------------------------------------------------------------------


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
    """A results.parquet / results.csv written by --mtmcs-report, or a baseline .ambr file."""
    path = Path(path_text)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file (expected results.parquet/csv or a .ambr file)")
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
    from pytest_mtmcs.baseline.store import (
        HEADER,
        BaselineSerializer,
        check_baseline_file,
        parse_entry,
        parse_header,
    )

    suite = path.stem
    check_baseline_file(path)
    try:
        collection = BaselineSerializer.read_file(str(path))
    except Exception as exc:  # syrupy's parse errors are not typed
        raise ConfigError(f"{path}: cannot read as a baseline file: {exc}") from None
    if collection.tainted:
        raise ConfigError(
            f"{path}: written by another baseline format version (expected "
            f"{BaselineSerializer.VERSION}); re-record it with --snapshot-update"
        )
    header: dict[str, str] = {}
    results: list[DialogueResult] = []
    for snap in collection:
        text = str(snap.data)
        if snap.name == HEADER:
            header = parse_header(text)
        else:
            results.append(parse_entry(suite, snap.name, text, str(path)))
    if not results:
        raise ConfigError(f"{path}: holds no dialogue entries")
    judge = {
        "name": header.get("judge", "-"),
        "model": "" if header.get("judge_model", "-") == "-" else header["judge_model"],
        "prompt_hash": (
            "" if header.get("judge_prompt_hash", "-") == "-" else header["judge_prompt_hash"]
        ),
        "version": header.get("judge_version", ""),
        "artefact_hash": header.get("judge_artefact_hash", ""),
    }
    name = path.parent.name or suite
    return Loaded(name, {suite: results}, {suite: header}, {}, header.get("model"), judge)


def compare_data(
    current: Loaded,
    baseline: Loaded,
    *,
    buckets_spec: str | None,
    max_drop: float,
    alpha: float,
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
        failures = [
            f"{c.bucket} {c.metric} regressed against {base_label}: "
            f"{c.base.value:.3f} -> {c.current.value:.3f} "
            f"(drop {-(c.delta or 0):.3f} > {max_drop}, p_holm={c.p_holm:.3g})"
            for c in bc.comparisons
            if c.regressed and c.bucket != ALL
        ]
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
            )
        )
        data.baseline_results[(a, base_label)] = base
    return data


def _renamed(r: DialogueResult, suite: str) -> DialogueResult:
    from dataclasses import replace

    return replace(r, suite=suite)


def compare_main(args: argparse.Namespace) -> int:
    """`pytest-mtmcs compare A B`: 1 when a bucket regresses, else 0 (2 on bad input, by cli)."""
    if not 0.0 <= args.max_drop <= 1.0:
        raise ConfigError(f"--max-drop={args.max_drop}: expected a share between 0 and 1")
    if not 0.0 < args.alpha < 1.0:
        raise ConfigError(f"--alpha={args.alpha}: expected a level between 0 and 1")
    current, baseline = load_side(args.current), load_side(args.baseline)
    data = compare_data(
        current, baseline, buckets_spec=args.buckets, max_drop=args.max_drop, alpha=args.alpha
    )
    print(summary_markdown(data), end="")
    if args.out:
        out = Path(args.out)
        write_files(out, data, tables=False)
        print(f"\nwrote {out / 'summary.md'} and {out / 'report.html'}")
    return 1 if any(s.failures for s in data.suites) else 0
