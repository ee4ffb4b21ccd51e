"""This run against a stored baseline: paired tests per bucket and metric (flips: `flips.py`).

The comparison is paired: only units measured on both sides count (see `metrics.units`), and each
(bucket, metric) gets McNemar's exact test on its discordant pairs. All tests of one comparison,
the `all` rows included, form one Holm family, so the chance that a run identical in distribution
to its baseline shows any regression at all stays at or below alpha.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pytest_mtmcs.analysis.buckets import ALL, Buckets
from pytest_mtmcs.analysis.metrics import METRICS, Rate, units
from pytest_mtmcs.analysis.stats import holm, mcnemar_exact, min_detectable_drop
from pytest_mtmcs.records import DialogueResult


@dataclass(frozen=True)
class BucketComparison:
    """One (bucket, metric) of a baseline comparison, over the units both runs share.

    `delta` = current - base (negative: a drop). `b`: units ok in the baseline and not ok now;
    `c`: not ok in the baseline and ok now. `mde`: the smallest drop (share of n_pairs) that could
    be significant on its own, at the Holm family's first-step level alpha / m; None when no drop
    could. `underpowered`: the tolerated drop cannot be detected (mde is None or > max_drop); a
    summary should then show the MDE instead of a bare pass. `regressed`: the drop exceeds
    max_drop and p_holm < alpha. `inconclusive`: the drop exceeds max_drop but is not
    significant: neither a pass nor a regression (a gate shows it as such). `level`: the Holm
    family's first-step level the mde is computed at.
    """

    bucket: str
    metric: str
    n_pairs: int
    base: Rate
    current: Rate
    delta: float | None
    b: int
    c: int
    p_value: float
    p_holm: float
    mde: float | None
    regressed: bool
    underpowered: bool
    inconclusive: bool = False
    level: float = 0.0

    def pairs_needed(self) -> int | None:
        """The fewest pairs at which the observed drop could be significant (all its discordant
        pairs one way, at `level`); None when there is no drop."""
        drop = 0.0 if self.delta is None else -self.delta
        if drop <= 0 or self.level <= 0:
            return None
        b = 1
        while mcnemar_exact(b, 0) >= self.level:
            b += 1
        return max(self.n_pairs, math.ceil(b / drop))


def compare_buckets(
    current: Iterable[DialogueResult],
    baseline: Iterable[DialogueResult],
    buckets: Buckets,
    *,
    max_drop: float = 0.02,
    alpha: float = 0.05,
    metrics: Sequence[str] = METRICS,
) -> list[BucketComparison]:
    """Paired comparison per bucket and metric, bucket-major (configured order, `all` last).

    A row exists for each (bucket, metric) where either side has units; rows with no shared unit
    have n_pairs = 0, p = 1, and never regress. The Holm family is every row with n_pairs > 0.
    """
    current, baseline = list(current), list(baseline)
    # (bucket, metric) -> [n_pairs, base_ok, cur_ok, b, c]
    cells: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    for metric in metrics:
        cur, base = units(current, metric, buckets), units(baseline, metric, buckets)
        for uid in cur.keys() | base.keys():
            bucket = (cur.get(uid) or base[uid])[0]
            # Looked up even for a unit on one side only: its row exists, with n_pairs = 0.
            rows = [cells[(bucket, metric)], cells[(ALL, metric)]]
            if uid not in cur or uid not in base:
                continue
            was, now = base[uid][1], cur[uid][1]
            for cell in rows:
                cell[0] += 1
                cell[1] += int(was)
                cell[2] += int(now)
                cell[3] += int(was and not now)
                cell[4] += int(now and not was)

    order = {m: i for i, m in enumerate(metrics)}
    keys = sorted(cells, key=lambda k: (buckets.sort_key(k[0]), k[0], order[k[1]]))
    tested = [k for k in keys if cells[k][0] > 0]
    raw = {k: mcnemar_exact(cells[k][3], cells[k][4]) for k in tested}
    adjusted = dict(zip(tested, holm([raw[k] for k in tested]), strict=True))
    # A lone regression meets Holm's first step, alpha / m: the honest power figure.
    level = alpha / len(tested) if tested else alpha

    out: list[BucketComparison] = []
    for key in keys:
        n, base_ok, cur_ok, b, c = cells[key]
        base_rate, cur_rate = Rate(base_ok, n), Rate(cur_ok, n)
        if n == 0:
            out.append(
                BucketComparison(
                    key[0], key[1], 0, base_rate, cur_rate, None, 0, 0, 1.0, 1.0, None, False, True
                )
            )
            continue
        mde = min_detectable_drop(n, level)
        out.append(
            BucketComparison(
                bucket=key[0],
                metric=key[1],
                n_pairs=n,
                base=base_rate,
                current=cur_rate,
                delta=(cur_ok - base_ok) / n,
                b=b,
                c=c,
                p_value=raw[key],
                p_holm=adjusted[key],
                mde=mde,
                # b - c is exactly base_ok - cur_ok over the shared units.
                regressed=(b - c) / n > max_drop and adjusted[key] < alpha,
                underpowered=mde is None or mde > max_drop,
                inconclusive=(b - c) / n > max_drop and adjusted[key] >= alpha,
                level=level,
            )
        )
    return out
