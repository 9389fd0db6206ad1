"""Packing generator-precision work onto GPUs: longest processing time first, splitting what is too big.

Whole generator-precision groups are the natural unit of work (each pipeline is loaded once), but a grid's
groups differ by 10x in cost (a Flux LLM.int8 set against an SD3 bf16 one), so on many GPUs the heaviest group
alone bounds the wall time. A group heavier than a fair share (total / GPUs) is therefore split into shards of
its image chunks, each shard on another GPU, at the price of one more pipeline load per shard. Written by hand:
it is twenty lines of LPT bin packing, which no dependency of ours offers with the "shards of one group on
different bins" constraint.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Unit:
    """A whole group (``shards == 1``) or shard ``shard`` of ``shards`` of it, with its estimated cost."""

    key: Hashable
    cost: float
    shard: int = 0
    shards: int = 1


def split_heavy(items: Sequence[tuple[Hashable, float]], bins: int, max_shards: int | None = None) -> list[Unit]:
    """Each item as one unit, or as ``ceil(cost / fair share)`` equal shards when it exceeds a fair share.

    ``max_shards`` caps the split (a group cannot have more shards than it has image chunks).
    """
    total = sum(cost for _key, cost in items)
    fair = total / max(1, bins)
    units: list[Unit] = []
    for key, cost in items:
        n = 1
        if bins > 1 and fair > 0 and cost > fair:
            n = min(bins, math.ceil(cost / fair), max_shards or bins)
        units += [Unit(key, cost / n, k, n) for k in range(n)]
    return units


def heaviest_first(units: Iterable[Unit]) -> list[Unit]:
    """``units`` by decreasing cost, ties in a fixed order (key, then shard): the order LPT places them in."""
    return sorted(units, key=lambda u: (-u.cost, str(u.key), u.shard))


def lpt(units: Sequence[Unit], bins: int) -> list[list[Unit]]:
    """Longest processing time first: each unit to the least loaded bin holding no other shard of its group."""
    loads = [0.0] * max(1, bins)
    packed: list[list[Unit]] = [[] for _ in loads]
    for unit in heaviest_first(units):
        free = [b for b in range(len(loads)) if all(u.key != unit.key for u in packed[b])] or list(range(len(loads)))
        b = min(free, key=lambda i: (loads[i], i))
        packed[b].append(unit)
        loads[b] += unit.cost
    return packed


def bin_loads(packed: Sequence[Sequence[Unit]]) -> list[float]:
    """Estimated cost per bin, in the packing's order."""
    return [sum(u.cost for u in units) for units in packed]
