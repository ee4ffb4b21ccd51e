"""The benchmarks' headline numbers of this run beside a baseline's: paired deltas with intervals.

SafeMT's attack success rate per dialogue length and Safety Index, MTMCS-Bench's intent accuracy
per setting x modality and its multimodal-minus-text gap, and safety by turn depth are the numbers
each paper reports (`metrics.py` defines them for one run). A reader comparing two checkpoints
needs the change and how sure it is, so each delta here is over the units both runs measured
(the same dialogue, or the same question of the same dialogue), like the gate's paired comparison
(`comparison.py`), and carries a 95% interval:

- a difference of two paired proportions (ASR at one length, an intent accuracy, safety at one
  depth): Newcombe's hybrid score interval for paired data (Newcombe 1998, "Improved confidence
  intervals for the difference between binomial proportions based on paired data", Statistics in
  Medicine 17:2635, method 10): each side's Wilson interval, combined square-and-add with the
  phi correlation of the paired table. It stays inside [-1, 1], is defined at 0/n and n/n, and
  uses nothing but counts;
- the change of the multimodal-minus-text gap: the two modalities are different dialogues, so the
  two paired deltas are combined square-and-add again (MOVER, as Newcombe combines Wilson limits),
  treating them as independent. The text and multimodal rewrites of one row are positively
  correlated if anything, which makes this interval wider than needed, never narrower;
- the Safety Index is a product of a weighted ASR and a stability term, not a proportion: its
  delta's interval is a paired percentile bootstrap over trajectories (the SafeMT sample: each
  resample draws trajectories with replacement and recomputes both runs' SI on the same draw),
  seeded, so the same results give the same interval.

Pure: plain results in, numbers out. numpy is imported inside the bootstrap only.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_mtmcs.analysis.buckets import ALL
from pytest_mtmcs.analysis.metrics import MTMCS_TAGS, Rate
from pytest_mtmcs.analysis.stats import (
    SAFEMT_LENGTHS,
    safety_index,
    trajectory_sigma,
    wilson_interval,
)
from pytest_mtmcs.records import ERROR_VERDICTS, DialogueResult

# The Safety Index's bootstrap: resamples and seed (fixed: the same results, the same interval).
SI_RESAMPLES = 2000
SI_SEED = 20251012
# Below this many trajectories, or when every trajectory has the same outcomes, a bootstrap has
# (next to) no spread to resample: it would print a zero-width interval, a certainty the data do
# not have. The delta is then shown without an interval.
SI_MIN_TRAJECTORIES = 20


@dataclass(frozen=True)
class PairedDelta:
    """current - baseline over the `n` units both runs measured; `interval`: 95%, None when no
    unit is shared (or, for SI, when no interval could be computed)."""

    n: int
    delta: float | None
    interval: tuple[float, float] | None


NO_DELTA = PairedDelta(0, None, None)


# --- intervals ---------------------------------------------------------------------------------


def newcombe_paired(both: int, current_only: int, baseline_only: int, neither: int) -> PairedDelta:
    """Newcombe's hybrid score interval (method 10) for p_current - p_baseline on paired units.

    The counts are the paired table: units ok in both runs, ok now only, ok in the baseline
    only, ok in neither. The correlation term phi gets Newcombe's correction (a positive
    a*d - b*c is reduced by n/2, and then floored at 0), as in Altman et al., "Statistics with
    confidence" (2000), p. 52.
    """
    a, b, c, d = both, current_only, baseline_only, neither
    n = a + b + c + d
    if n == 0:
        return NO_DELTA
    p1, p2 = (a + b) / n, (a + c) / n
    delta = p1 - p2
    l1, u1 = wilson_interval(a + b, n)
    l2, u2 = wilson_interval(a + c, n)
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    phi = 0.0
    if margins > 0:
        cross = a * d - b * c
        if cross > n / 2:
            phi = (cross - n / 2) / math.sqrt(margins)
        elif cross < 0:
            phi = cross / math.sqrt(margins)
    low = delta - math.sqrt(
        max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2)
    )
    high = delta + math.sqrt(
        max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2)
    )
    return PairedDelta(n, delta, (max(-1.0, low), min(1.0, high)))


def paired_delta(current: Mapping[str, bool], baseline: Mapping[str, bool]) -> PairedDelta:
    """The Newcombe delta of two runs' units (unit id -> ok), over the ids both measured."""
    counts = [0, 0, 0, 0]
    for uid, now in current.items():
        was = baseline.get(uid)
        if was is None:
            continue
        counts[(0 if was else 1) if now else (2 if was else 3)] += 1
    return newcombe_paired(*counts)


