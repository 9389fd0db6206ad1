"""The fidelity cell: how far does quantization move the image? Paired drift against the reference precision on
the same seeds, and FID / KID against the evaluation reals where Inception weights are given.

FID on a few dozen images is biased upward and noisy (its 2048-d covariance needs thousands of images to be
full rank), so a cell below :data:`FID_MIN_IMAGES` says so in ``extra["fid_warning"]``; its numbers are
still comparable with a baseline made from the same number of images.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from quantfake.cells import CellSpec
from quantfake.generate import GenerationResult
from quantfake.precisions import reference_precision
from quantfake.results import CellResult
from quantfake.session.fakes import memory_fits, sample_paths

if TYPE_CHECKING:
    from quantfake.session.engine import Session

#: The dimension of Inception pool3 features: FID from fewer images has a rank-deficient covariance.
FID_MIN_IMAGES = 2048
#: Per-image drift values averaged into the cell's metrics, by metric name (keys of ``paired_drift``).
DRIFT_METRICS = {"psnr": "psnr_db", "ssim": "ssim", "mad": "mad_255", "latent_rel_l2": "latent_rel_l2",
                 "latent_cos": "latent_cos"}


def measure_fidelity(session: Session, cell: CellSpec) -> CellResult:
    """Mean paired drift of ``cell.precision`` against the reference precision, with bootstrap CIs."""
    from quantfake.fidelity import paired_drift

    start, o = time.perf_counter(), session.options
    reference = reference_precision(o.precisions)
    quantized = session.fakes.images(cell.generator, cell.precision, cell.mode)
    ref = session.fakes.images(cell.generator, reference, cell.mode)
    drift = paired_drift([im.open() for im in ref.images], [im.open() for im in quantized.images],
                         [np.load(im.latent_path) for im in ref.images],
                         [np.load(im.latent_path) for im in quantized.images])
    per_image = {name: drift[key] for name, key in DRIFT_METRICS.items()}
    metrics, ci, se = mean_with_ci(per_image, o.n_boot, o.seed)
    metrics["identical_fraction"] = float(np.mean(~np.isfinite(np.asarray(drift["psnr_db"], dtype=float))))
    extra: dict[str, Any] = {"reference_precision": reference, "generation_key": quantized.key,
                             **memory_fits(memory_fit=quantized, reference_memory_fit=ref),
                             "generation": session.fakes.generation.get(quantized.key),
                             "reference_generation": session.fakes.generation.get(ref.key),
                             "sample_paths": sample_paths(quantized),
                             "per_image": {k: list(map(float, v)) for k, v in per_image.items()}}
    if session.inception is None:
        extra["fid_skipped"] = "pass --inception-weights DIR (pt_inception-2015-12-05-6726825d.pth)"
    else:
        metrics.update(distribution_metrics(session, quantized))
        if len(quantized.images) < FID_MIN_IMAGES:
            extra["fid_warning"] = (f"FID / KID from {len(quantized.images)} fakes (fewer than {FID_MIN_IMAGES}, the "
                                    "feature dimension): biased upward and noisy; compare only with runs of the "
                                    "same --n-images")
    return CellResult(cell_id=cell.id, kind="fidelity", params=cell.params(), metrics=metrics, ci95=ci, se=se,
                      n={"fake": len(quantized.images)}, timings={"cell_s": time.perf_counter() - start}, extra=extra)


def mean_with_ci(per_image: dict[str, list[float]], n_boot: int,
                 seed: int) -> tuple[dict[str, float], dict[str, list[float]], dict[str, float]]:
    """Mean of each metric's finite values, with a percentile bootstrap CI and SE (``n_boot`` 0: none; the gate
    is then tolerance-only, and says so). One generator for all metrics, in order: the CIs depend on it."""
    metrics: dict[str, float] = {}
    ci: dict[str, list[float]] = {}
    se: dict[str, float] = {}
    rng = np.random.default_rng(seed)
    for name, values in per_image.items():
        v = np.asarray(values, dtype=float)
        finite = v[np.isfinite(v)]
        metrics[name] = float(np.mean(finite)) if len(finite) else float("inf")
        if len(finite) > 1 and n_boot:
            boots = rng.choice(finite, size=(n_boot, len(finite))).mean(axis=1)
            ci[name] = [float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))]
            se[name] = float(boots.std(ddof=1))
    return metrics, ci, se


def distribution_metrics(session: Session, fakes: GenerationResult) -> dict[str, float]:
    """FID and KID of the set against the evaluation reals (lower is better)."""
    from quantfake.fidelity import fid_from_features, kid_from_features

    assert session.inception is not None
    evaluation = session.reals.pool("evaluation")
    reals = session.inception.features(list(evaluation.images), list(evaluation.ids))
    features = session.inception.features([im.open() for im in fakes.images], [im.sha256 for im in fakes.images])
    kid, _kid_std = kid_from_features(reals, features, subset_size=min(len(features), len(reals), 1000))
    return {"fid": fid_from_features(reals, features), "kid": kid}
