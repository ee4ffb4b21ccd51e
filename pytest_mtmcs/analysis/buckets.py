"""Turn buckets: which group of dialogue lengths a dialogue's number of user turns falls in.

A spec is a comma-separated list of parts, each a single length (`1`), a closed range (`2-3`) or
an open range (`6+`), non-overlapping, in increasing order, starting at 1 or later.

Gaps are allowed (`1,2,4,6,8` for SafeMT's lengths): a dialogue whose length falls in no bucket is
never dropped, it gets a bucket of its own named by its length (`3`), which sorts among the
configured ones by length. Thresholds can only name configured buckets.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pytest_mtmcs import defaults
from pytest_mtmcs.errors import ConfigError

DEFAULT = defaults.BUCKETS
# The row that aggregates every bucket in tables and comparisons.
ALL = "all"

_PART = re.compile(r"^(\d+)(?:-(\d+)|(\+))?$")


@dataclass(frozen=True)
class Bucket:
    name: str
    lo: int
    hi: int | None  # None: open-ended

    def contains(self, n: int) -> bool:
        return n >= self.lo and (self.hi is None or n <= self.hi)


@dataclass(frozen=True)
class Buckets:
    spec: str
    buckets: tuple[Bucket, ...]

    @staticmethod
    def parse(spec: str, option: str = "--mtmcs-buckets") -> Buckets:
        """Parse a bucket spec; a bad one raises ConfigError naming `option` and the bad part."""
        parts = [p.strip() for p in spec.split(",")]
        if not spec.strip():
            raise ConfigError(f"{option}: empty bucket spec; write e.g. {DEFAULT!r}")
        out: list[Bucket] = []
        for part in parts:
            m = _PART.match(part)
            if not m:
                raise ConfigError(
                    f"{option}: bad bucket {part!r} in {spec!r}: write a length (3), "
                    f"a range (2-3) or an open range (6+), e.g. {DEFAULT!r}"
                )
            lo = int(m.group(1))
            hi: int | None = None if m.group(3) else int(m.group(2) or lo)
            if lo < 1:
                raise ConfigError(f"{option}: bad bucket {part!r} in {spec!r}: lengths start at 1")
            if hi is not None and hi < lo:
                raise ConfigError(
                    f"{option}: bad bucket {part!r} in {spec!r}: range end is before its start"
                )
            if out:
                prev = out[-1]
                if prev.hi is None:
                    raise ConfigError(
                        f"{option}: bad bucket {part!r} in {spec!r}: it comes after the open "
                        f"bucket {prev.name!r}, which already covers every longer dialogue"
                    )
                if lo <= prev.hi:
                    raise ConfigError(
                        f"{option}: bad bucket {part!r} in {spec!r}: it overlaps or precedes "
                        f"{prev.name!r}; buckets must not overlap and must be in increasing order"
                    )
            out.append(Bucket(part, lo, hi))
        return Buckets(",".join(b.name for b in out), tuple(out))

    @property
    def names(self) -> tuple[str, ...]:
        """The configured bucket names, shortest dialogues first."""
        return tuple(b.name for b in self.buckets)

    def bucket_of(self, user_turns: int) -> str:
        """The bucket of a dialogue with this many user turns (its own length when in a gap)."""
        for b in self.buckets:
            if b.contains(user_turns):
                return b.name
        return str(user_turns)

    def sort_key(self, name: str) -> tuple[int, int]:
        """Order bucket names by the lengths they cover; `all` last, unknown names after it."""
        if name == ALL:
            return (1, 0)
        for b in self.buckets:
            if b.name == name:
                return (0, b.lo)
        if name.isdigit():
            return (0, int(name))
        return (2, 0)

    def ordered(self, names: set[str] | list[str] | tuple[str, ...]) -> list[str]:
        """The given names, configured ones and gap buckets in length order, `all` last."""
        return sorted(set(names), key=lambda n: (self.sort_key(n), n))


DEFAULT_BUCKETS = Buckets.parse(DEFAULT)


def bucket_spec(override: str | None, suite_defaults: Mapping[str, Any] | None) -> str:
    """The one rule for a suite's buckets: `--mtmcs-buckets` (`override`), else the suite's
    `[defaults] buckets`, else the built-in default."""
    if override:
        return override
    spec = (suite_defaults or {}).get("buckets")
    return str(spec) if spec else DEFAULT
