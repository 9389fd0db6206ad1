"""A session's real pools (evaluation, calibration, img2img init, tiny training) and what went short.

Pools are split by image identity (:meth:`RealSet.partition`), so a duplicate photograph never sits in two pools
(calibration and training, say). Excluded files, duplicates and any pool smaller than asked become *notices*: they
go into the run record and the terminal summary, not only into a log. Below :data:`FLOOR_FRACTION` of what was
asked, the evaluation or calibration pool fails the run instead of passing on a handful of images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from quantfake.realdata import RealSet

#: Filled in this order when images run short: what is evaluated first, what only trains last.
POOL_ORDER: tuple[str, ...] = ("evaluation", "calibration", "init", "train")
#: The pools whose size the numbers rest on, with the flag that asks for them.
FLOORED: dict[str, str] = {"evaluation": "--n-real", "calibration": "--n-calibration"}
#: A floored pool with fewer than this share of the asked images fails the run.
FLOOR_FRACTION = 0.5


@dataclass
class RealPools:
    """The pools, the notices about them, and (when a pool is below its floor) why the run cannot go on."""

    pools: dict[str, RealSet]
    asked: dict[str, int]
    notices: list[dict[str, Any]] = field(default_factory=list)
    shortfall: str | None = None

    def used(self) -> dict[str, int]:
        return {name: len(pool) for name, pool in self.pools.items()}


def split_real_pools(full: RealSet, asked: dict[str, int], seed: int, source: str) -> RealPools:
    """Partition ``full`` into ``asked`` pools (keys in :data:`POOL_ORDER`) and describe what went wrong."""
    pools = full.partition({name: asked[name] for name in POOL_ORDER if name in asked}, seed=seed)
    result = RealPools(pools, dict(asked))
    if full.excluded:
        shown = "; ".join(f"{path} ({reason})" for path, reason in full.excluded[:10])
        more = f"; and {len(full.excluded) - 10} more" if len(full.excluded) > 10 else ""
        result.notices.append({"kind": "real_images_excluded", "count": len(full.excluded),
                               "files": [{"path": p, "reason": r} for p, r in full.excluded],
                               "message": f"{source}: excluded {len(full.excluded)} real image file(s): {shown}{more}"})
    if full.duplicates():
        result.notices.append({"kind": "real_duplicates", "count": full.duplicates(),
                               "message": f"{source}: {full.duplicates()} real image(s) repeat another's pixels; "
                                          "each identity is kept within one pool"})
    short = {name: (len(pools[name]), n) for name, n in asked.items() if len(pools[name]) < n}
    if short:
        parts = ", ".join(f"{name} {got} of {n}" for name, (got, n) in short.items())
        result.notices.append({"kind": "real_pools_short", "pools": {k: {"used": g, "asked": n} for k, (g, n) in short.items()},
                               "message": f"{source}: {len(full)} usable real images give fewer than asked: {parts}"})
    below = [f"{name} {got} of {n} ({FLOORED[name]}; floor {math.ceil(FLOOR_FRACTION * n)})"
             for name, (got, n) in short.items() if name in FLOORED and got < math.ceil(FLOOR_FRACTION * n)]
    below += [f"{name} 0 of {n}" for name, (got, n) in short.items() if name not in FLOORED and got == 0]
    if below:
        result.shortfall = (f"{source}: too few usable real images ({len(full)}; {len(full.excluded)} excluded) for "
                            f"{', '.join(below)}. Add images, or lower --n-real / --n-calibration.")
    return result
