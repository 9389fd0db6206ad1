"""Predicted wall time of a tiny grid from what a run just measured (issue 14: say how long the full grid takes).

Generation dominates a tiny run: an image set costs ``n_images`` x the generator's seconds per image, times
the half-precision slow-down of this CPU for precisions that compute in fp16 / bf16. Every cell adds its
scoring and statistics. The per-image costs come from this run's cells (generators it did not run are scaled
from :data:`quantfake.grids.TINY_FP32_MS_PER_IMAGE`), the per-cell cost is the median of this run's cells
(:func:`recorded_costs`).
Written by hand: no library predicts a pytest grid.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from quantfake.grids import TINY_FP32_MS_PER_IMAGE, half_kind, is_half_compute


@dataclass(frozen=True)
class GridEstimate:
    cells: int
    image_sets: int
    images: int
    seconds: float


def recorded_costs(cells: Iterable[Mapping[str, Any]]) -> tuple[dict[tuple[str, str, str], float], float | None]:
    """``({(generator, precision, mode): s per image}, median scoring + statistics s per cell)`` of record cells.

    Every cell of a set carries the set's ``generation_s`` (the result is shared), so a set's generation is charged
    once, to the first cell that made it; the rest of each cell's time is its scoring and statistics. One reading
    for :func:`full_grid_line` and :mod:`quantfake.plan`.
    """
    per_image: dict[tuple[str, str, str], float] = {}
    charged: set[Any] = set()
    rest: list[float] = []
    for i, c in enumerate(cells):
        t, p = c.get("timings") or {}, c.get("params") or {}
        key = (c.get("extra") or {}).get("generation_key") or ("cell", i)
        generation = 0.0
        if t.get("generated") and t.get("generation_s") and p.get("generator") and key not in charged:
            charged.add(key)
            generation = t["generation_s"]
            per_image.setdefault((p["generator"], p["precision"], p.get("mode", "txt2img")), generation / t["generated"])
        if "cell_s" in t:
            rest.append(max(0.0, t["cell_s"] - generation))
    return per_image, (statistics.median(rest) if rest else None)


def measured_costs(cells: Iterable) -> tuple[dict[tuple[str, str], float], float]:
    """``({(generator, precision): s per image}, s per cell)`` from this run's :class:`CellResult` objects."""
    per_mode, per_cell = recorded_costs(c.to_dict() for c in cells)
    per_image: dict[tuple[str, str], float] = {}
    for (g, p, _mode), s in per_mode.items():
        per_image.setdefault((g, p), s)
    return per_image, (1.0 if per_cell is None else per_cell)


def pipeline_half_ratios(per_image: dict[tuple[str, str], float], fp32: dict[str, float]) -> dict[str, float]:
    """fp16 / bf16 slow-down of whole tiny pipelines as this run measured it (generator by generator).

    A matmul microbenchmark overstates it for tiny pipelines (on an AVX2-only CPU, 50x for a matmul but about 3x
    for a whole tiny image, where small kernels and Python dominate), so measured pairs win when there are any.
    """
    ratios: dict[str, list[float]] = {}
    for (g, p), s in per_image.items():
        kind = half_kind(p)
        if kind and g in fp32 and fp32[g] > 0:
            ratios.setdefault(kind, []).append(s / fp32[g])
    out = {k: statistics.median(v) for k, v in ratios.items()}
    if len(out) == 1:  # one half dtype measured: the other is assumed alike (both are slow or both are fast)
        out.setdefault("bf16" if "fp16" in out else "fp16", next(iter(out.values())))
    return out


def estimate_grid(image_sets: list[tuple[str, str, str]], n_cells: int, n_images: int,
                  per_image: dict[tuple[str, str], float], per_cell_s: float,
                  half_ratio: dict[str, float]) -> GridEstimate:
    """Seconds to generate ``image_sets`` (generator, precision, mode) and run ``n_cells`` cells."""
    fp32 = {g: s for (g, p), s in per_image.items() if not is_half_compute(p)}
    half_ratio = {**half_ratio, **pipeline_half_ratios(per_image, fp32)}
    scale = statistics.median([s / (TINY_FP32_MS_PER_IMAGE[g] / 1e3) for g, s in fp32.items()
                               if g in TINY_FP32_MS_PER_IMAGE] or [1.0])
    total = 0.0
    for g, p, _m in image_sets:
        if (g, p) in per_image:
            total += n_images * per_image[(g, p)]
            continue
        base = fp32.get(g, scale * TINY_FP32_MS_PER_IMAGE.get(g, max(TINY_FP32_MS_PER_IMAGE.values())) / 1e3)
        kind = half_kind(p)
        total += n_images * base * (max(1.0, half_ratio.get(kind, 1.0)) if kind else 1.0)
    return GridEstimate(n_cells, len(image_sets), n_images * len(image_sets), total + n_cells * per_cell_s)


def efficiency_cell_count(options) -> int:
    """Efficiency cells of ``options``' grid (they run after the detection cells; their run-record entries carry
    no timings, so their time is the session's time outside recorded cells)."""
    from quantfake.session.efficiency.runner import PARAMETRIZED_FIXTURES, cell_params

    return sum(len(cell_params(f, options)) for f in PARAMETRIZED_FIXTURES)


def full_grid_line(options, cells: Iterable, half_ratio: dict[str, float]) -> str:
    """The closing line of a quick or covering run: how to run the full grid and how long it would take here.

    The bench's time outside the recorded cells (from the first cell's start: efficiency cells, the report; not
    the unit tests that share a plain ``pytest`` session) is scaled by the ratio of efficiency cells, the full
    grid's to this run's (on an emulated AVX2 CPU the quick grid predicted 8 min with
    this term and 7 without; the full tiny grid then took 11.7 min, with another test running part of the time).
    """
    import dataclasses
    import time

    from quantfake.cells import detection_cells, detector_precision_cells, fidelity_cells
    from quantfake.options import FULL_DEFAULTS

    cells = list(cells)
    full = dataclasses.replace(options, grid="full", **FULL_DEFAULTS)
    listed = detection_cells(full) + fidelity_cells(full) + detector_precision_cells(full)
    sets = sorted({(c.generator, c.precision, c.mode) for c in listed})
    per_image, per_cell = measured_costs(cells)
    est = estimate_grid(sets, len(listed), options.n_images, per_image, per_cell, half_ratio)
    seconds = est.seconds
    timed = [c.timings for c in cells if "end_unix" in (c.timings or {})]
    if timed:
        first = min(t["start_unix"] for t in timed)
        other = max(0.0, time.time() - first - sum(t["end_unix"] - t["start_unix"] for t in timed))
        here, there = efficiency_cell_count(options), efficiency_cell_count(full)
        seconds += other * (there / here if here else 1.0)
    return (f"this was the '{options.grid}' grid; the full tiny grid is `quantfake run --grid full` (or "
            f"`tox -e bench-full`): {est.cells} cells, {est.images} images, about {seconds / 60:.0f} min "
            f"on this machine (estimated from this run's per-image, per-cell and efficiency-cell times)")
