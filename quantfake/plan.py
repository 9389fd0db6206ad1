"""``quantfake plan``: predicted wall time and peak VRAM of a grid on N GPUs, from recorded per-image costs.

Costs come from what a bench run recorded, never from a model of the hardware: each run record gives seconds
per generated image for every generator x precision x mode it generated (the set's generation seconds over its
images, so the first-image warm-up and pipeline load are in), and the scoring + statistics seconds per cell;
pytest-benchmark JSON from the efficiency cells gives end-to-end seconds per image and peak VRAM; the records
``quantfake generate`` writes per rank (:mod:`quantfake.generate_record`) give seconds per image of what it
generated, loading included, summed over a launch's ranks. A generator
x precision group is one unit of work (one pipeline load); groups are packed on GPUs longest first, as
:mod:`quantfake.scheduling` hands them out, or split by image chunks when too heavy, as ``quantfake generate``
does (:mod:`quantfake.packing`). Anything not measured is scaled from
:func:`quantfake.grids.group_cost` against a measured generator and flagged as estimated.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from quantfake.generate_record import is_generate_record, per_image_costs
from quantfake.grids import group_cost
from quantfake.packing import bin_loads, lpt, split_heavy
from quantfake.session.grid_estimate import recorded_costs

#: process start, CUDA init and collection of one pytest session (measured: 283.2 s wall vs 268.9 s of cells
#: on an H200, and 152.9 vs 135.4 on two; benchmarks/multigpu)
DEFAULT_STARTUP_S = 15.0


@dataclass
class Costs:
    """Measured seconds per image per (generator, precision, mode), per cell, and peak GiB per group."""

    per_image: dict[tuple[str, str, str], float] = field(default_factory=dict)
    steps: dict[tuple[str, str, str], int] = field(default_factory=dict)  # the steps each cost was measured at
    per_cell_s: float | None = None
    peak_gib: dict[tuple[str, str], float] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)


def costs_from_files(paths: Iterable[str | Path]) -> Costs:
    """Read run records (``cells``), generate records and pytest-benchmark JSON (``benchmarks``) into
    :class:`Costs`; a generate record's cost wins over a run record's for the same set (the bench over a store
    that generate filled measured no generation)."""
    costs, cell_rest, generated = Costs(), [], []
    for path in paths:
        data = json.loads(Path(path).read_text())
        costs.sources.append(str(path))
        if is_generate_record(data):
            generated.append(data)
        elif "cells" in data:
            run_steps = (data.get("options") or {}).get("steps")
            per_image, per_cell = recorded_costs(data["cells"])
            for key, seconds in per_image.items():
                costs.per_image[key] = seconds
                costs.steps[key] = run_steps or _default_steps(key[0])
            if per_cell is not None:
                cell_rest.append(per_cell)
        for b in data.get("benchmarks", []):
            e = b.get("extra_info") or {}
            batch1 = e.get("e2e_images", 1) == 1  # a run generates one image per call; larger batches are extra
            if e.get("generator") and e.get("precision") and e.get("e2e_ms_per_image") and batch1:
                g, p = e["generator"], e["precision"]
                costs.per_image.setdefault((g, p, "txt2img"), e["e2e_ms_per_image"] / 1e3)
                costs.steps.setdefault((g, p, "txt2img"), e.get("e2e_steps") or _default_steps(g))
                if e.get("e2e_peak_vram_gib"):
                    costs.peak_gib[(g, p)] = max(costs.peak_gib.get((g, p), 0.0), e["e2e_peak_vram_gib"])
    for key, seconds in per_image_costs(generated).items():
        costs.per_image[key] = seconds
        steps = {(r["options"].get("steps")) for r in generated if any(
            (s["generator"], s["precision"], s["mode"]) == key for s in r["sets"])}
        costs.steps[key] = (steps.pop() if len(steps) == 1 else None) or _default_steps(key[0])
    costs.per_cell_s = statistics.median(cell_rest) if cell_rest else None
    return costs


@dataclass(frozen=True)
class GroupPlan:
    generator: str
    precision: str
    seconds: float
    estimated: bool  # True when a per-image cost was scaled, not measured


@dataclass(frozen=True)
class Plan:
    gpus: int
    wall_s: float
    groups: tuple[GroupPlan, ...]
    bins_s: tuple[float, ...]
    peak_gib: float | None
    images: int


def _default_steps(generator: str) -> int:
    from quantfake.generators import get_generator

    return get_generator(generator).default_steps


def image_seconds(costs: Costs, generator: str, precision: str, mode: str, strength: float,
                  profile: str = "random", steps: int | None = None) -> tuple[float, bool]:
    """Measured s/image, rescaled to ``steps`` (denoising dominates); img2img from txt2img x strength (it runs
    that fraction of the steps); else scaled from another generator."""
    def at(key: tuple[str, str, str]) -> float:
        measured = costs.steps.get(key)
        return costs.per_image[key] * (steps / measured if steps and measured else 1.0)

    if (generator, precision, mode) in costs.per_image:
        return at((generator, precision, mode)), False
    if mode == "img2img" and (generator, precision, "txt2img") in costs.per_image:
        return at((generator, precision, "txt2img")) * strength, False
    measured = [(k, v) for k, v in costs.per_image.items() if k[2] == "txt2img"]
    if not measured:
        raise ValueError("no measured per-image cost in the given files; pass a run record or efficiency JSON")
    ratios = [v / group_cost(g, p, profile) for (g, p, _m), v in measured]
    base = statistics.median(ratios) * group_cost(generator, precision, profile)
    if steps:  # group_cost is at the generator's default steps
        base *= steps / _default_steps(generator)
    return base * (strength if mode == "img2img" else 1.0), True


def plan_grid(groups: Sequence[tuple[str, str, Sequence[str], int]], costs: Costs, n_images: int, gpus: int,
              strength: float = 0.6, startup_s: float = DEFAULT_STARTUP_S, profile: str = "random",
              steps: dict[str, int | None] | None = None, split: bool = False) -> Plan:
    """``groups``: (generator, precision, modes, cells in the group). Longest-processing-time-first packing of
    whole groups (``pytest -n``), or with ``split`` of groups cut by image chunks when heavier than a fair share
    (``quantfake generate`` under accelerate, then the bench over the filled store; each extra shard's
    pipeline load is not counted)."""
    per_cell = costs.per_cell_s or 0.0
    planned = []
    for g, p, modes, n_cells in groups:
        seconds, estimated = 0.0, False
        for m in modes:
            s, est = image_seconds(costs, g, p, m, strength, profile, (steps or {}).get(m))
            seconds += n_images * s
            estimated |= est
        planned.append(GroupPlan(g, p, seconds + n_cells * per_cell, estimated))
    items = [((gp.generator, gp.precision), gp.seconds) for gp in planned]
    bins = bin_loads(lpt(split_heavy(items, gpus, max_shards=None if split else 1), gpus))
    peaks = [costs.peak_gib[(g.generator, g.precision)] for g in planned if (g.generator, g.precision) in costs.peak_gib]
    return Plan(gpus, startup_s + max(bins), tuple(planned), tuple(sorted(bins, reverse=True)),
                max(peaks) if peaks else None, n_images * sum(len(m) for _g, _p, m, _n in groups))


def main(argv: Sequence[str] | None = None) -> int:
    """``quantfake plan --from FILE [--from FILE] [grid options] [--gpus 1 --gpus 8]``."""
    import argparse

    from quantfake.cells import detection_cells
    from quantfake.options import build_options

    ap = argparse.ArgumentParser(prog="quantfake plan", description=__doc__.splitlines()[0])
    ap.add_argument("--from", dest="sources", action="append", required=True, metavar="FILE",
                    help="run record (reports/history/*.json), quantfake generate's record "
                         "(<store>/generate_records/*.json: pass every rank's) or pytest-benchmark JSON; repeatable")
    for axis in ("generators", "precisions", "modes", "detectors"):
        ap.add_argument(f"--{axis}", default="", help=f"comma-separated {axis} (validated like pytest bench)")
    ap.add_argument("--profile", default="random")
    ap.add_argument("--preset", default="", help="a protocol's defaults, e.g. study (quantfake/presets.py)")
    ap.add_argument("--n-images", type=int, default=None, help="images per set (default: the profile's)")
    ap.add_argument("--gpus", type=int, action="append", help="GPU counts to plan for (repeatable; default 1)")
    ap.add_argument("--startup-s", type=float, default=DEFAULT_STARTUP_S)
    args = ap.parse_args(argv)
    try:
        o = build_options({"profile": args.profile, "grid": "full", "generators": args.generators,
                           "precisions": args.precisions, "modes": args.modes, "detectors": args.detectors,
                           "n_images": args.n_images, "preset": args.preset})
        costs = costs_from_files(args.sources)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        ap.error(str(exc))
    cells = detection_cells(o)
    groups = [(g, p, o.modes, sum(1 for c in cells if c.generator == g and c.precision == p))
              for g in o.generators for p in o.precisions]
    steps = {"txt2img": o.steps, "img2img": o.img2img_steps or o.steps}
    for gpus in args.gpus or [1]:
        try:
            plan = plan_grid(groups, costs, o.n_images, gpus, o.strength, args.startup_s, o.profile, steps)
        except ValueError as exc:
            ap.error(str(exc))
        est = sorted({f"{g.generator}-{g.precision}" for g in plan.groups if g.estimated})
        peak = f", peak {plan.peak_gib:.1f} GiB" if plan.peak_gib else ""
        print(f"{gpus} GPU(s): {plan.images} images, {len(cells)} detection cells, predicted wall "
              f"{plan.wall_s / 3600:.2f} h ({plan.wall_s:.0f} s){peak}; busiest GPU {plan.bins_s[0]:.0f} s")
        if gpus > 1:
            sharded = plan_grid(groups, costs, o.n_images, gpus, o.strength, args.startup_s, o.profile, steps,
                                split=True)
            if sharded.wall_s < plan.wall_s:
                print(f"  quantfake generate (heavy groups split over GPUs), then the bench: "
                      f"{sharded.wall_s / 3600:.2f} h ({sharded.wall_s:.0f} s); busiest GPU {sharded.bins_s[0]:.0f} s")
        if est:
            print(f"  scaled, not measured: {', '.join(est)}")
    return 0
