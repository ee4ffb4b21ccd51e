"""`--mtmcs-shard=K/N`: keeps this shard's dialogues among the collected items.

The split (`outcome/shards.py`) is over every collected dialogue, before -k/-m deselection, so a
dialogue's shard never depends on the selection; other tests stay.
"""

from __future__ import annotations

from typing import Any

import pytest

from pytest_mtmcs.harness.items import DIALOGUE_KEY, DialogueItem
from pytest_mtmcs.outcome.shards import Shard, split_items


def select_shard(config: pytest.Config, shard: Shard, items: list[pytest.Item]) -> dict[str, Any]:
    """Deselects the other shards' dialogues from `items` (in place); returns the split's record
    (`split_items`), which the shard's report carries for `pytest-mtmcs merge`."""
    dialogues = [
        (i, it.stash[DIALOGUE_KEY]) for i, it in enumerate(items) if isinstance(it, DialogueItem)
    ]
    mine, info = split_items([d for _, d in dialogues], shard)
    drop = {i for (i, _), keep in zip(dialogues, mine, strict=True) if not keep}
    if drop:
        config.hook.pytest_deselected(items=[items[i] for i in sorted(drop)])
        items[:] = [it for i, it in enumerate(items) if i not in drop]
    return info
