"""A pytest-xdist scheduler for several GPUs: whole generator-precision groups, heaviest first, one at a time.

xdist's ``loadgroup`` hands out groups in collection order and gives every worker *two* groups up front
(pytest-xdist #277). With a handful of groups of very different cost (an SDXL nf4 set takes twice its bf16
set; a Flux set five times an SD3 one) that pins the two heaviest groups to one GPU and the speed-up stays
near 1x (issue 17). Here the queue is ordered by :func:`quantfake.grids.group_cost` (longest processing time
first) and a worker gets its next group only when it is nearly done with the last, so the groups pack like
LPT bin packing. Written by hand because xdist has no cost-aware scheduler; it subclasses xdist's own.

An xdist worker starts a test only once it holds the next one (or is told to shut down), so a worker is never
left holding a single test while work remains: a one-test group (an overhead or detector efficiency cell) would
otherwise wait forever. Where pytest drops xdist's ``@group`` suffix from node ids (pytest >= 9.2, pytest-xdist
#1386, which leaves every test its own group), the group is read from quantfake's own cell id instead.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any

from xdist.scheduler import LoadGroupScheduling

from quantfake.grids import group_cost

#: ``[<gen>-<prec>-...]`` (detection, fidelity) or ``[effic-<gen>-<prec>...]`` / ``[effic-e2e-<gen>-<prec>-b<n>]``
_CELL_ID = re.compile(r"\[(?P<effic>effic-(?:e2e-)?)?(?P<generator>[a-z0-9]+)-(?P<precision>[a-z0-9.]+)(?:[-@\]])")


def group_of_nodeid(nodeid: str) -> str | None:
    """The xdist group a quantfake cell's node id belongs to (``sd3-nf4``, ``effic-sd3-nf4``), or None."""
    from quantfake.generators import GENERATORS
    from quantfake.precisions import PRECISIONS

    match = _CELL_ID.search(nodeid)
    if not match or match["generator"] not in GENERATORS or match["precision"] not in PRECISIONS:
        return None
    return f"{'effic-' if match['effic'] else ''}{match['generator']}-{match['precision']}"


def _group_key(scope: str, profile: str) -> float:
    generator, _, precision = scope.partition("-")
    try:
        return group_cost(generator, precision, profile)
    except Exception:  # noqa: BLE001 - a scope that is not one of ours (unit tests in the same session): cheap
        return 0.0


class CostOrderedGroupScheduling(LoadGroupScheduling):
    """``loadgroup`` with the work queue sorted by estimated cost and no second group handed out up front."""

    def __init__(self, config: Any, log: Any = None, profile: str = "tiny") -> None:
        super().__init__(config, log)
        self.profile = profile

    def schedule(self) -> None:
        if self.collection is not None or not self.collection_is_completed:
            return super().schedule()
        if not self._check_nodes_have_same_collection():
            self.log("**Different tests collected, aborting run**")
            return
        self.collection = list(next(iter(self.registered_collections.values())))
        if not self.collection:
            return
        queue: dict[str, dict[str, bool]] = {}
        for nodeid in self.collection:
            queue.setdefault(self._split_scope(nodeid), {})[nodeid] = False
        ordered = sorted(queue.items(), key=lambda kv: (-_group_key(kv[0], self.profile), list(queue).index(kv[0])))
        self.workqueue = OrderedDict(ordered)
        for _ in range(max(0, len(self.nodes) - len(self.workqueue))):
            unused, _assigned = self.assigned_work.popitem()
            unused.shutdown()
        for node in self.nodes:  # one group each; the next when a worker is nearly done (``_reschedule``)
            self._top_up(node)

    def _split_scope(self, nodeid: str) -> str:
        scope = super()._split_scope(nodeid)
        return (group_of_nodeid(nodeid) or nodeid) if scope == nodeid else scope

    def _reschedule(self, node: Any) -> None:
        if node.shutting_down:
            return
        if self.workqueue and self._pending_of(self.assigned_work[node]) <= 2:
            self._assign_work_unit(node)
        self._top_up(node)

    def _top_up(self, node: Any) -> None:
        """Work units until the worker holds two tests (so it runs the first), then shutdown once none are left."""
        while self.workqueue and self._pending_of(self.assigned_work.get(node, {})) < 2:
            self._assign_work_unit(node)
        if not self.workqueue:
            for each in self.nodes:
                if not each.shutting_down:
                    each.shutdown()