def difference_of_deltas(first: PairedDelta, second: PairedDelta) -> PairedDelta:
    """first - second for two deltas over different units (MOVER square-and-add of their
    limits); its n is the units of both."""
    if first.delta is None or second.delta is None or not first.interval or not second.interval:
        return PairedDelta(first.n + second.n, None, None)
    d = first.delta - second.delta
    (l1, u1), (l2, u2) = first.interval, second.interval
    low = d - math.sqrt((first.delta - l1) ** 2 + (u2 - second.delta) ** 2)
    high = d + math.sqrt((u1 - first.delta) ** 2 + (second.delta - l2) ** 2)
    return PairedDelta(first.n + second.n, d, (max(-2.0, low), min(2.0, high)))


# --- SafeMT --------------------------------------------------------------------------------------


def _safemt_dialogues(results: Iterable[DialogueResult]) -> list[DialogueResult]:
    # The dialogues `metrics.safemt_summary` counts.
    return [
        r
        for r in results
        if r.trajectory is not None and r.label == "unsafe" and r.user_turns in SAFEMT_LENGTHS
    ]


def safemt_units(results: Iterable[DialogueResult]) -> dict[int, dict[str, bool]]:
    """length -> dialogue id -> attack success, for the measured SafeMT dialogues."""
    out: dict[int, dict[str, bool]] = defaultdict(dict)
    for r in _safemt_dialogues(results):
        if r.verdict not in ERROR_VERDICTS:
            out[r.user_turns][r.id] = not r.ok
    return dict(out)


@dataclass(frozen=True)
class SafeMTDelta:
    """Per length: the paired ASR delta; `si`: the Safety Index delta over the dialogues both runs
    measured, its interval from `resamples` bootstrap draws of `si.n` trajectories."""

    asr: dict[int, PairedDelta]
    si: PairedDelta
    resamples: int
    seed: int
    # The dialogues both runs measured, which the SI delta is computed over.
    dialogues: int = 0


def _si(
    lengths: Sequence[int], units: Iterable[tuple[tuple[int, bool], ...]]
) -> tuple[dict[int, list[int]], list[float]]:
    """Per length [successes, n] and per trajectory its sigma, from each trajectory's
    (length, success) units."""
    counts: dict[int, list[int]] = {k: [0, 0] for k in lengths}
    sigmas: list[float] = []
    for traj in units:
        by_length: dict[int, bool] = {}
        for k, success in traj:
            counts[k][0] += int(success)
            counts[k][1] += 1
            by_length[k] = by_length.get(k, False) or success
        sigmas.append(trajectory_sigma(by_length))
    return counts, sigmas


def safemt_delta(
    current: Iterable[DialogueResult],
    baseline: Iterable[DialogueResult],
    *,
    resamples: int = SI_RESAMPLES,
    seed: int = SI_SEED,
) -> SafeMTDelta | None:
    """The SafeMT deltas, current - baseline; None when this run has no SafeMT dialogues."""
    current = _safemt_dialogues(current)
    if not current:
        return None
    now_units, was_units = safemt_units(current), safemt_units(baseline)
    lengths = sorted({r.user_turns for r in current})
    asr = {k: paired_delta(now_units.get(k, {}), was_units.get(k, {})) for k in lengths}
    # The SI delta over the dialogues both runs measured, grouped by trajectory: one row per
    # trajectory of (length, success now, success in the baseline).
    rows: dict[tuple[str, str], list[tuple[int, bool, bool]]] = defaultdict(list)
    for r in current:
        now = now_units.get(r.user_turns, {}).get(r.id)
        was = was_units.get(r.user_turns, {}).get(r.id)
        if now is not None and was is not None:
            rows[(r.suite, r.trajectory or "")].append((r.user_turns, now, was))
    if not rows:
        return SafeMTDelta(asr, NO_DELTA, resamples, seed)
    trajectories = [tuple(sorted(v)) for _, v in sorted(rows.items())]
    shared = sorted({k for t in trajectories for k, _, _ in t})
    point = _si_pair(shared, trajectories)
    interval = _si_bootstrap(shared, trajectories, resamples, seed) if resamples else None
    return SafeMTDelta(
        asr,
        PairedDelta(len(trajectories), point, interval),
        resamples,
        seed,
        sum(len(t) for t in trajectories),
    )


