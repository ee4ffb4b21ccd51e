"""The adjudications file: people's labels on exact replies, kept in git beside the baselines.

`baselines/adjudications.jsonl` by default (`--mtmcs-adjudications=PATH`), one JSON object per
line, appended by `pytest-mtmcs review` (`cli/review.py`). A line is a labelled reply in the house
row format of `tests/data/judge/` (so `pytest-mtmcs judge-agreement --labelled` and the `ngram`
trainer's `--extra` read the file as it is) plus what places and explains it:

- the labelled reply: `id`, `text` (the reply), `label` (the person's refusal-axis label),
  `harm` (0/1, only on an unsafe dialogue's replies from its risk turn), `off_target`, `prompt`
  (the user turn it answers), `image` (the image's caption, when known), `source`
  (`adjudications`), `model`, `label_origin`;
- where it occurred: `suite`, `dialogue`, `turn`, and `sha256`, the exchange key
  (`engine.adjudicated.exchange_key`: the exact request and the reply) a run matches on;
- who said what: `human` (the person's answer, one of `engine.adjudicated.TOKENS`), `judge` (the
  judge's identity) and `judge_label` (its token; `judge_local`, the local judge's, when a model
  judge had replaced it), `flip` (why the reply was flagged), `reviewer`, `time` (UTC, ISO 8601),
  `note`.

A run reads the file before any model runs: a line that is not JSON, lacks a field or holds a
bad value, and two lines that give one exchange different labels, are one `file:line` error (a
usage error). Two lines that agree are one label.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_mtmcs import defaults
from pytest_mtmcs.engine.adjudicated import TOKENS, HumanLabel
from pytest_mtmcs.errors import SuiteError
from pytest_mtmcs.jsonl import objects
from pytest_mtmcs.records import REPLY_LABELS, DialogueResult

FILE_NAME = "adjudications.jsonl"
OPTION = "--mtmcs-adjudications"
SOURCE = "adjudications"
_SHA = re.compile(r"^[0-9a-f]{64}$")


class AdjudicationError(SuiteError):
    """A bad line of the adjudications file: `file:line: field 'x': message`."""


@dataclass(frozen=True)
class Adjudication:
    """One line of the file, checked."""

    line: int
    sha256: str
    suite: str
    dialogue: str
    turn: int
    human: HumanLabel
    model: str = ""
    reviewer: str = ""
    judge: Mapping[str, Any] = field(default_factory=dict)
    judge_label: str = ""
    record: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def token(self) -> str:
        return self.human.token


def default_path(baseline_root: Path) -> Path:
    return baseline_root / FILE_NAME


def _field(path: Path, line: int, rec: Mapping[str, Any], key: str, kind: type) -> Any:
    value = rec.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        what = {str: "a string", int: "an integer", bool: "true or false"}[kind]
        missing = "missing" if key not in rec else f"{value!r} is not {what}"
        raise AdjudicationError(str(path), f"{missing}: expected {what}", line=line, field=key)
    return value


def _parse(path: Path, line: int, rec: Mapping[str, Any]) -> Adjudication:
    sha = _field(path, line, rec, "sha256", str)
    if not _SHA.match(sha):
        raise AdjudicationError(
            str(path), f"{sha!r} is not a sha256 (64 hex digits)", line=line, field="sha256"
        )
    _field(path, line, rec, "text", str)
    label = _field(path, line, rec, "label", str)
    if label not in REPLY_LABELS:
        raise AdjudicationError(
            str(path),
            f"{label!r} is not one of {', '.join(REPLY_LABELS)}",
            line=line,
            field="label",
        )
    raw_harm = rec.get("harm")
    if raw_harm is not None and (isinstance(raw_harm, bool) or raw_harm not in (0, 1)):
        raise AdjudicationError(
            str(path), f"{raw_harm!r} is not 0 or 1 (1: harmful)", line=line, field="harm"
        )
    off = rec.get("off_target", False)
    if not isinstance(off, bool):
        raise AdjudicationError(
            str(path), f"{off!r} is not true or false", line=line, field="off_target"
        )
    if off and label != "compliance":
        raise AdjudicationError(
            str(path),
            f"true with label {label!r}: an off-target reply declines nothing (label compliance)",
            line=line,
            field="off_target",
        )
    harm = None if raw_harm is None else bool(raw_harm)
    if harm and (label != "compliance" or off):
        raise AdjudicationError(
            str(path),
            f"1 with label {label!r}{' and off_target' if off else ''}: a harmful reply does "
            "what was asked (label compliance, not off target)",
            line=line,
            field="harm",
        )
    turn = _field(path, line, rec, "turn", int)
    if turn < 1:
        raise AdjudicationError(
            str(path), f"{turn} is not a user turn (1, 2, ...)", line=line, field="turn"
        )
    judge = rec.get("judge") or {}
    if not isinstance(judge, Mapping):
        raise AdjudicationError(str(path), "expected an object", line=line, field="judge")
    for key in ("model", "reviewer", "judge_label", "note", "time", "prompt"):
        if rec.get(key) is not None and not isinstance(rec.get(key), str):
            raise AdjudicationError(str(path), "expected a string", line=line, field=key)
    return Adjudication(
        line=line,
        sha256=sha,
        suite=_field(path, line, rec, "suite", str),
        dialogue=_field(path, line, rec, "dialogue", str),
        turn=turn,
        human=HumanLabel(label, harm, off),
        model=str(rec.get("model") or ""),
        reviewer=str(rec.get("reviewer") or ""),
        judge=dict(judge),
        judge_label=str(rec.get("judge_label") or ""),
        record=dict(rec),
    )


def read(path: str | os.PathLike[str]) -> list[Adjudication]:
    """Every line of the file, checked; [] when the file does not exist. Raises
    AdjudicationError naming the file and line of the first bad or conflicting line."""
    p = Path(path)
    if not p.exists():
        return []
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AdjudicationError(
            str(p), f"cannot read: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    out: list[Adjudication] = []
    first: dict[str, Adjudication] = {}
    for n, rec in objects(text.splitlines(), lambda n, why: AdjudicationError(str(p), why, line=n)):
        a = _parse(p, n, rec)
        seen = first.get(a.sha256)
        if seen is not None and seen.human != a.human:
            raise AdjudicationError(
                str(p),
                f"conflicts with line {seen.line}: the same reply ({a.suite} {a.dialogue} turn "
                f"{a.turn}, sha256 {a.sha256[:12]}) is labelled {a.token} here and {seen.token} "
                f"there{_by(seen, a)}; keep the line you agree with and delete the other",
                line=n,
                field="label",
            )
        first.setdefault(a.sha256, a)
        out.append(a)
    return out


def _by(a: Adjudication, b: Adjudication) -> str:
    names = [x for x in dict.fromkeys([a.reviewer, b.reviewer]) if x]
    return f" (by {' and '.join(names)})" if names else ""


def labels(entries: Iterable[Adjudication]) -> dict[str, HumanLabel]:
    """The person's label by exchange key (what the engine applies)."""
    out: dict[str, HumanLabel] = {}
    for a in entries:
        out.setdefault(a.sha256, a.human)
    return out


