"""A session's real images: disjoint pools (evaluation, calibration, img2img init, tiny training), made once.

Pools are split by image identity (:meth:`RealSet.partition`), so a duplicate photograph never sits in two pools
(calibration and training, say). Excluded files, duplicates and any pool smaller than asked become *notices*: they
go into the run record and the terminal summary, not only into a log. Below :data:`FLOOR_FRACTION` of what was
asked, the evaluation or calibration pool fails the run instead of passing on a handful of images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from quantfake.errors import InsufficientRealImages, MissingWeightsError
from quantfake.generators import GENERATORS
from quantfake.options import BenchOptions
from quantfake.realdata import RealSet

#: Filled in this order when images run short: what is evaluated first, what only trains last.
POOL_ORDER: tuple[str, ...] = ("evaluation", "calibration", "init", "train")
#: The pools whose size the numbers rest on, with the flag that asks for them.
FLOORED: dict[str, str] = {"evaluation": "--n-real", "calibration": "--n-calibration"}
#: A floored pool with fewer than this share of the asked images fails the run.
FLOOR_FRACTION = 0.5
#: Side of the shipped real patches in the full-size rehearsal (``random``; see :attr:`RealImages.patch_size`).
RANDOM_REAL_SIZE = 256
#: Modes whose reference-precision fakes train the tiny detectors (one training set per generator and mode).
TRAIN_MODES: tuple[str, ...] = ("txt2img", "img2img")


@dataclass
class PoolSplit:
    """The pools, the notices about them, and (when a pool is below its floor) why the run cannot go on."""

    pools: dict[str, RealSet]
    asked: dict[str, int]
    notices: list[dict[str, Any]] = field(default_factory=list)
    shortfall: str | None = None

    def used(self) -> dict[str, int]:
        return {name: len(pool) for name, pool in self.pools.items()}


def split_real_pools(full: RealSet, asked: dict[str, int], seed: int, source: str) -> PoolSplit:
    """Partition ``full`` into ``asked`` pools (keys in :data:`POOL_ORDER`) and describe what went wrong."""
    pools = full.partition({name: asked[name] for name in POOL_ORDER if name in asked}, seed=seed)
    result = PoolSplit(pools, dict(asked))
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


class RealImages:
    """The session part that owns real images: which source, how many per pool, split once on first use.

    Reals held out for threshold calibration are never evaluated; img2img init images are never evaluated
    either (a fake made from an evaluated real would pair the two). Exclusions and short pools go to
    ``notices`` (shared with the other parts, for the run record); a pool below its floor raises
    :class:`~quantfake.errors.InsufficientRealImages`.
    """

    def __init__(self, options: BenchOptions, notices: list[dict[str, Any]]) -> None:
        self.options = options
        self.notices = notices
        self.shortfall: str | None = None  # "evaluation 4 of 16, ..." when a pool came out smaller than asked
        self._pools: dict[str, RealSet] | None = None

    @property
    def patch_size(self) -> int:
        """Side of the shipped real patches: the tiny size, or 256 px for the full-size rehearsal (``random``):
        the packaged photographs are 300-600 px, so larger patches would be upsampled; detectors resize anyway."""
        return self.options.size or (RANDOM_REAL_SIZE if self.options.profile == "random" else 64)

    def asked(self) -> dict[str, int]:
        """Images asked per pool; ``train`` only in the tiny profile (one set per generator and training mode)."""
        o = self.options
        n_train = o.n_train * len(GENERATORS) * len(TRAIN_MODES) if o.profile == "tiny" else 0
        return {"evaluation": o.n_real, "calibration": o.n_calibration, "init": max(1, min(o.n_images, 16)),
                "train": n_train}

    def pools(self) -> dict[str, RealSet]:
        """The pools by name (:data:`POOL_ORDER`), split on the first call."""
        if self._pools is None:
            asked, o = self.asked(), self.options
            if o.real_dir:
                from quantfake.realdata import load_real_dir

                full = load_real_dir(o.real_dir, size=o.size, policy="center_crop")
                source = f"--real-dir {o.real_dir}"
            elif o.profile in ("tiny", "random"):
                from quantfake.realdata import tiny_real_set

                full, source = tiny_real_set(self.patch_size, sum(asked.values()), seed=o.seed), "shipped photographs"
            else:
                raise MissingWeightsError("real images", [], hint="pass --real-dir DIR with real photographs")
            split = split_real_pools(full, asked, seed=o.seed, source=source)
            self.notices += split.notices
            if split.shortfall:
                raise InsufficientRealImages(split.shortfall)
            self.shortfall = next((n["message"] for n in split.notices if n["kind"] == "real_pools_short"), None)
            self._pools = split.pools
        return self._pools

    def pool(self, name: str) -> RealSet:
        """One pool by name (``evaluation``, ``calibration``, ``init``, ``train``)."""
        return self.pools()[name]
