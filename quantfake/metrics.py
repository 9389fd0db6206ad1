"""Detection metrics under explicit threshold policies.

Conventions used everywhere in quantfake: label 1 = fake, label 0 = real, and a
higher score means "more fake".  A threshold ``t`` classifies an image as fake
when ``score > t`` (strictly), so a real image scoring exactly ``t`` counts as
real.

Three threshold policies are reported side by side, because a single fixed
threshold can hide a detector that still ranks well (e.g. AUC 0.79 but TPR 0.09
at its upstream threshold):

``fixed``
    The detector's upstream decision point, passed in by the caller.
``calibrated``
    Chosen on a held-out split of REAL images only (the threshold whose false
    positive rate on those reals is at most ``target_fpr``), never on the
    evaluated images.
``oracle``
    Best accuracy on the evaluated set itself.  Optimistic by construction;
    every key it produces carries ``oracle`` so it cannot be mistaken.

The ranking metrics (AUC, AP, EER, TPR at a fixed FPR) are implemented here
rather than imported so the tests can check them against scikit-learn.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "MetricInfo",
    "METRICS",
    "POLICIES",
    "metric_info",
    "register_metric",
    "roc_curve",
    "roc_auc",
    "average_precision",
    "eer",
    "tpr_at_fpr",
    "threshold_metrics",
    "calibrate_threshold",
    "oracle_threshold",
    "compute_metrics",
    "metric_direction",
]

POLICIES: tuple[str, ...] = ("fixed", "calibrated", "oracle")
_THRESHOLD_STEMS: tuple[str, ...] = ("acc", "racc", "facc", "bacc", "precision", "recall", "f1")


@dataclass(frozen=True)
class MetricInfo:
    """What a metric key means: how to display it and which direction is better.

    ``higher_is_better`` is ``None`` for quantities without a "better" direction
    (thresholds), which must never be gated.
    """

    name: str
    display: str
    higher_is_better: bool | None


def _build_registry() -> dict[str, MetricInfo]:
    reg: dict[str, MetricInfo] = {}

    def add(name: str, display: str, higher: bool | None) -> None:
        reg[name] = MetricInfo(name, display, higher)

    add("auc", "ROC-AUC", True)
    add("ap", "Average precision", True)
    add("eer", "Equal error rate", False)
    add("tpr_at_fpr1", "TPR @ FPR 1%", True)
    add("tpr_at_fpr5", "TPR @ FPR 5%", True)
    stem_display = {
        "acc": "Accuracy",
        "racc": "Accuracy on reals (r_acc)",
        "facc": "Accuracy on fakes (f_acc)",
        "bacc": "Balanced accuracy",
        "precision": "Precision",
        "recall": "Recall (TPR)",
        "f1": "F1",
    }
    for policy in POLICIES:
        for stem in _THRESHOLD_STEMS:
            add(f"{stem}_{policy}", f"{stem_display[stem]} [{policy}]", True)
    # Fidelity metrics live in the same registry so they can be gated and displayed alike.
    add("psnr", "PSNR (dB)", True)
    add("ssim", "SSIM", True)
    add("fid", "FID", False)
    add("kid", "KID", False)
    add("threshold_fixed", "Threshold [fixed]", None)
    add("threshold_calibrated", "Threshold [calibrated]", None)
    add("threshold_oracle", "Threshold [oracle]", None)
    return reg


METRICS: dict[str, MetricInfo] = _build_registry()


def register_metric(name: str, display: str, higher_is_better: bool | None) -> MetricInfo:
    """Add a metric (e.g. a new fidelity score) so baselines and compare know its direction."""
    if name in METRICS and METRICS[name] != MetricInfo(name, display, higher_is_better):
        raise ValueError(f"metric {name!r} is already registered as {METRICS[name]}")
    METRICS[name] = MetricInfo(name, display, higher_is_better)
    return METRICS[name]


def metric_info(name: str) -> MetricInfo:
    """Registry lookup with an error that lists the accepted names."""
    try:
        return METRICS[name]
    except KeyError:
        raise KeyError(f"unknown metric {name!r}; accepted: {sorted(METRICS)}") from None


def _validate(y_true: ArrayLike, scores: ArrayLike) -> tuple[NDArray[np.int8], NDArray[np.float64]]:
    y = np.asarray(y_true)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or s.ndim != 1 or y.shape != s.shape:
        raise ValueError(f"y_true and scores must be 1-D of equal length, got shapes {y.shape} and {s.shape}")
    labels = set(np.unique(y).tolist())
    if not labels <= {0, 1}:
        raise ValueError(f"labels must be 0 (real) or 1 (fake), got {sorted(labels)}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or inf; accepted: finite floats")
    return y.astype(np.int8), s


def _require_both_classes(y: NDArray[np.int8], what: str) -> None:
    n_fake = int(y.sum())
    if n_fake == 0 or n_fake == y.size:
        raise ValueError(f"{what} needs both reals (0) and fakes (1); got {y.size - n_fake} reals, {n_fake} fakes")


def _counts_above(y: NDArray[np.int8], s: NDArray[np.float64]) -> tuple[NDArray, NDArray, NDArray[np.float64]]:
    """Scores sorted high to low, the index of the last score of each tie, and true positives there."""
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s_sorted)), s_sorted.size - 1]
    tps = np.cumsum(y_sorted)[last_of_tie].astype(np.float64)
    return s_sorted, last_of_tie, tps


def roc_curve(y_true: ArrayLike, scores: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Empirical ROC: (fpr, tpr, thresholds), starting at (0, 0) with threshold +inf.

    Point ``i`` counts ``score >= thresholds[i]`` as fake; one point per distinct
    score, so ties move the curve diagonally (the midrank convention).
    """
    y, s = _validate(y_true, scores)
    _require_both_classes(y, "roc_curve")
    s_sorted, last_of_tie, tps = _counts_above(y, s)
    fps = (last_of_tie + 1 - tps).astype(np.float64)
    tpr = np.r_[0.0, tps / tps[-1]]
    fpr = np.r_[0.0, fps / fps[-1]]
    thresholds = np.r_[np.inf, s_sorted[last_of_tie]]
    return fpr, tpr, thresholds


