"""An xdist scheduler that gives each worker a fixed, interleaved share of the items.

Workers generate ahead in batches for the dialogues they will run, so each must know its share
before running it. xdist's `load` scheduler hands out items as workers free up (unknowable in
advance), and grouping tens of thousands of items with `loadgroup`/`loadscope` is slow. Here the
collection is cut into blocks of BLOCK consecutive items dealt round-robin: worker `gwK` of N runs
the blocks whose number b has b % N == K % N. Every worker gets a balanced mix of short and long
dialogues, twins (adjacent in a suite) stay on one worker so their shared turns are generated once,
and each worker computes the same share itself from the collection.
"""

from __future__ import annotations

from xdist.scheduler.each import EachScheduling

BLOCK = 8


def share(total: int, worker: int, count: int) -> list[int]:
    """Collection indices of worker number `worker` (0-based) of `count`."""
    return [i for i in range(total) if (i // BLOCK) % count == worker % count]


class PartitionScheduling(EachScheduling):
    def schedule(self) -> None:
        assert self.collection_is_completed
        count = self.numnodes
        for node, pending in self.node2pending.items():
            if node in self._started:
                continue
            if node not in self.node2collection:
                # A replacement for a crashed worker that had nothing left to run.
                node.shutdown()
                self._started.append(node)
                continue
            if not pending:
                idx = int(str(node.gateway.id).removeprefix("gw"))
                pending[:] = share(len(self.node2collection[node]), idx, count)
                if pending:
                    node.send_runtest_some(list(pending))
                node.shutdown()
            else:
                # A replacement for a crashed worker: it runs what the dead one had left.
                node.send_runtest_some(list(pending))
                node.shutdown()
            self._started.append(node)
