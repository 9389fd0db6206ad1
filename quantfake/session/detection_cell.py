"""The detection cell (and the detector-precision cell): is a quantized generator's output still detected, and
does a quantized detector still detect?

Metrics with bootstrap CIs for one generator x precision x mode x detector, plus the paired comparison: against
the reference precision's fakes (same seeds) for a quantized generator, against the fp32 detector (DeLong, same
images) for a quantized detector.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from quantfake.cells import CellSpec
from quantfake.detectors.loaded import LoadedDetector
from quantfake.detectors.registry import detector_token
from quantfake.precisions import reference_precision
from quantfake.prompts import prompts_sha256
from quantfake.results import CellResult
from quantfake.session.fakes import memory_fits, sample_paths

if TYPE_CHECKING:
    from quantfake.session.engine import Session

#: Images per batch for the detector latency in a detector-precision cell.
N_LATENCY_IMAGES = 16


def measure_detection(session: Session, cell: CellSpec) -> CellResult:
    """The cell's metrics, CIs, paired comparison and provenance."""
    from quantfake.metrics import compute_metrics
    from quantfake.stats import bootstrap_metrics, paired_shift

    start, o = time.perf_counter(), session.options
    detector = session.detectors.at(cell.detector, cell.detector_precision, cell.representation)
    sets = scored_sets(session, cell, detector)
    labels = np.r_[np.zeros(len(sets["real"])), np.ones(len(sets["fake"]))]
    scores = np.r_[sets["real"], sets["fake"]]
    threshold = detector.spec.fixed_threshold
    metrics = compute_metrics(labels, scores, fixed_threshold=threshold, calibration_real_scores=sets["calibration"])
    ci = bootstrap_metrics(labels, scores, fixed_threshold=threshold, calibration_real_scores=sets["calibration"],
                           n_boot=o.n_boot, seed=o.seed) if o.n_boot else {}
    paired = None
    reference = reference_precision(o.precisions)
    if cell.kind == "detector_precision":
        paired = _versus_fp32_detector(session, cell, sets)
    elif cell.precision != reference:
        ref_sets = scored_sets(session, cell, detector, precision=reference)
        paired = paired_shift(sets["real"], ref_sets["fake"], sets["fake"], metrics.get("threshold_calibrated", threshold),
                              seed=o.seed, n_boot=o.n_boot)
        paired["reference_precision"] = reference
    fakes = session.fakes.images(cell.generator, cell.precision, cell.mode)
    extra = {"detector": detector.describe(), "generation_key": fakes.key, **memory_fits(memory_fit=fakes),
             "generation": session.fakes.generation.get(fakes.key),
             "prompts_sha256": prompts_sha256(tuple(fakes.manifest["request"]["prompts"])),
             "sample_paths": sample_paths(fakes),
             "tiny_training": session.detectors.trainings.get(detector_token(cell.detector, cell.representation))}
    if cell.detector_precision != "fp32":
        extra["detector_quantization"] = session.detectors.quantization[
            (cell.detector, cell.representation, cell.detector_precision)]
        extra["detector_ms_per_image"] = detector_ms_per_image(session, detector)
        extra["reference_detector_ms_per_image"] = detector_ms_per_image(
            session, session.detectors.fp32(cell.detector, cell.representation))
    extra["format_warnings"] = [] if o.match_format else session.fakes.format_warnings(cell.generator, cell.precision,
                                                                                       cell.mode)
    if session.reals.shortfall:
        extra["real_shortfall"] = session.reals.shortfall
    return CellResult(
        cell_id=cell.id, kind=cell.kind, params=cell.params(), metrics=metrics,
        ci95={k: [v.lo, v.hi] for k, v in ci.items()}, se={k: v.se for k, v in ci.items()},
        n={name: int(len(sets[name])) for name in ("real", "fake", "calibration")},
        paired=paired, scores={"real": sets["real"].tolist(), "fake": sets["fake"].tolist()},
        timings={"cell_s": time.perf_counter() - start, **session.fakes.timings(fakes)},
        extra=extra,
    )


def _versus_fp32_detector(session: Session, cell: CellSpec, sets: dict[str, np.ndarray]) -> dict[str, Any]:
    """DeLong's paired test of the quantized detector against fp32 on the same images and input representation."""
    from quantfake.stats import delong_paired_test

    ref_sets = scored_sets(session, cell, session.detectors.fp32(cell.detector, cell.representation))
    test = delong_paired_test(ref_sets["real"], ref_sets["fake"], sets["real"], sets["fake"])
    return {"reference_detector_precision": "fp32", "delta_auc": test["delta"], "delta_auc_se": test["se"],
            "delta_auc_p_delong": test["p"], "auc_ref": test["auc_a"], "auc_q": test["auc_b"]}


def scored_sets(session: Session, cell: CellSpec, detector: LoadedDetector,
                precision: str | None = None) -> dict[str, np.ndarray]:
    """Scores of the cell's fakes (at ``precision``, default the cell's), the evaluation reals and the
    calibration reals, after ``--match-format`` and the cell's perturbation."""
    from quantfake.perturbations import apply_perturbation, match_format

    fake_result = session.fakes.images(cell.generator, precision or cell.precision, cell.mode)
    evaluation, calibration = session.reals.pool("evaluation"), session.reals.pool("calibration")
    sets: dict[str, tuple[list[Image.Image], list[str] | None]] = {
        "fake": ([im.open() for im in fake_result.images], [im.sha256 for im in fake_result.images]),
        "real": (list(evaluation.images), list(evaluation.ids)),
        "calibration": (list(calibration.images), list(calibration.ids)),
    }
    if session.options.match_format:
        sets = {name: ([match_format(im, "jpeg") for im in images], None) for name, (images, _ids) in sets.items()}
    if cell.perturbation != "none":  # new pixels, new hashes (computed by the scorer)
        sets = {name: (apply_perturbation(cell.perturbation, images), None) for name, (images, _ids) in sets.items()}
    return {name: session.detectors.scores(detector, images, ids) for name, (images, ids) in sets.items()}


def detector_ms_per_image(session: Session, detector: LoadedDetector) -> float:
    """Median forward time per image of ``detector`` on one batch of calibration reals (ms)."""
    from quantfake.measure.timing import time_callable

    images = list(session.reals.pool("calibration").images[:N_LATENCY_IMAGES])
    batch = detector.preprocess(images).to(session.device)
    with torch.inference_mode():
        stats = time_callable(lambda: detector.module(batch), warmup=1, repeats=5, device=session.device)
    return stats.median_ms / len(batch)