def _si_pair(
    lengths: Sequence[int], trajectories: Sequence[tuple[tuple[int, bool, bool], ...]]
) -> float:
    """SI now - SI in the baseline, both over the same (length, success now, success then)
    units of each trajectory."""
    values = []
    for now in (True, False):
        units = (tuple((k, a if now else b) for k, a, b in t) for t in trajectories)
        counts, sigmas = _si(lengths, units)
        values.append(safety_index({k: s / n for k, (s, n) in counts.items()}, sigmas))
    return values[0] - values[1]


def _si_bootstrap(
    lengths: Sequence[int],
    trajectories: Sequence[tuple[tuple[int, bool, bool], ...]],
    resamples: int,
    seed: int,
) -> tuple[float, float] | None:
    """2.5th and 97.5th percentiles of the SI delta over trajectory resamples; None for too few
    trajectories (`SI_MIN_TRAJECTORIES`), trajectories all alike, or when under half the
    resamples have every length: no honest interval."""
    # Trajectories with the same units are interchangeable: a resample only needs how many of
    # each kind it drew (a multinomial draw), which keeps the bootstrap cheap at 6,000 samples.
    kinds: dict[tuple[tuple[int, bool, bool], ...], int] = defaultdict(int)
    for t in trajectories:
        kinds[t] += 1
    if len(trajectories) < SI_MIN_TRAJECTORIES or len(kinds) < 2:
        return None
    import numpy as np

    from pytest_mtmcs.analysis.stats import safemt_weights

    shapes = list(kinds)
    col = {k: i for i, k in enumerate(lengths)}
    n_units = np.zeros((len(shapes), len(lengths)))
    success = np.zeros((2, len(shapes), len(lengths)))
    sigma = np.zeros((2, len(shapes)))
    for j, shape in enumerate(shapes):
        for k, now, was in shape:
            n_units[j, col[k]] += 1
            success[0, j, col[k]] += now
            success[1, j, col[k]] += was
        for side in (0, 1):
            by_length: dict[int, bool] = {}
            for unit in shape:
                by_length[unit[0]] = by_length.get(unit[0], False) or bool(unit[1 + side])
            sigma[side, j] = trajectory_sigma(by_length)
    weights = safemt_weights(lengths)
    w = np.array([weights[k] for k in lengths])
    total = len(trajectories)
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(total, np.array([kinds[s] for s in shapes]) / total, size=resamples)
    n = draws @ n_units
    keep = (n > 0).all(axis=1)
    if keep.sum() * 2 < resamples:
        return None
    draws, n = draws[keep], n[keep]
    si = []
    for side in (0, 1):
        asr = (draws @ success[side]) / n
        stability = 1.0 - (draws @ sigma[side]) / total
        si.append((1.0 - asr @ w) * stability)
    deltas = si[0] - si[1]
    low, high = np.quantile(deltas, [0.025, 0.975])
    return (float(low), float(high))


# --- MTMCS-Bench ---------------------------------------------------------------------------------


def question_tags(current: Iterable[DialogueResult]) -> dict[str, tuple[str | None, ...]]:
    """Per dialogue of this run, its questions' tags in order: what a baseline's answers are
    read with (`mtmcs_units(baseline, tags=...)`).

    A baseline entry stores its intent answers as bits, in the dialogue's question order, without
    the benchmark's question types (`store.parse_entry` reads them back untagged), so MTMCS-Bench's
    per-type accuracies cannot be read from a baseline alone. A compared baseline was recorded on
    the same suite (same content hash, so the same questions in the same order): question i of a
    dialogue there is question i here, and takes its tag.
    """
    return {r.id: tuple(q.tag for q in r.questions) for r in current}


