"""Grid registry: which cells a session runs, as data.

``full`` is the product of the selected ids (what ``--generators`` ... ask for). ``ci`` is a *covering
subset* of every id of every axis (generator, precision, mode, detector, perturbation, detector precision,
detector input, and every cell kind), small enough that CI finishes on a 2-core CPU where half precision is
10-25x slower than fp32 (issue 14). ``quick`` is the default of ``quantfake run``: a few generators at paired
precisions, scored by the study's detectors, in minutes.

The covering subset is computed, never listed: a new id in a registry lands in CI's grid by itself. Slow
sets (precisions that compute in fp16 / bf16) go to the generators that are cheapest per image; the
generators that are expensive get the precisions that compute in fp32 (simulated PTQ), so that every
generator is still quantized once.
"""

from __future__ import annotations

from dataclasses import dataclass

from quantfake.errors import UnknownIdError

#: Measured fp32 cost of one tiny image on a 2-core AMD EPYC, torch 2.13 CPU: the second of two warm calls of
#: ``load_pipeline(g, "fp32", "tiny").pipe`` for 8 prompts, 4 steps, 64 px, divided by 8 (a run's fp32 image sets,
#: ``scripts/tiny_cost_table.py``, give the same order). Only the *order* matters: it decides which generator
#: carries which precision in the covering grid.
TINY_FP32_MS_PER_IMAGE: dict[str, float] = {
    "sd15": 56.0, "sd21": 35.0, "sdxl": 29.0, "sd3": 26.0, "sd35": 31.0, "sd35l": 24.0, "flux": 16.0, "fluxs": 14.0,
}
#: End-to-end seconds per image at bf16, native size and default steps, full-size random pipelines on an H200
#: (benchmarks/rehearsal/effic_e2e_h200.json, batch 1); other generators are scaled by steps from these. Only
#: used to order work (heaviest generator-precision groups first on several GPUs), never reported.
FULLSIZE_S_PER_IMAGE: dict[str, float] = {"sd3": 1.62, "sdxl": 2.77, "flux": 8.80}
#: Relative cost of a precision against bf16 at full size (measured: nf4 1.07x on sd3 / flux, 2.0x on sdxl;
#: LLM.int8 about 2.7x on flux, 5.8x on the SDXL UNet per step, NOTES.md); a coarse order, not a prediction.
PRECISION_COST_FACTOR: dict[str, float] = {"fp32": 2.0, "int8": 4.0, "nf4": 1.5, "fp4": 1.5, "fp8": 1.2,
                                           "fp8dq": 1.5, "int8wo": 2.5, "int8dq": 2.5}
#: Measured cost against bf16 of one generator x precision where it departs from the coarse factor above
#: (end-to-end s/image, 1024 px, default steps, one H200: benchmarks/multigpu_generate, effic_e2e_h200.json).
#: The 2-GPU generate run packed by the coarse table alone put sdxl-nf4 (2.15x, not 1.5x) beside flux-bf16.
MEASURED_COST_FACTOR: dict[tuple[str, str], float] = {("sd3", "nf4"): 1.07, ("flux", "nf4"): 1.07,
                                                        ("sdxl", "nf4"): 2.15, ("flux", "int8"): 2.7}
#: Worst measured fp16 / bf16 slow-down against fp32 on a CPU without AVX-512 FP16 / AMX (issue 14: 10-25x).
HALF_SLOWDOWN_WORST = 25.0
#: Cost assumed for a generator missing from the table above (the dearest measured).
_UNKNOWN_GENERATOR_MS = max(TINY_FP32_MS_PER_IMAGE.values())


@dataclass(frozen=True)
class GridSpec:
    """A named grid. ``None`` on an axis means: the option's default (``full``) or every registry id (``ci``)."""

    id: str
    description: str
    covering: bool = False
    generators: tuple[str, ...] | None = None
    precisions: tuple[str, ...] | None = None
    modes: tuple[str, ...] | None = None
    detectors: tuple[str, ...] | None = None
    perturbations: tuple[str, ...] | None = None
    detector_precisions: tuple[str, ...] | None = None
    representations: tuple[str, ...] | None = None


GRIDS: dict[str, GridSpec] = {
    g.id: g
    for g in (
        GridSpec("full", "every combination of the selected ids (the product; `--grid full`)"),
        GridSpec("ci", "covering subset: every id of every axis and every cell kind at least once (CI's default)",
                 covering=True),
        GridSpec("quick", "sd3, sdxl, flux at fp32 / bf16 / nf4 / int8, txt2img, scored by npr, clipd, r50nodown "
                 "(`quantfake run`'s default)",
                 generators=("sd3", "sdxl", "flux"), precisions=("fp32", "bf16", "nf4", "int8"), modes=("txt2img",),
                 detectors=("npr", "clipd", "r50nodown")),
    )
}
#: Axis options: giving any of them (or ``pytest -k``) selects from the full grid unless ``--grid`` says otherwise.
AXES: tuple[str, ...] = ("generators", "precisions", "modes", "detectors", "perturbations", "detector_precisions",
                         "representations")


