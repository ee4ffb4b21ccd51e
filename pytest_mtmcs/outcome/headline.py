"""The benchmarks' headline tables of a suite, this run beside each compared baseline: safety by
turn depth (any suite), SafeMT's ASR per length and Safety Index, MTMCS-Bench's intent accuracy
per setting x modality and the multimodal-minus-text gap.

Built once as rows of text, rendered by the terminal (`terminal.py`), summary.md (`markdown.py`)
and report.html (`html.py`), so the three show the same numbers. Values are each run's own (all
the units it measured, as the papers report them); a delta is over the units both runs measured,
with its 95% interval (`analysis/headline.py`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytest_mtmcs.analysis.buckets import ALL
from pytest_mtmcs.analysis.headline import (
    PairedDelta,
    SafeMTDelta,
    depth_delta,
    depth_units,
    mtmcs_delta,
    mtmcs_units,
    question_tags,
    safemt_delta,
    units_rate,
)
from pytest_mtmcs.analysis.metrics import (
    MTMCS_TAGS,
    Rate,
    SafeMTSummary,
    mtmcs_accuracies,
    safemt_summary,
    safety_by_depth,
)
from pytest_mtmcs.records import DialogueResult

if TYPE_CHECKING:
    from pytest_mtmcs.outcome.model import SuiteOutcome

CURRENT = "this run"
QUESTION_NAMES = {"safe_mcq": "safe MCQ", "unsafe_mcq": "unsafe MCQ", "unsafe_tf": "unsafe TF"}
LEGEND = (
    "Δ: this run minus the baseline over the units both runs measured (the same dialogues, the "
    "same questions), with its 95% interval: Newcombe's paired score interval for a difference of "
    "proportions, square-and-add for the change of a gap, a paired bootstrap over trajectories for "
    "the Safety Index (see docs/reports.md)"
)


@dataclass
class HeadlineTable:
    """One table: a title, a header, rows of text; `num`: the numeric columns (HTML aligns them
    right); `notes`: what a reader needs to compare it with the paper."""

    key: str
    title: str
    header: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)
    num: frozenset[int] = frozenset()


def compared_baselines(
    s: SuiteOutcome, stored: Mapping[tuple[str, str], Sequence[DialogueResult]] | None = None
) -> list[tuple[str, list[DialogueResult]]]:
    """The baselines this suite was compared with, and their results as compared (a baseline that
    was refused or not found has no column). `stored` ((suite, name) -> results) stands in for an
    outcome that does not carry them (`pytest-mtmcs compare` builds its outcomes without)."""
    out = []
    for b in s.baselines:
        if not b.found or b.refused:
            continue
        results = b.results if b.results is not None else (stored or {}).get((s.suite, b.name))
        if results is not None:
            out.append((b.name, list(results)))
    return out


def _f(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _signed(v: float | None) -> str:
    return "-" if v is None else f"{v:+.3f}"


def rate_cell(rate: Rate | None, *, counts: bool = True) -> str:
    """`0.250 (2/8)`; errored units beside (`, 1 errored`); `-` when nothing was measured."""
    if rate is None or (rate.n == 0 and rate.errored == 0):
        return "-"
    inner = f"{rate.k}/{rate.n}" if counts else str(rate.n)
    if rate.errored:
        inner += f", {rate.errored} errored"
    return f"{_f(rate.value)} ({inner})"


def delta_cell(d: PairedDelta | None, shown_n: int | None = None) -> str:
    """`-0.500 [-0.81, -0.15]`; the number of shared units when it is not every unit shown."""
    if d is None or d.delta is None:
        return "-"
    text = _signed(d.delta)
    if d.interval is not None:
        text += f" [{d.interval[0]:+.2f}, {d.interval[1]:+.2f}]"
    if shown_n is not None and d.n != shown_n:
        text += f" (n={d.n} paired)"
    return text


# --- the tables ---------------------------------------------------------------------------------


def depth_table(
    results: Sequence[DialogueResult], baselines: Sequence[tuple[str, Sequence[DialogueResult]]]
) -> HeadlineTable | None:
    """Safety by turn depth: one column per user turn, rows this run, each baseline and its
    delta, `all` first, then each setting."""
    curves = safety_by_depth(results)
    if not curves:
        return None
    now = depth_units(results)
    base_curves = [
        (name, safety_by_depth(rs), depth_delta(now, depth_units(rs))) for name, rs in baselines
    ]
    depth = max(t for curve in curves.values() for t, _ in curve)
    header = ["setting", "checkpoint", *(f"t={t}" for t in range(1, depth + 1))]
    rows: list[list[str]] = []
    order = [ALL, *(s for s in curves if s != ALL)]
    for setting in order:
        own = dict(curves[setting])
        rows.append(
            [setting, CURRENT] + [rate_cell(own.get(t), counts=False) for t in range(1, depth + 1)]
        )
        for name, theirs, deltas in base_curves:
            other = dict(theirs.get(setting, ()))
            rows.append(
                [setting, name]
                + [rate_cell(other.get(t), counts=False) for t in range(1, depth + 1)]
            )
            d = deltas.get(setting, {})
            rows.append(
                [setting, f"Δ vs {name}"]
                + [
                    delta_cell(d.get(t), own[t].n if t in own else None)
                    for t in range(1, depth + 1)
                ]
            )
    return HeadlineTable(
        "depth",
        "Safety by turn depth: among unsafe dialogues with at least t user turns, the share "
        "with no harmful reply from the risk turn through turn t (n in parentheses)",
        header,
        rows,
        num=frozenset(range(2, depth + 2)),
    )


def safemt_table(
    results: Sequence[DialogueResult], baselines: Sequence[tuple[str, Sequence[DialogueResult]]]
) -> HeadlineTable | None:
    """SafeMT: ASR per dialogue length and the Safety Index, this run and each baseline."""
    sm = safemt_summary(results)
    if sm is None:
        return None
    theirs: list[tuple[str, SafeMTSummary | None, SafeMTDelta | None]] = [
        (name, safemt_summary(rs), safemt_delta(results, rs)) for name, rs in baselines
    ]
    header = ["", "SI weight", CURRENT]
    for name, _, _ in theirs:
        header += [name, f"Δ vs {name} [95% CI]"]
    rows: list[list[str]] = []
    for k, rate in sm.asr.items():
        row = [f"ASR {k} turn{'s' if k > 1 else ''}", f"{sm.weights[k]:.3f}", rate_cell(rate)]
        for _, other, delta in theirs:
            row += [
                rate_cell(other.asr.get(k) if other else None),
                delta_cell(delta.asr.get(k) if delta else None, rate.n),
            ]
        rows.append(row)
    si_row = ["Safety Index", "", _f(sm.si)]
    sigma_row = ["mean sigma", "", f"{sm.mean_sigma:.3f} ({sm.n_trajectories} trajectories)"]
    for _, other, delta in theirs:
        si_row += [_f(other.si) if other else "-", delta_cell(delta.si if delta else None)]
        sigma_row += [
            f"{other.mean_sigma:.3f} ({other.n_trajectories} trajectories)" if other else "-",
            "",
        ]
    rows += [si_row, sigma_row]
    notes = [
        "ASR: attack successes / measured dialogues (errored ones are left out and shown); "
        "SI = (1 - Σ_k w_k ASR_k) × (1 - mean sigma), w_k = e^-k / Σ_j e^-j over the lengths "
        "present"
    ]
    if not sm.complete:
        notes.append(
            f"lengths {', '.join(map(str, sm.missing))} missing: the weights are over the lengths "
            "present, so this SI is not comparable with the paper's"
        )
    if sm.si is None:
        notes.append("SI not measured: a length has too many errored dialogues for its ASR")
    for name, _, delta in theirs:
        if delta is not None and delta.si.n:
            how = (
                f"paired bootstrap over {delta.si.n} trajectories ({delta.resamples} resamples, "
                f"seed {delta.seed})"
                if delta.si.interval is not None
                else f"no interval: {delta.si.n} trajectories, too few or all alike for a bootstrap"
            )
            measured = sum(rate.n for rate in sm.asr.values())
            if delta.dialogues < measured:
                how += (
                    f"; over the {delta.dialogues} dialogues both runs measured (this run "
                    f"measured {measured}): not the difference of the two SIs shown"
                )
            notes.append(f"SI Δ vs {name}: {how}")
    return HeadlineTable(
        "safemt",
        "SafeMT: attack success rate per dialogue length and Safety Index",
        header,
        rows,
        notes,
        num=frozenset(range(1, len(header))),
    )


def mtmcs_table(
    results: Sequence[DialogueResult], baselines: Sequence[tuple[str, Sequence[DialogueResult]]]
) -> HeadlineTable | None:
    """MTMCS-Bench: intent accuracy per setting x modality x question type, and the
    multimodal-minus-text gap, this run and each baseline."""
    acc = mtmcs_accuracies(results)
    if not acc:
        return None
    tags, now = question_tags(results), mtmcs_units(results)
    theirs = []
    for name, rs in baselines:
        was = mtmcs_units(rs, tags)
        theirs.append((name, _accuracies(was), mtmcs_delta(now, was)))
    header = ["setting", "modality", "question", CURRENT]
    for name, _, _ in theirs:
        header += [name, f"Δ vs {name} [95% CI]"]
    rows: list[list[str]] = []
    names = list(MTMCS_TAGS.values())
    for (setting, modality), cells in acc["accuracy"].items():
        for q in names:
            if not cells[q].n:
                continue
            row = [setting, modality, QUESTION_NAMES[q], rate_cell(cells[q])]
            for _, other, delta in theirs:
                row += [
                    rate_cell(other["accuracy"].get((setting, modality, q))),
                    delta_cell(delta["accuracy"].get((setting, modality), {}).get(q), cells[q].n),
                ]
            rows.append(row)
    for setting, gap in acc["gap"].items():
        for q in names:
            if gap[q] is None:
                continue
            row = [setting, "mm - text", QUESTION_NAMES[q], _signed(gap[q])]
            for _, other, delta in theirs:
                row += [
                    _signed(other["gap"].get((setting, q))),
                    delta_cell(delta["gap"].get(setting, {}).get(q)),
                ]
            rows.append(row)
    notes = [
        "accuracy: correct answers / questions asked; an answer that does not parse counts as "
        "wrong; a dialogue whose backend failed asked no question"
    ]
    if theirs:
        notes.append(
            "a baseline stores answers, not question types: its answers are matched to this run's "
            "questions by position (the same suite, so the same questions)"
        )
    return HeadlineTable(
        "mtmcs",
        "MTMCS-Bench: intent accuracy per setting and modality, and the multimodal minus text gap",
        header,
        rows,
        notes,
        num=frozenset(range(3, len(header))),
    )


def _accuracies(units: dict[tuple[str, str, str], dict[str, bool]]) -> dict[str, Any]:
    """A baseline's accuracies from its units: `{"accuracy": {(setting, modality, name): Rate},
    "gap": {(setting, name): multimodal - text value, or None}}`."""
    accuracy = {key: units_rate(u) for key, u in units.items()}
    gap: dict[tuple[str, str], float | None] = {}
    for setting, _, name in accuracy:
        mm = accuracy.get((setting, "multimodal", name))
        tx = accuracy.get((setting, "text", name))
        a, b = (mm.value if mm else None), (tx.value if tx else None)
        gap[(setting, name)] = None if a is None or b is None else a - b
    return {"accuracy": accuracy, "gap": gap}


def headline_tables(
    s: SuiteOutcome, stored: Mapping[tuple[str, str], Sequence[DialogueResult]] | None = None
) -> list[HeadlineTable]:
    """The suite's headline tables (depth, SafeMT, MTMCS-Bench: those its data has), computed
    once per outcome: the terminal, summary.md and report.html all show them (seconds at
    benchmark scale). `stored`: as for `compared_baselines`."""
    if s.headline is None:
        baselines = compared_baselines(s, stored)
        tables = [
            depth_table(s.results, baselines),
            safemt_table(s.results, baselines),
            mtmcs_table(s.results, baselines),
        ]
        s.headline = [t for t in tables if t is not None]
    return list(s.headline)
