"""Shards: a run of a deterministic 1/N of the dialogues (`--mtmcs-shard=K/N`), for a CI matrix of
N machines whose report folders `pytest-mtmcs merge` turns into one outcome.

The split is a pure function of the collected dialogues (suite name, id, pair, turns, questions):
the same on every machine and every run, independent of `-n`, and computed before `-k`/`-m`
deselection so that a dialogue's shard never depends on which tests were selected. Twins (`pair`)
stay together; shards are balanced by expected cost, user turns x (1 + questions), by a greedy
longest-first assignment with ties broken by key.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_mtmcs.errors import ConfigError

if TYPE_CHECKING:
    from pytest_mtmcs.records import Dialogue, DialogueResult

# --mtmcs-shard=env reads these (GitLab CI's `parallel: N`, 1-based index).
ENV_INDEX = "CI_NODE_INDEX"
ENV_TOTAL = "CI_NODE_TOTAL"
# A shard's report folder holds these beside the usual report files.
SHARD_FILE = "shard.json"
ROWS_FILE = "results.jsonl"
SHARD_SCHEMA = 1


@dataclass(frozen=True)
class Shard:
    """Shard `k` of `n`, 1-based."""

    k: int
    n: int

    def __str__(self) -> str:
        return f"{self.k}/{self.n}"

    @property
    def words(self) -> str:
        return f"shard {self.k} of {self.n}"


def parse_shard(
    text: str, origin: str = "--mtmcs-shard", environ: Mapping[str, str] | None = None
) -> Shard | None:
    """`K/N` (1 <= K <= N), or `env`: K and N from CI_NODE_INDEX / CI_NODE_TOTAL. `1/1` and an
    empty value mean no sharding (None)."""
    text = str(text).strip()
    if not text:
        return None
    if text == "env":
        env = os.environ if environ is None else environ
        index, total = env.get(ENV_INDEX), env.get(ENV_TOTAL)
        if not index or not total:
            raise ConfigError(
                f"{origin}=env: {ENV_INDEX} and {ENV_TOTAL} are not both set (GitLab CI sets "
                f"them under `parallel: N`; elsewhere pass {origin}=K/N)"
            )
        text, origin = f"{index}/{total}", f"{origin}=env ({ENV_INDEX}/{ENV_TOTAL})"
    m = re.fullmatch(r"(\d+)\s*/\s*(\d+)", text)
    if m is None:
        raise ConfigError(f"{origin}={text!r}: expected K/N (e.g. 2/4, 1-based) or env")
    k, n = int(m[1]), int(m[2])
    if n < 1 or not 1 <= k <= n:
        raise ConfigError(f"{origin}={text!r}: expected 1 <= K <= N")
    return None if n == 1 else Shard(k, n)


@dataclass(frozen=True)
class Unit:
    """What the split places: the dialogues of one key (a twin pair, or one dialogue)."""

    suite: str
    key: str
    cost: int


def group_key(suite: str, dialogue_id: str, pair: str | None) -> tuple[str, str]:
    return (suite, pair if pair else f"\0{dialogue_id}")


def dialogue_cost(user_turns: int, questions: int) -> int:
    return max(1, user_turns) * (1 + questions)


def assign(units: Iterable[Unit], n: int) -> dict[tuple[str, str], int]:
    """(suite, key) -> shard 1..n: longest first onto the least loaded shard (lowest index on a
    tie); units of equal cost in key order. Deterministic: no hash seeds, no dict order."""
    order = sorted(units, key=lambda u: (-u.cost, u.suite, u.key))
    heap = [(0, k) for k in range(1, n + 1)]
    out: dict[tuple[str, str], int] = {}
    for u in order:
        load, k = heapq.heappop(heap)
        out[(u.suite, u.key)] = k
        heapq.heappush(heap, (load + u.cost, k))
    return out


def partition_digest(assignment: Mapping[tuple[str, str], int]) -> str:
    """A digest of the whole split: shards of one split agree on it, others do not."""
    h = hashlib.sha256()
    for (suite, key), k in sorted(assignment.items()):
        h.update(f"{suite}\t{key}\t{k}\n".encode())
    return h.hexdigest()[:16]


def split_items(dialogues: Sequence[Dialogue], shard: Shard) -> tuple[list[bool], dict[str, Any]]:
    """Which of `dialogues` (every collected one) belong to `shard`, and the split's record:
    `{k, n, partition, assigned: {suite: [ids]}, collected: {suite: count}}`."""
    costs: dict[tuple[str, str], int] = {}
    for d in dialogues:
        key = group_key(d.suite, d.id, d.pair)
        costs[key] = costs.get(key, 0) + dialogue_cost(d.user_turns, len(d.questions))
    assignment = assign((Unit(s, k, c) for (s, k), c in costs.items()), shard.n)
    mine = [assignment[group_key(d.suite, d.id, d.pair)] == shard.k for d in dialogues]
    assigned: dict[str, list[str]] = {}
    collected: dict[str, int] = {}
    for d, keep in zip(dialogues, mine, strict=True):
        collected[d.suite] = collected.get(d.suite, 0) + 1
        if keep:
            assigned.setdefault(d.suite, []).append(d.id)
    info = {
        "k": shard.k,
        "n": shard.n,
        "partition": partition_digest(assignment),
        "assigned": {s: sorted(ids) for s, ids in sorted(assigned.items())},
        "collected": dict(sorted(collected.items())),
        "cost": sum(costs[key] for key, k in assignment.items() if k == shard.k),
    }
    return mine, info


def write_shard_files(
    out: Path,
    shard: Shard,
    results: Iterable[DialogueResult],
    record: Mapping[str, Any],
) -> None:
    """`shard.json` (the split, the run's identity, options and counters) and `results.jsonl`
    (every result in full, in the order of transcripts.jsonl) beside a shard's report."""
    encode = json.JSONEncoder(ensure_ascii=False).encode

    def rows(p: Path) -> None:
        with open(p, "w", encoding="utf-8") as fh:
            fh.writelines(encode(r.to_dict()) + "\n" for r in results)

    _atomic(out / ROWS_FILE, rows)
    doc = {"schema": SHARD_SCHEMA, "shard": {"k": shard.k, "n": shard.n}, **record}
    # Key order kept: a merge hands these dicts on, and the report shows them in their order.
    text = json.dumps(doc, indent=1, default=str) + "\n"
    _atomic(out / SHARD_FILE, lambda p: p.write_text(text, encoding="utf-8"))


def _atomic(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)