def get_grid(grid_id: str) -> GridSpec:
    """Look up a grid id, failing with the list of valid ids."""
    try:
        return GRIDS[grid_id]
    except KeyError:
        raise UnknownIdError("grid", grid_id, GRIDS) from None


def resolve_grid(requested: str | None, raw_axes: dict[str, str | None], keyword_selected: bool = False) -> str:
    """The grid of a session: as asked; else ``full`` when ids or ``-k`` select cells; else ``ci``."""
    if requested:
        return get_grid(requested).id
    if keyword_selected or any(raw_axes.get(a) for a in AXES):
        return "full"
    return "ci"


def half_kind(precision_id: str) -> str | None:
    """``"fp16"`` / ``"bf16"`` when ``precision_id`` computes in half precision (slow on some CPUs), else None."""
    from quantfake.precisions import get_precision

    return {"float16": "fp16", "bfloat16": "bf16"}.get(get_precision(precision_id).dtype)


def is_half_compute(precision_id: str) -> bool:
    """Whether ``precision_id`` computes in fp16 / bf16 (slow on CPUs without native half arithmetic)."""
    return half_kind(precision_id) is not None


def set_cost(generator: str, precision: str, half_slowdown: float = HALF_SLOWDOWN_WORST) -> float:
    """Relative cost of one image set (ms per image), for the worst CPU CI may land on."""
    base = TINY_FP32_MS_PER_IMAGE.get(generator, _UNKNOWN_GENERATOR_MS)
    return base * (half_slowdown if is_half_compute(precision) else 1.0)


def group_cost(generator: str, precision: str, profile: str) -> float:
    """Relative cost of one generator x precision group, to schedule the heaviest first (several workers)."""
    from quantfake.generators import GENERATORS

    if profile == "tiny":
        return set_cost(generator, precision)
    spec = GENERATORS.get(generator)
    if generator in FULLSIZE_S_PER_IMAGE:
        base = FULLSIZE_S_PER_IMAGE[generator]
    else:  # scale the measured generator of the same family by its default steps
        family = {"sd": "sdxl", "sdxl": "sdxl", "sd3": "sd3", "flux": "flux"}.get(spec.family if spec else "", "flux")
        ref = GENERATORS[family]
        base = FULLSIZE_S_PER_IMAGE[family] * (spec.default_steps if spec else 1) / ref.default_steps
    return base * MEASURED_COST_FACTOR.get((generator, precision), PRECISION_COST_FACTOR.get(precision, 1.0))


@dataclass(frozen=True)
class CoveringPlan:
    """The image sets of the covering grid and which detector scores each (ids only)."""

    quantized_sets: tuple[tuple[str, str, str, str], ...]  # (generator, precision, mode, detector)
    reference: str

    def generator_precisions(self) -> list[tuple[str, str]]:
        return [(g, p) for g, p, _m, _d in self.quantized_sets]


def covering_plan(generators: tuple[str, ...], precisions: tuple[str, ...], modes: tuple[str, ...],
                  detectors: tuple[str, ...], reference: str) -> CoveringPlan:
    """Assign every non-reference precision to one generator so that every generator is quantized at least once.

    Phase 1 covers the generators: the dearest generators take the precisions that compute in fp32. Phase 2
    gives each remaining precision to the generator where it costs least (ties: the one with less work so far). Modes and
    detectors rotate over the sets, so each appears as soon as there are enough sets.
    """
    quantized = [p for p in precisions if p != reference]
    if not quantized:
        return CoveringPlan((), reference)
    cheap_first = sorted(quantized, key=lambda p: (is_half_compute(p), precisions.index(p)))
    dear_first = sorted(generators, key=lambda g: (-TINY_FP32_MS_PER_IMAGE.get(g, _UNKNOWN_GENERATOR_MS),
                                                   generators.index(g)))
    pairs: list[tuple[str, str]] = []
    load = {g: 0.0 for g in generators}
    for i, g in enumerate(dear_first):  # phase 1: every generator once (cycling when precisions are few)
        p = cheap_first[i % len(cheap_first)]
        pairs.append((g, p))
        load[g] += set_cost(g, p)
    assigned = {p for _g, p in pairs}
    for p in [p for p in quantized if p not in assigned]:  # phase 2: the rest, where they cost least
        g = min(generators, key=lambda g: (set_cost(g, p), load[g], generators.index(g)))
        pairs.append((g, p))
        load[g] += set_cost(g, p)
    pairs.sort(key=lambda gp: (generators.index(gp[0]), precisions.index(gp[1])))
    sets = tuple((g, p, modes[i % len(modes)], detectors[i % len(detectors)]) for i, (g, p) in enumerate(pairs))
    return CoveringPlan(sets, reference)