def roc_auc(y_true: ArrayLike, scores: ArrayLike) -> float:
    """ROC-AUC as the Mann-Whitney statistic with midranks (ties count one half)."""
    y, s = _validate(y_true, scores)
    _require_both_classes(y, "roc_auc")
    from scipy.stats import rankdata

    ranks = rankdata(s)
    n_fake = int(y.sum())
    n_real = y.size - n_fake
    return float((ranks[y == 1].sum() - n_fake * (n_fake + 1) / 2.0) / (n_fake * n_real))


def average_precision(y_true: ArrayLike, scores: ArrayLike) -> float:
    """Step-wise AP, sum over distinct thresholds of (R_k - R_{k-1}) * P_k (no interpolation)."""
    y, s = _validate(y_true, scores)
    _require_both_classes(y, "average_precision")
    _, last_of_tie, tps = _counts_above(y, s)
    precision = tps / (last_of_tie + 1)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def eer(y_true: ArrayLike, scores: ArrayLike) -> float:
    """Equal error rate: where FPR equals FNR, linearly interpolated on the ROC."""
    fpr, tpr, _ = roc_curve(y_true, scores)
    return _eer_on_roc(fpr, tpr)


def _eer_on_roc(fpr: NDArray[np.float64], tpr: NDArray[np.float64]) -> float:
    fnr = 1.0 - tpr
    gap = fnr - fpr  # starts at +1, ends at -1, non-increasing
    i = int(np.argmax(gap <= 0))
    if gap[i] == 0:
        return float(fpr[i])
    # Crossing between point i-1 (gap > 0) and i (gap < 0).
    w = gap[i - 1] / (gap[i - 1] - gap[i])
    return float(fpr[i - 1] + w * (fpr[i] - fpr[i - 1]))


def tpr_at_fpr(y_true: ArrayLike, scores: ArrayLike, max_fpr: float) -> float:
    """Highest TPR reachable by a threshold whose FPR is at most ``max_fpr`` (no interpolation)."""
    if not 0.0 <= max_fpr <= 1.0:
        raise ValueError(f"max_fpr must be in [0, 1], got {max_fpr!r}")
    fpr, tpr, _ = roc_curve(y_true, scores)
    return _tpr_on_roc(fpr, tpr, max_fpr)


def _tpr_on_roc(fpr: NDArray[np.float64], tpr: NDArray[np.float64], max_fpr: float) -> float:
    return float(tpr[fpr <= max_fpr + 1e-12].max())


def _safe_div(num: float, den: float) -> float:
    return num / den if den > 0 else math.nan


def threshold_metrics(y_true: ArrayLike, scores: ArrayLike, threshold: float) -> dict[str, float]:
    """Decision metrics at one threshold (fake iff ``score > threshold``).

    Keys: acc, racc, facc, bacc, precision, recall, f1.  Precision is NaN when
    nothing is called fake; r_acc / f_acc are NaN when that class is absent.
    """
    y, s = _validate(y_true, scores)
    pred = s > threshold
    fake = y == 1
    tp = float(np.sum(pred & fake))
    tn = float(np.sum(~pred & ~fake))
    fp = float(np.sum(pred & ~fake))
    fn = float(np.sum(~pred & fake))
    racc = _safe_div(tn, tn + fp)
    facc = _safe_div(tp, tp + fn)
    precision = _safe_div(tp, tp + fp)
    recall = facc
    if math.isnan(precision) or math.isnan(recall) or precision + recall == 0:
        f1 = 0.0 if (tp == 0 and (tp + fn) > 0) else math.nan
    else:
        f1 = 2 * precision * recall / (precision + recall)
    return {
        "acc": _safe_div(tp + tn, float(y.size)),
        "racc": racc,
        "facc": facc,
        "bacc": (racc + facc) / 2.0,
        "precision": precision,
        "recall": recall,
        "f1": f1,
    }


