"""Grids: CI's covering subset holds every id of every axis and every cell kind, and stays cheap where half is slow."""

from __future__ import annotations

import pytest

from quantfake.cells import cheapest_generator, detection_cells, detector_precision_cells, fidelity_cells
from quantfake.cli import _selects_cells
from quantfake.detector_precisions import DETECTOR_PRECISIONS
from quantfake.detectors import DETECTORS, REPRESENTATIONS
from quantfake.errors import UnknownIdError
from quantfake.generators import GENERATORS, MODES
from quantfake.grids import GRIDS, HALF_SLOWDOWN_WORST, TINY_FP32_MS_PER_IMAGE, covering_plan, resolve_grid, set_cost
from quantfake.measure import half_speed
from quantfake.options import build_options
from quantfake.perturbations import PERTURBATIONS
from quantfake.precisions import PRECISIONS
from quantfake.results import CellResult
from quantfake.session.efficiency.runner import PARAMETRIZED_FIXTURES, cell_params
from quantfake.session.grid_estimate import estimate_grid, measured_costs

#: CI's budget for generating the covering grid's fakes on an AVX2-only 2-core CPU (the rest of .ci/run:
#: install, unit tests, scoring, training, report, fits in the other half of issue 14's 30 minutes)
CI_GENERATION_BUDGET_S = 15 * 60


def _ci_cells():
    o = build_options({})
    return o, detection_cells(o) + fidelity_cells(o) + detector_precision_cells(o)


def test_default_grid_is_ci_and_selection_means_full() -> None:
    assert build_options({}).grid == "ci"
    assert build_options({"generators": "sd3"}).grid == "full"
    assert build_options({"keyword_selected": True}).grid == "full"
    assert build_options({"grid": "full"}).grid == "full"
    assert build_options({"grid": "ci", "generators": "sd3,flux"}).grid == "ci"
    with pytest.raises(UnknownIdError, match="'huge'.*full"):
        build_options({"grid": "huge"})
    assert resolve_grid(None, {"detectors": "npr"}) == "full"


def test_ci_grid_covers_every_id_of_every_axis() -> None:
    o, cells = _ci_cells()
    assert {c.generator for c in cells} == set(GENERATORS)
    assert {c.precision for c in cells} == set(PRECISIONS)
    assert {c.mode for c in cells} == set(MODES)
    assert {c.detector for c in cells} - {None} == set(DETECTORS)  # fidelity cells have no detector
    assert {c.perturbation for c in cells} == set(PERTURBATIONS)
    assert {c.detector_precision for c in cells} == set(DETECTOR_PRECISIONS)
    assert {c.representation for c in cells} == set(REPRESENTATIONS)
    assert {c.kind for c in cells} == {"detection", "fidelity", "detector_precision"}
    assert len(cells) == len({c.id for c in cells})  # no cell twice


def test_every_generator_is_quantized_and_every_quantized_set_has_its_reference() -> None:
    o, cells = _ci_cells()
    quantized = {(c.generator, c.mode) for c in cells if c.kind == "detection" and c.precision != "fp32"}
    assert {g for g, _m in quantized} == set(GENERATORS)
    refs = {(c.generator, c.mode) for c in cells if c.kind == "detection" and c.precision == "fp32"}
    assert quantized <= refs  # paired statistics need the fp32 set of the same generator and mode
    assert {c.precision for c in fidelity_cells(o)} == set(PRECISIONS) - {"fp32"}


def test_ci_efficiency_cells_cover_generators_precisions_and_detectors() -> None:
    o = build_options({})
    effic = [cell for _id, cell in cell_params("effic_cell", o)]
    assert {c.generator for c in effic} == set(GENERATORS) and {c.precision for c in effic} == set(PRECISIONS)
    e2e = [c for c in effic if c.measure == "e2e"]  # the end-to-end path once, on the cheapest pipeline
    assert [(c.generator, c.precision, c.images) for c in e2e] == [(cheapest_generator(o), "fp32", 1)]
    assert [g for _id, g in cell_params("overhead_generator", o)] == [cheapest_generator(o)]
    dets = [cell for _id, cell in cell_params("det_cell", o)]
    assert {c.detector for c in dets} == set(DETECTORS) and len(dets) == len(DETECTORS)
    full = build_options({"grid": "full", "generators": "sd3,flux", "precisions": "fp32,nf4"})
    steps = [c for _id, c in cell_params("effic_cell", full) if c.measure == "step"]
    assert len(steps) == 4 and "det_cell" in PARAMETRIZED_FIXTURES


