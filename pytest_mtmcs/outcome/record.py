"""Recording a baseline at the end of a run (`--snapshot-update`, or `merge --update-baseline`):
one baseline file per suite, written atomically, plus its transcripts when asked for."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from pytest_mtmcs.errors import ConfigError
from pytest_mtmcs.outcome.model import GateCell, SuiteOutcome, run_header


@dataclass
class Recorded:
    lines: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


def update_baselines(
    root: Path,
    name: str,
    suites: list[SuiteOutcome],
    info: dict[str, object],
    *,
    partial: bool,
    transcripts: bool,
    shown_from: Path | None = None,
) -> Recorded:
    """Writes baseline `name` of every suite (merged into the stored file when `partial`: a run
    of some dialogues only). A suite with backend errors is not written: a failure of its outcome.
    Paths in the lines are shown relative to `shown_from` when they are under it."""
    from pytest_mtmcs.baseline.store import write_baseline

    out = Recorded()
    for s in suites:
        errors = [r.id for r in s.results if r.verdict == "error"]
        if errors:
            msg = (
                f"baseline {name!r} for {s.suite} NOT updated: {len(errors)} dialogues had "
                f"backend errors (first: {errors[0]}); fix the backend and re-run"
            )
            s.failures.append(msg)
            s.cells.append(GateCell(f"record:{name}", "failed", msg, tuple(errors)))
            out.lines.append(msg)
            continue
        header = run_header(s.meta, dict(info))
        path = write_baseline(root, name, s.suite, header, s.results, keep_others=partial)
        out.files.append(Path(path))
        rel = Path(path)
        if shown_from is not None:
            try:
                rel = rel.relative_to(shown_from)
            except ValueError:
                pass
        how = "merged into" if partial else "written to"
        out.lines.append(f"baseline {name!r}: {len(s.results)} dialogues {how} {rel}")
        out.lines.extend(_update_transcripts(root, name, s, header, partial, transcripts))
    if not suites:
        raise ConfigError("nothing to record")
    return out


def _update_transcripts(
    root: Path,
    name: str,
    s: SuiteOutcome,
    header: dict[str, str],
    partial: bool,
    keep: bool,
) -> list[str]:
    """Stores the reply texts beside the baseline (--mtmcs-baseline-transcripts), or removes a
    transcripts file that no longer matches the baseline just written."""
    from pytest_mtmcs.baseline.transcripts import transcripts_path, write_transcripts

    path = transcripts_path(root, name, s.suite)
    if keep:
        write_transcripts(path, s.results, suite=s.suite, header=header, keep_others=partial)
        return [f"baseline {name!r}: transcripts stored in {path.name} (for --mtmcs-rejudge)"]
    if path.exists():
        os.unlink(path)
        return [
            f"baseline {name!r}: removed stale {path.name} (re-record with "
            "--mtmcs-baseline-transcripts to keep transcripts)"
        ]
    return []