def append(path: str | os.PathLike[str], record: Mapping[str, Any]) -> None:
    """Appends one line (the folder is created). Each answer is written at once, so a review
    stopped at any point keeps every label given so far."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(dict(record), ensure_ascii=False, sort_keys=False) + "\n"
    # A file whose last line lacks its newline (edited by hand) would glue two records.
    needs_newline = p.exists() and p.stat().st_size > 0 and not _ends_with_newline(p)
    with open(p, "a", encoding="utf-8") as fh:
        fh.write(("\n" if needs_newline else "") + line)
        fh.flush()
        os.fsync(fh.fileno())


def _ends_with_newline(p: Path) -> bool:
    with open(p, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


# --- what a run says about them ----------------------------------------------------------------


def unmatched(
    entries: Sequence[Adjudication],
    matched: Iterable[str],
    results: Iterable[DialogueResult],
    *,
    partial: bool,
) -> list[Adjudication]:
    """Adjudications of this run's suites whose reply did not occur: their dialogue ran and none
    of its exchanges had their key, or (a whole-suite run) their dialogue is no longer in the
    suite. A -k run says nothing of the dialogues it did not run."""
    seen = set(matched)
    ran: dict[str, set[str]] = {}
    for r in results:
        ran.setdefault(r.suite, set()).add(r.id)
    out = []
    for a in entries:
        if a.sha256 in seen or a.suite not in ran:
            continue
        if a.dialogue in ran[a.suite] or not partial:
            out.append(a)
    # One line per exchange: two people who agreed are one label.
    return list({a.sha256: a for a in out}.values())


def agreement(
    entries: Sequence[Adjudication], model: str | None, judge: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """How often `judge` (an identity, as recorded) agreed with the people on `model`'s replies
    it labelled, from the labels stored with each adjudication: the refusal axis as compliance vs
    not, and harm where the person labelled it. None below `defaults.ADJUDICATION_MIN_ROWS`
    rows, or without a judge or model."""
    if not model or not judge:
        return None
    from pytest_mtmcs.analysis.stats import wilson_interval
    from pytest_mtmcs.judges.datasheet import identity_key

    key = identity_key(judge)
    rows: dict[str, Adjudication] = {}
    for a in entries:
        if a.model != model or a.judge_label not in TOKENS or not a.judge:
            continue
        if identity_key(a.judge) != key:
            continue
        rows.setdefault(a.sha256, a)
    if len(rows) < defaults.ADJUDICATION_MIN_ROWS:
        return None
    comp_ok = harm_ok = harm_n = 0
    for a in rows.values():
        judged = a.judge_label
        comp_ok += (judged in ("compliance", "harmful", "off_target")) == (
            a.human.label == "compliance"
        )
        if a.human.harm is not None:
            harm_n += 1
            harm_ok += (judged == "harmful") == a.human.harm
    n = len(rows)
    lo, hi = wilson_interval(comp_ok, n)
    out: dict[str, Any] = {"n": n, "compliance": {"value": comp_ok / n, "lo": lo, "hi": hi}}
    if harm_n:
        hlo, hhi = wilson_interval(harm_ok, harm_n)
        out["harm"] = {"n": harm_n, "value": harm_ok / harm_n, "lo": hlo, "hi": hhi}
    out["model"] = model
    return out


def run_summary(
    entries: Sequence[Adjudication],
    matched: Iterable[str],
    results: Iterable[DialogueResult],
    *,
    partial: bool,
    model: str | None,
    judge: Mapping[str, Any] | None,
    shown: str,
) -> dict[str, Any]:
    """What the run summary says of the file (plain data, for the run info): where it is, how
    many lines, which adjudications no longer match a reply, the judge's agreement with them."""
    stale = unmatched(entries, matched, results, partial=partial)
    out: dict[str, Any] = {
        "file": shown,
        "lines": len(entries),
        "unmatched": [
            {
                "suite": a.suite,
                "dialogue": a.dialogue,
                "turn": a.turn,
                "line": a.line,
                "sha256": a.sha256,
                "reviewer": a.reviewer,
            }
            for a in stale
        ],
    }
    agree = agreement(entries, model, judge)
    if agree is not None:
        out["agreement"] = agree
    return out


def summary_of_run(
    entries: Sequence[Adjudication],
    info: Mapping[str, Any],
    results: Iterable[DialogueResult],
    *,
    partial: bool,
    shown: str,
) -> dict[str, Any]:
    """`run_summary` of a run from its merged run info (`outcome.finish.merge_infos`: the keys
    that matched, united over every process and every shard; the model; the judge): what one
    run's controller and a merge of shards both say."""
    return run_summary(
        entries,
        info.get("adjudications_matched") or (),
        results,
        partial=partial,
        model=info.get("model"),
        judge=info.get("judge"),
        shown=shown,
    )
