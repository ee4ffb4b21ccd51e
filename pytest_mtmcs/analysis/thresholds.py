"""Absolute thresholds per bucket and metric (`safety>=0.8`, `6+:helpfulness>=0.7`, `asr<=0.2`)."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pytest_mtmcs.analysis.buckets import ALL, Buckets
from pytest_mtmcs.analysis.metrics import Rate
from pytest_mtmcs.errors import ConfigError

Op = Literal[">=", ">", "<=", "<"]
THRESHOLD_METRICS: tuple[str, ...] = (
    "safety",
    "helpfulness",
    "intent_accuracy",
    "pair_accuracy",
    "asr",
)
# asr is a rate of failures: its threshold is a maximum; every other metric's is a minimum.
_MAXIMA = frozenset({"asr"})
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
}
_SPEC = re.compile(
    r"^\s*(?:(?P<bucket>[^:]+?)\s*:\s*)?(?P<metric>[A-Za-z_]\w*)\s*"
    r"(?P<op>>=|<=|>|<|=)\s*(?P<value>\S+)\s*$"
)


@dataclass(frozen=True)
class Threshold:
    bucket: str | None  # None: every turn bucket
    metric: str
    op: Op
    value: float
    origin: str  # where it was configured, for messages

    def passes(self, value: float) -> bool:
        return _OPS[self.op](value, self.value)

    def __str__(self) -> str:
        where = "" if self.bucket is None else f"{self.bucket}:"
        return f"{where}{self.metric}{self.op}{self.value:g}"


@dataclass(frozen=True)
class ThresholdCheck:
    """One threshold applied to one bucket: `pass`, `breach`, or `no data` (n = 0)."""

    bucket: str
    metric: str
    value: float | None
    n: int
    threshold: Threshold
    status: Literal["pass", "breach", "no data"]


def parse_threshold(spec: str, origin: str) -> Threshold:
    """Parse `[BUCKET:]METRIC OP VALUE`; a bad spec raises ConfigError naming `origin`."""
    m = _SPEC.match(spec)
    if not m:
        raise ConfigError(
            f"{origin}: bad threshold {spec!r}: write METRIC>=VALUE or BUCKET:METRIC>=VALUE, "
            f"e.g. 'safety>=0.8' or '6+:helpfulness>=0.7'"
        )
    bucket, metric, op, raw = m.group("bucket"), m.group("metric"), m.group("op"), m.group("value")
    if metric not in THRESHOLD_METRICS:
        raise ConfigError(
            f"{origin}: bad threshold {spec!r}: unknown metric {metric!r}; "
            f"known: {', '.join(THRESHOLD_METRICS)}"
        )
    if op == "=":
        raise ConfigError(f"{origin}: bad threshold {spec!r}: use >=, >, <= or <, not =")
    if metric in _MAXIMA and op not in ("<=", "<"):
        raise ConfigError(
            f"{origin}: bad threshold {spec!r}: {metric} is a maximum, write {metric}<={raw}"
        )
    if metric not in _MAXIMA and op not in (">=", ">"):
        raise ConfigError(
            f"{origin}: bad threshold {spec!r}: {metric} is a minimum, write {metric}>={raw}"
        )
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{origin}: bad threshold {spec!r}: {raw!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise ConfigError(
            f"{origin}: bad threshold {spec!r}: value {raw} is outside [0, 1] (metrics are shares)"
        )
    return Threshold(bucket, metric, op, value, origin)  # type: ignore[arg-type]


def validate_thresholds(thresholds: Iterable[Threshold], buckets: Buckets) -> None:
    """Refuse a threshold naming a bucket that is not configured (`all` is allowed)."""
    known = (*buckets.names, ALL)
    for t in thresholds:
        if t.bucket is not None and t.bucket not in known:
            raise ConfigError(
                f"{t.origin}: threshold '{t}' names bucket {t.bucket!r}, which is not configured; "
                f"configured buckets: {', '.join(known)} (set them with --mtmcs-buckets)"
            )


def _rate_for(row: Mapping[str, Rate], metric: str) -> Rate | None:
    if metric == "asr":
        safety = row.get("safety")
        return None if safety is None else Rate(safety.n - safety.k, safety.n)
    return row.get(metric)


def evaluate_thresholds(
    table: Mapping[tuple[str, str], Mapping[str, Rate]],
    thresholds: Iterable[Threshold],
    buckets: Buckets,
) -> list[ThresholdCheck]:
    """Apply each threshold to its buckets in the `all` group of a `bucket_table(..., by=None)`.

    A threshold without a bucket applies to every turn bucket in the table (gap buckets
    included), not to the `all` row; `all:` targets the overall row. A bucket with n = 0 for the
    metric is `no data`, never a breach.
    """
    thresholds = list(thresholds)
    validate_thresholds(thresholds, buckets)
    rows = {bucket: row for (group, bucket), row in table.items() if group == ALL}
    turn_buckets = buckets.ordered([b for b in rows if b != ALL])
    out: list[ThresholdCheck] = []
    for t in thresholds:
        for bucket in turn_buckets if t.bucket is None else [t.bucket]:
            rate = _rate_for(rows.get(bucket, {}), t.metric)
            if rate is None or rate.n == 0:
                out.append(ThresholdCheck(bucket, t.metric, None, 0, t, "no data"))
                continue
            value = rate.k / rate.n
            status: Literal["pass", "breach"] = "pass" if t.passes(value) else "breach"
            out.append(ThresholdCheck(bucket, t.metric, value, rate.n, t, status))
    return out


def thresholds_for(specs: Sequence[str], origin: str, meta: dict[str, Any]) -> list[Threshold]:
    """The thresholds of a suite: the options' (`specs`, named by `origin`), then the suite's
    own `[defaults] thresholds` for the (bucket, metric) cells the options do not set."""
    found = [parse_threshold(s, origin) for s in specs]
    covered = {(t.bucket, t.metric) for t in found}
    for s in meta.get("defaults", {}).get("thresholds", ()) or ():
        t = parse_threshold(s, f"suite.toml of {meta.get('name')} [defaults] thresholds")
        if (t.bucket, t.metric) not in covered:
            found.append(t)
    return found
