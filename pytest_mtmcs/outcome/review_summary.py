"""The reviewer's loop in the run summary: how many flips the model judge checked (confirmed,
overturned), how many adjudications were applied, and which ones no longer match a reply.

Plain data in (the run info: `judge_counts` summed over processes, `adjudications` from the
controller or a merge of shards), lines out; the terminal and summary.md each show them under the
judge line.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pytest_mtmcs.engine.escalation import flips_text

# Unmatched adjudications listed by name; the rest are counted.
MAX_UNMATCHED_SHOWN = 10


def review_lines(info: Mapping[str, Any]) -> list[str]:
    counts = dict(info.get("judge_counts") or {})
    lines: list[str] = []
    flips = flips_text(counts)
    if flips:
        lines.append(flips)
    adj = dict(info.get("adjudications") or {})
    applied = counts.get("adjudications_applied")
    if adj or applied is not None:
        n = int(applied or 0)
        k = int(adj.get("lines", 0))
        where = (
            f" from {adj['file']} ({k} {'line' if k == 1 else 'lines'})" if adj.get("file") else ""
        )
        lines.append(
            f"adjudications: {n} {'reply' if n == 1 else 'replies'} labelled by a person{where}"
        )
    if adj.get("unchecked"):
        # A merge of shards that cannot read the file the shards read.
        lines.append(f"adjudications that matched no reply: not checked: {adj['unchecked']}")
    stale = adj.get("unmatched") or []
    if stale:
        lines.append(
            f"adjudications that matched no reply of this run: {len(stale)} (the reply changed "
            "or its dialogue is gone: review the new reply, or delete the line)"
        )
        for u in stale[:MAX_UNMATCHED_SHOWN]:
            by = f", by {u['reviewer']}" if u.get("reviewer") else ""
            lines.append(f"  {u['suite']} {u['dialogue']} turn {u['turn']} (line {u['line']}{by})")
        if len(stale) > MAX_UNMATCHED_SHOWN:
            lines.append(f"  ... and {len(stale) - MAX_UNMATCHED_SHOWN} more")
    return lines
