"""An xdist scheduler that gives each worker a fixed, interleaved share of the items.

Workers generate ahead in batches for the dialogues they will run, so each must know its share
before running it. xdist's `load` scheduler hands out items as workers free up (unknowable in
advance), and grouping tens of thousands of items with `loadgroup`/`loadscope` is slow. Here the
collection is cut into blocks of BLOCK consecutive items, dealt round-robin in a fixed shuffled
order: every worker gets a balanced mix of short and long dialogues, twins (adjacent in a suite)
stay on one worker so their shared turns are generated once, and each worker computes the same
share itself from the collection.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from xdist.scheduler.each import EachScheduling

BLOCK = 4


def _mix(b: int) -> bytes:
    """A fixed pseudo-random order of blocks, the same in every process."""
    return hashlib.blake2b(b.to_bytes(8, "little"), digest_size=8).digest()


def share(total: int, worker: int, count: int) -> list[int]:
    """Collection indices of worker number `worker` (0-based) of `count`.

    Blocks are dealt round-robin in a fixed shuffled order: every worker gets the same number of
    blocks, and a periodic pattern in the suite's order (lengths cycling with the ids) cannot put
    all the long dialogues on one worker.
    """
    blocks = sorted(range((total + BLOCK - 1) // BLOCK), key=lambda b: (_mix(b), b))
    mine = sorted(b for rank, b in enumerate(blocks) if rank % count == worker % count)
    return [i for b in mine for i in range(b * BLOCK, min(total, (b + 1) * BLOCK))]


class PartitionScheduling(EachScheduling):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Workers started after collection completed: replacements for crashed ones
        # (--max-worker-restart). They run what the dead worker had left, never a share.
        self._replacements: set[Any] = set()

    def add_node_collection(self, node: Any, collection: Sequence[str]) -> None:
        replacement = self.collection_is_completed
        super().add_node_collection(node, collection)
        if replacement:
            self._replacements.add(node)
            # EachScheduling keeps no collection for a replacement: without one, removing it
            # at its end (or at its own crash) failed with a KeyError (an INTERNALERROR).
            self.node2collection.setdefault(node, list(collection))

    def schedule(self) -> None:
        assert self.collection_is_completed
        count = self.numnodes
        for node, pending in self.node2pending.items():
            if node in self._started:
                continue
            if node in self._replacements:
                if pending:
                    node.send_runtest_some(list(pending))
                # Else the dead worker had nothing left to run.
                node.shutdown()
            else:
                idx = int(str(node.gateway.id).removeprefix("gw"))
                pending[:] = share(len(self.node2collection[node]), idx, count)
                if pending:
                    node.send_runtest_some(list(pending))
                node.shutdown()
            self._started.append(node)


class XdistHooks:
    """Controller hooks that exist only when pytest-xdist is installed."""

    def __init__(self, controller: Any) -> None:
        self.controller = controller

    def pytest_xdist_make_scheduler(self, config: Any, log: Any) -> Any:
        if config.getvalue("dist") != "load":
            return None
        return PartitionScheduling(config, log)

    def pytest_configure_node(self, node: Any) -> None:
        if node.config.getvalue("dist") == "load":
            node.workerinput["mtmcs_partition"] = True

    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        output = getattr(node, "workeroutput", {})
        out = dict(output.get("mtmcs") or {})
        for key in ("mtmcs_usage_error", "mtmcs_done"):
            if output.get(key):
                out[key] = output[key]
        if out:
            self.controller.worker_finished(out)