def test_slow_half_sets_go_to_cheap_generators_and_ci_fits_an_avx2_cpu() -> None:
    o, cells = _ci_cells()
    sets = {(c.generator, c.precision, c.mode) for c in cells} | {
        (c.generator, "fp32", m) for c in cells for m in MODES}  # training fakes: fp32 of every generator, both modes
    worst = sum(set_cost(g, p, HALF_SLOWDOWN_WORST) for g, p, _m in sets) * o.n_images / 1e3
    assert worst < CI_GENERATION_BUDGET_S, f"CI grid needs {worst:.0f} s of generation on an AVX2-only CPU"
    full = build_options({"grid": "full"})
    full_sets = {(c.generator, c.precision, c.mode) for c in detection_cells(full)}
    assert sum(set_cost(g, p) for g, p, _m in full_sets) * full.n_images / 1e3 > 3 * worst  # the subset pays off
    dear = max(TINY_FP32_MS_PER_IMAGE, key=TINY_FP32_MS_PER_IMAGE.get)
    plan = covering_plan(tuple(GENERATORS), tuple(PRECISIONS), MODES, tuple(DETECTORS), "fp32")
    assert all(p in ("w8", "w4", "w2", "w4a8") for g, p, _m, _d in plan.quantized_sets if g == dear)


def test_cost_table_knows_every_generator() -> None:
    assert set(TINY_FP32_MS_PER_IMAGE) == set(GENERATORS)
    assert set(GRIDS) >= {"full", "ci", "quick"}


def test_quick_grid_is_paired_and_small() -> None:
    o = build_options({"grid": "quick"})
    cells = detection_cells(o)
    assert o.precisions[0] == "fp32" and len(o.precisions) > 1 and len(o.detectors) >= 3
    assert len(cells) == len(o.generators) * len(o.precisions) * len(o.detectors) * len(o.modes) <= 40


@pytest.mark.parametrize(("argv", "selects"), [
    ([], False), (["-q"], False), (["-k", "sd3"], True), (["-ksd3"], True), (["--grid", "full"], True),
    (["--grid=ci"], True), (["--generators", "sd3"], True), (["bench/test_detection.py::test_detection"], True),
    (["--n-images", "8"], False),
])
def test_quantfake_run_defaults_to_quick_only_without_a_selection(argv: list[str], selects: bool) -> None:
    assert _selects_cells(argv) is selects


def test_slow_half_message(monkeypatch: pytest.MonkeyPatch) -> None:
    assert half_speed.slow_half_message({"fp16": 1.2, "bf16": 0.4}) is None
    message = half_speed.slow_half_message({"fp16": 35.0, "bf16": 0.4})
    assert "fp16 35x" in message and "bf16" not in message.split("(")[1].split(")")[0]
    ratios = half_speed.half_slowdown()
    assert set(ratios) == {"fp16", "bf16"} and all(r > 0 for r in ratios.values())


def test_grid_estimate_from_recorded_cells() -> None:
    cells = [CellResult("sd3-fp32-txt2img-npr", "detection", {"generator": "sd3", "precision": "fp32"},
                        timings={"cell_s": 3.0, "generation_s": 2.0, "generated": 20}),
             CellResult("sd3-bf16-txt2img-npr", "detection", {"generator": "sd3", "precision": "bf16"},
                        timings={"cell_s": 1.5, "generation_s": 0.0, "generated": 0})]
    per_image, per_cell = measured_costs(cells)
    assert per_image == {("sd3", "fp32"): 0.1} and per_cell == pytest.approx(1.25)
    est = estimate_grid([("sd3", "fp32", "txt2img"), ("sd3", "fp16", "txt2img")], 4, 10, per_image, per_cell,
                        {"fp16": 10.0, "bf16": 1.0})
    assert est.seconds == pytest.approx(10 * 0.1 + 10 * 0.1 * 10.0 + 4 * 1.25) and est.images == 20


def test_int8_activation_precision_skips_on_cpus_without_vnni(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from quantfake.precisions import get_precision, unavailable_reason

    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    reason = unavailable_reason(get_precision("int8dq"), "cpu")
    assert reason and "AVX2" in reason and "saturate" in reason
    assert unavailable_reason(get_precision("int8wo"), "cpu") is None  # weight-only int8 computes in bf16
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert unavailable_reason(get_precision("int8dq"), "cpu") is None


def test_measured_pipeline_half_ratio_wins_over_the_microbenchmark() -> None:
    from quantfake.session.grid_estimate import pipeline_half_ratios

    per_image = {("sd3", "fp32"): 0.02, ("sd3", "bf16"): 0.06, ("flux", "fp32"): 0.01, ("flux", "nf4"): 0.03}
    ratios = pipeline_half_ratios(per_image, {"sd3": 0.02, "flux": 0.01})
    assert ratios == pytest.approx({"bf16": 3.0, "fp16": 3.0})  # nf4 computes in bf16; fp16 assumed alike
    est = estimate_grid([("sd3", "bf16", "txt2img"), ("sdxl", "fp16", "txt2img")], 0, 10, per_image, 0.0,
                        {"fp16": 50.0, "bf16": 50.0})
    sdxl_fp32 = 0.02 / (TINY_FP32_MS_PER_IMAGE["sd3"] / 1e3) * TINY_FP32_MS_PER_IMAGE["sdxl"] / 1e3
    assert est.seconds == pytest.approx(10 * 0.06 + 10 * sdxl_fp32 * 3.0, rel=0.2)
