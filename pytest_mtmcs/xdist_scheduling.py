"""An xdist scheduler that gives each worker a fixed, interleaved share of the items.

Workers generate ahead in batches for the dialogues they will run, so each must know its share
before running it. xdist's `load` scheduler hands out items as workers free up (unknowable in
advance), and grouping tens of thousands of items with `loadgroup`/`loadscope` is slow. Here worker
`gwK` of N runs the items whose collection index i has i % N == K % N: every worker gets a balanced
mix of short and long dialogues and computes the same share itself from the collection.
"""

from __future__ import annotations

from xdist.scheduler.each import EachScheduling


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
                idx = int(str(node.gateway.id).removeprefix("gw")) % count
                total = len(self.node2collection[node])
                pending[:] = range(idx, total, count)
                if pending:
                    node.send_runtest_some(list(pending))
                node.shutdown()
            else:
                # A replacement for a crashed worker: it runs what the dead one had left.
                node.send_runtest_some(list(pending))
                node.shutdown()
            self._started.append(node)
