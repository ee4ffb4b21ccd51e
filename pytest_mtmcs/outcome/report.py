"""`--mtmcs-report=DIR`: what a run leaves behind for people and tools.

Written once per run, on the controller, from plain results:

- `results.parquet` / `results.csv`: one row per dialogue (columns: `RESULT_COLUMNS`, then one
  `baseline_<name>_verdict` per baseline);
- `transcripts.jsonl`: every generated reply and intent answer (images by content hash only),
  enough for the `replay:` backend to answer a re-run;
- `summary.md`: per-bucket tables, gate failures and flipped dialogues, short enough for a CI step
  summary (also appended to `$GITHUB_STEP_SUMMARY` when set) or a PR comment;
- `report.html`: one self-contained page with plots (see `html.py`);
- `run.json`: model, judge and per-suite header, so `compare` can check two tables are comparable.

pandas and matplotlib are imported inside the functions that use them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_mtmcs.outcome.markdown import summary_markdown
from pytest_mtmcs.outcome.model import ReportData
from pytest_mtmcs.outcome.results_table import results_frame, transcript_rows
from pytest_mtmcs.records import Dialogue

if TYPE_CHECKING:
    from pytest_mtmcs.baseline.store import BaselineSet
    from pytest_mtmcs.outcome.model import SuiteOutcome
    from pytest_mtmcs.outcome.shards import Shard
    from pytest_mtmcs.outcome.verdict import GateVerdict

REPORT_SCHEMA = 1


# --- results table ----------------------------------------------------------------------------


# --- transcripts ------------------------------------------------------------------------------


# --- Markdown ---------------------------------------------------------------------------------


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
    rerecorded: str | None = None,
) -> Path:
    """Writes the report files into `dir` (created if needed) and returns it.

    `dialogues(suite)` gives user and question text to transcripts.jsonl; `transcripts(suite)`
    gives its lines ready-made (a merge of shards copies theirs). `rerecorded`: the baseline this
    run has just re-recorded (its stored transcripts are now this run's, not the baseline's).
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
        if baselines is not None:
            _baseline_replies(data, s, baselines, rerecorded)
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


def _baseline_replies(
    data: ReportData, s: SuiteOutcome, baselines: BaselineSet, rerecorded: str | None
) -> None:
    """The replies of each baseline's flipped dialogues, from the transcripts stored beside it
    (`--mtmcs-baseline-transcripts`), for report.html to show beside this run's. A file that
    cannot be read, or was written with another recording of the baseline, is a note on the page:
    a report never fails for it, and never shows replies that are not the baseline's."""
    from pytest_mtmcs.baseline.transcripts import (
        header_digest,
        read_transcripts_with_header,
        transcripts_path,
    )
    from pytest_mtmcs.errors import ConfigError

    for b in s.baselines:
        flipped = {f.id for f in (*b.flips.regressed, *b.flips.fixed)} if b.flips else set()
        if not flipped:
            continue
        key = (s.suite, b.name)
        if b.name == rerecorded:
            data.baseline_reply_notes[key] = (
                f"baseline {b.name} was re-recorded by this run: the transcripts beside it are "
                "this run's, so its earlier replies are not shown"
            )
            continue
        try:
            stored = baselines.get(b.name, s.suite)
            path = transcripts_path(baselines.root, b.name, s.suite)
        except ConfigError:
            continue
        if stored is None or not path.exists():
            continue  # no transcripts stored: the page shows the baseline's labels only
        try:
            texts, header = read_transcripts_with_header(path)
        except ConfigError as exc:
            data.baseline_reply_notes[key] = f"baseline replies not shown: {exc}"
            continue
        digest = header.get("header_sha256")
        if digest is not None and digest != header_digest(stored.header):
            data.baseline_reply_notes[key] = (
                f"baseline replies not shown: {path.name} was written with another recording "
                f"of baseline {b.name} (header hash differs)"
            )
            continue
        data.baseline_replies[key] = {k: v for k, v in texts.items() if k[0] in flipped}


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
    extra: dict[str, Any] = {}
    if info.get("in_flight"):
        # Measured, not part of the run's identity: a merge of shards has none (they ran apart).
        extra["in_flight"] = {
            k: v for k, v in info["in_flight"].items() if k not in ("start", "end")
        }
    return {
        "schema": REPORT_SCHEMA,
        "model": info.get("model"),
        "fingerprint": info.get("fingerprint", {}),
        "judge": info.get("judge", {}),
        "baselines": data.baseline_names(),
        "suites": {
            s.suite: {
                "dialogues": len(s.results),
                # How the suite was named to the loader: `pytest-mtmcs review` reloads it.
                "spec": s.meta.get("spec"),
                "buckets": s.buckets.spec,
                "header": run_header(s.meta, info),
            }
            for s in data.suites
        },
        **extra,
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
