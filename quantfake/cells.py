"""The cells of a bench session: what each one is (:class:`CellSpec`) and which ones a grid holds.

``full`` grids are the product of the selected ids; ``ci`` grids are the covering subset that
:func:`quantfake.grids.covering_plan` computes (every id of every axis at least once). The pytest layer
parametrizes over these lists; nothing else lists cells.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from quantfake.detectors.registry import DEFAULT_REPRESENTATION, detector_token, representations_for
from quantfake.grids import TINY_FP32_MS_PER_IMAGE, CoveringPlan, covering_plan, get_grid
from quantfake.options import BenchOptions
from quantfake.precisions import reference_precision


@dataclass(frozen=True)
class CellSpec:
    """One cell of the grid; ``id`` is what ``pytest -k`` matches."""

    kind: str  # "detection" | "fidelity" | "detector_precision"
    generator: str
    precision: str
    mode: str
    detector: str | None = None
    perturbation: str = "none"
    detector_precision: str = "fp32"
    representation: str = DEFAULT_REPRESENTATION  # detector input; not "rgb" -> "r50nodown+npr" in the id

    @property
    def id(self) -> str:
        parts = [self.generator, self.precision, self.mode]
        if self.detector:
            token = detector_token(self.detector, self.representation)
            parts.append(token + ("" if self.detector_precision == "fp32" else f"@{self.detector_precision}"))
        if self.perturbation != "none":
            parts.append(self.perturbation)
        return "-".join(parts)

    @property
    def group(self) -> str:
        """Cells sharing one pipeline (pytest-xdist ``loadgroup``)."""
        return f"{self.generator}-{self.precision}"

    def params(self) -> dict[str, Any]:
        # "detector" is the token reports group by (r50nodown and r50nodown+npr are different detectors)
        token = detector_token(self.detector, self.representation) if self.detector else None
        return {"generator": self.generator, "precision": self.precision, "mode": self.mode,
                "detector": token, "detector_id": self.detector, "perturbation": self.perturbation,
                "detector_precision": self.detector_precision, "representation": self.representation}


def is_covering(o: BenchOptions) -> bool:
    return get_grid(o.grid).covering


def plan_for(o: BenchOptions) -> CoveringPlan:
    """The covering plan of ``o``'s axes (used by the ``ci`` grid)."""
    return covering_plan(o.generators, o.precisions, o.modes, o.detectors, reference_precision(o.precisions))


def cheapest_generator(o: BenchOptions) -> str:
    """The selected generator that costs least per image (carries the cells that need one generator only)."""
    return min(o.generators, key=lambda g: (TINY_FP32_MS_PER_IMAGE.get(g, float("inf")), o.generators.index(g)))


def _unique(cells: list[CellSpec]) -> list[CellSpec]:
    return list(dict.fromkeys(cells))


def detection_cells(o: BenchOptions) -> list[CellSpec]:
    """generator x precision x mode x detector [x representation] x perturbation, from the registries and options.

    The representation axis exists only for detectors that accept a representation (``npr``: the RGB ResNets).
    Covering grids: each quantized set with its reference set under one detector, then every other
    perturbation and detector input once, on the sets in turn.
    """
    if not is_covering(o):
        return [CellSpec("detection", g, p, m, d, pert, representation=r) for g in o.generators
                for p in o.precisions for m in o.modes for d in o.detectors
                for r in representations_for(d, o.representations) for pert in o.perturbations]
    plan = plan_for(o)
    sets = list(plan.quantized_sets) or [(g, plan.reference, o.modes[i % len(o.modes)], o.detectors[i % len(o.detectors)])
                                         for i, g in enumerate(o.generators)]
    cells: list[CellSpec] = []
    for g, p, m, d in sets:
        cells += [CellSpec("detection", g, plan.reference, m, d), CellSpec("detection", g, p, m, d)]
    extras = [("perturbation", x) for x in o.perturbations if x != "none"]
    extras += [("representation", (d, r)) for r in o.representations if r != DEFAULT_REPRESENTATION
               for d in o.detectors if r in representations_for(d, (r,))]
    for i, (axis, value) in enumerate(extras):
        g, p, m, d = sets[i % len(sets)]
        if axis == "perturbation":
            cells.append(CellSpec("detection", g, p, m, d, str(value)))
        else:
            det, rep = value  # type: ignore[misc]
            cells.append(CellSpec("detection", g, p, m, det, representation=rep))
    return _unique(cells)


def fidelity_cells(o: BenchOptions) -> list[CellSpec]:
    """generator x precision x mode, every precision but the reference (drift of the reference is 0)."""
    if is_covering(o):
        return [CellSpec("fidelity", g, p, m) for g, p, m, _d in plan_for(o).quantized_sets]
    ref = reference_precision(o.precisions)
    return [CellSpec("fidelity", g, p, m) for g in o.generators for p in o.precisions if p != ref for m in o.modes]


def detector_precision_cells(o: BenchOptions) -> list[CellSpec]:
    """Quantized detectors on the reference-precision fakes of every generator (txt2img).

    Covering grids: each detector precision once, on the cheapest generator, detectors in turn.
    """
    ref = reference_precision(o.precisions)
    mode = "txt2img" if "txt2img" in o.modes else o.modes[0]
    dps = [dp for dp in o.detector_precisions if dp != "fp32"]
    if is_covering(o):
        g = cheapest_generator(o)
        return [CellSpec("detector_precision", g, ref, mode, o.detectors[i % len(o.detectors)], "none", dp)
                for i, dp in enumerate(dps)]
    return [CellSpec("detector_precision", g, ref, mode, d, "none", dp, representation=r) for g in o.generators
            for d in o.detectors for r in representations_for(d, o.representations) for dp in dps]