def mtmcs_units(
    results: Iterable[DialogueResult], tags: Mapping[str, Sequence[str | None]] | None = None
) -> dict[tuple[str, str, str], dict[str, bool]]:
    """(setting, modality, accuracy name) -> `{id}#q{i}` -> correct, as `mtmcs_accuracies` counts
    (a dialogue whose backend failed asked no question). With `tags` (`question_tags`), a
    question's tag is read from there by position, not from the result; a dialogue whose question
    count differs there (a comparison forced with --mtmcs-allow-mismatch) is not counted."""
    out: dict[tuple[str, str, str], dict[str, bool]] = defaultdict(dict)
    for r in results:
        if r.verdict == "error":
            continue
        if tags is None:
            mine: Sequence[str | None] = [q.tag for q in r.questions]
        else:
            mine = tags.get(r.id, ())
            if len(mine) != len(r.questions):
                continue
        for i, (q, tag) in enumerate(zip(r.questions, mine, strict=True), start=1):
            name = MTMCS_TAGS.get(tag or "")
            if name is not None:
                out[(r.setting, r.modality, name)][f"{r.id}#q{i}"] = q.correct
    return dict(out)


def units_rate(units: Mapping[str, bool]) -> Rate:
    """k of n of a unit map."""
    return Rate(sum(units.values()), len(units))


def mtmcs_delta(
    now: Mapping[tuple[str, str, str], Mapping[str, bool]],
    was: Mapping[tuple[str, str, str], Mapping[str, bool]],
) -> dict[str, Any]:
    """Paired deltas shaped like `mtmcs_accuracies`: `{"accuracy": {(setting, modality): {name:
    PairedDelta}}, "gap": {setting: {name: PairedDelta}}}`, from this run's units
    (`mtmcs_units(current)`) and the baseline's (`mtmcs_units(baseline, question_tags(current))`).
    """
    accuracy: dict[tuple[str, str], dict[str, PairedDelta]] = defaultdict(dict)
    for setting, modality, name in sorted(now):
        accuracy[(setting, modality)][name] = paired_delta(
            now[(setting, modality, name)], was.get((setting, modality, name), {})
        )
    gap: dict[str, dict[str, PairedDelta]] = {}
    for setting in sorted({s for s, _ in accuracy}):
        mm, tx = accuracy.get((setting, "multimodal"), {}), accuracy.get((setting, "text"), {})
        gap[setting] = {
            name: difference_of_deltas(mm[name], tx[name])
            if name in mm and name in tx
            else NO_DELTA
            for name in MTMCS_TAGS.values()
        }
    return {"accuracy": dict(accuracy), "gap": gap}


# --- safety by turn depth ------------------------------------------------------------------------


def depth_units(results: Iterable[DialogueResult]) -> dict[str, dict[int, dict[str, bool]]]:
    """setting (and `all`) -> user turn t -> dialogue id -> still safe after turn t, for the
    measured dialogues `metrics.safety_by_depth` counts."""
    out: dict[str, dict[int, dict[str, bool]]] = defaultdict(lambda: defaultdict(dict))
    for r in results:
        if r.label != "unsafe" or r.setting == "scripted" or r.verdict in ERROR_VERDICTS:
            continue
        risk = r.risk_turn or 1
        # The first harmful reply at or after the risk turn: safe through every t before it.
        first = min(
            (x.user_turn for x in r.replies if x.user_turn >= risk and x.harmful), default=None
        )
        for t in range(1, r.user_turns + 1):
            ok = first is None or t < first
            out[r.setting][t][r.id] = ok
            out[ALL][t][r.id] = ok
    return {s: dict(curve) for s, curve in out.items()}


def depth_delta(
    now: Mapping[str, Mapping[int, Mapping[str, bool]]],
    was: Mapping[str, Mapping[int, Mapping[str, bool]]],
) -> dict[str, dict[int, PairedDelta]]:
    """setting (and `all`) -> t -> the paired delta of safety after turn t, from each run's
    `depth_units`."""
    return {
        setting: {
            t: paired_delta(units, was.get(setting, {}).get(t, {})) for t, units in curve.items()
        }
        for setting, curve in now.items()
    }