def calibrate_threshold(calibration_real_scores: ArrayLike, target_fpr: float = 0.05) -> float:
    """Threshold whose FPR on the held-out reals is at most ``target_fpr``.

    With ``n`` reals, at most ``k = floor(target_fpr * n)`` of them may exceed
    the threshold, so the threshold is the (k+1)-th highest real score.  Needs
    ``n >= 1 / target_fpr`` reals for a non-trivial ``k``; with fewer reals the
    threshold is simply the maximum real score (FPR 0 on the calibration set).
    """
    r = np.asarray(calibration_real_scores, dtype=np.float64)
    if r.ndim != 1 or r.size == 0:
        raise ValueError(f"calibration_real_scores must be a non-empty 1-D array, got shape {r.shape}")
    if not np.all(np.isfinite(r)):
        raise ValueError("calibration_real_scores contain NaN or inf; accepted: finite floats")
    if not 0.0 < target_fpr < 1.0:
        raise ValueError(f"target_fpr must be in (0, 1), got {target_fpr!r}")
    k = int(math.floor(target_fpr * r.size + 1e-9))
    return float(np.sort(r)[::-1][min(k, r.size - 1)])


def oracle_threshold(y_true: ArrayLike, scores: ArrayLike) -> float:
    """Threshold with the best accuracy on the evaluated set itself (optimistic).

    Candidates are ``-inf`` (everything fake) and every distinct score; ties in
    accuracy go to the lowest threshold.
    """
    y, s = _validate(y_true, scores)
    candidates = np.r_[-np.inf, np.unique(s)]
    real_sorted = np.sort(s[y == 0])
    fake_sorted = np.sort(s[y == 1])
    reals_correct = np.searchsorted(real_sorted, candidates, side="right")  # real <= t
    fakes_correct = fake_sorted.size - np.searchsorted(fake_sorted, candidates, side="right")  # fake > t
    return float(candidates[int(np.argmax(reals_correct + fakes_correct))])


def compute_metrics(
    y_true: ArrayLike,
    scores: ArrayLike,
    *,
    fixed_threshold: float,
    calibration_real_scores: ArrayLike | None = None,
    target_fpr: float = 0.05,
) -> dict[str, float]:
    """All metrics of one detection cell as a flat ``{name: float}`` dict.

    Keys are those of :data:`METRICS`.  The ``*_calibrated`` keys and
    ``threshold_calibrated`` appear only when ``calibration_real_scores`` (a
    held-out split of real images, disjoint from the evaluated ones) is given.
    """
    y, s = _validate(y_true, scores)
    _require_both_classes(y, "compute_metrics")
    fpr, tpr, _ = roc_curve(y, s)  # once: EER and both TPR@FPR read the same curve (bootstrap hot path)
    out: dict[str, float] = {
        "auc": roc_auc(y, s),
        "ap": average_precision(y, s),
        "eer": _eer_on_roc(fpr, tpr),
        "tpr_at_fpr1": _tpr_on_roc(fpr, tpr, 0.01),
        "tpr_at_fpr5": _tpr_on_roc(fpr, tpr, 0.05),
    }
    thresholds: dict[str, float] = {"fixed": float(fixed_threshold)}
    if calibration_real_scores is not None:
        cal = np.asarray(calibration_real_scores, dtype=np.float64)
        if cal.size == int((y == 0).sum()) and np.array_equal(np.sort(cal), np.sort(s[y == 0])):
            warnings.warn(
                "calibration_real_scores equal the evaluated real scores; the calibrated "
                "threshold must come from a held-out split of reals",
                stacklevel=2,
            )
        thresholds["calibrated"] = calibrate_threshold(cal, target_fpr)
    thresholds["oracle"] = oracle_threshold(y, s)
    for policy, t in thresholds.items():
        for stem, value in threshold_metrics(y, s, t).items():
            out[f"{stem}_{policy}"] = value
        out[f"threshold_{policy}"] = t
    return out


def metric_direction(metrics: Mapping[str, float]) -> dict[str, bool | None]:
    """Direction (higher is better) for each key of a metrics dict; unknown keys give None."""
    return {k: (METRICS[k].higher_is_better if k in METRICS else None) for k in metrics}
