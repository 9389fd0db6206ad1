"""How far a detector's scores move when it runs at another detector precision than fp32, image by image.

Why: on a GPU, mixed precision (``fp16amp`` / ``bf16amp``) is the cheap default people reach for; this
says, per detector, the largest score change it causes and how many decisions (score vs the fixed
threshold) flip, against the same detector in fp32 on the same images. ``scripts/detector_autocast_check.py``
runs it for the full-size random and the tiny trained detectors.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from .loaded import LoadedDetector
from .scoring import score_images


def score_shift(reference: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, Any]:
    """Max / mean |score difference| and decision flips (``score > threshold`` changing) between two score sets."""
    if reference.shape != scores.shape:
        raise ValueError(f"score sets differ in shape: {reference.shape} vs {scores.shape}")
    diff = np.abs(scores - reference)
    flips = int(np.sum((scores > threshold) != (reference > threshold)))
    return {"n_images": int(reference.size), "max_abs_score_diff": float(diff.max()),
            "mean_abs_score_diff": float(diff.mean()), "decision_flips": flips,
            "max_abs_score_diff_over_fp32_std": float(diff.max() / reference.std()) if reference.std() > 0 else None,
            "nonfinite_scores": int(np.sum(~np.isfinite(scores)))}


def compare_precisions(detector: LoadedDetector, images: Sequence[Image.Image], precisions: Sequence[str],
                       device: str = "cpu", batch_size: int = 16) -> dict[str, Any]:
    """Score ``images`` with the fp32 ``detector`` and at each of ``precisions``; the shift of each from fp32."""
    from quantfake.detector_quant import quantize_detector

    if detector.precision != "fp32":
        raise ValueError(f"the reference detector must be fp32, got {detector.precision!r}")
    start = time.perf_counter()
    reference = score_images(detector, images, batch_size=batch_size, device=device, progress=False)
    out: dict[str, Any] = {"threshold": detector.spec.fixed_threshold, "fp32_seconds": time.perf_counter() - start,
                           "fp32_score_min": float(reference.min()), "fp32_score_max": float(reference.max()),
                           "fp32_score_std": float(reference.std()), "precisions": {}}
    for precision in precisions:
        start = time.perf_counter()
        module, report = quantize_detector(detector.module, precision, device=device)
        scores = score_images(detector.with_module(module, precision), images, batch_size=batch_size, device=device,
                              progress=False)
        out["precisions"][precision] = {**score_shift(reference, scores, detector.spec.fixed_threshold),
                                        "kind": report["kind"], "seconds": time.perf_counter() - start}
        del module
    return out
