"""How sure are the numbers: bootstrap intervals and paired shift tests.

Everything is seeded (``numpy.random.default_rng(seed)``) so a rerun gives the
same interval.  Bootstrap resampling is stratified: reals and fakes are
resampled separately, so every resample keeps the original class counts and a
metric such as AUC is always defined.

``paired_shift`` compares a quantized precision with the reference precision of
the same generator on the SAME seeds: ``ref_fake_scores[i]`` and
``q_fake_scores[i]`` are the detector scores of the image generated from seed
``i`` at each precision, and both are ranked against the same real scores.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats as sps

from quantfake.auc import auc_from_ranks, auc_rows, midrank_rows

__all__ = [
    "Interval",
    "stratified_bootstrap_indices",
    "bootstrap_ci",
    "bootstrap_auc",
    "bootstrap_metrics",
    "delong_components",
    "delong_covariance",
    "delong_paired_test",
    "mcnemar_test",
    "paired_shift",
]

MetricFn = Callable[[NDArray[np.int8], NDArray[np.float64]], float]

#: Below this many discordant pairs McNemar uses the exact binomial test.
MCNEMAR_EXACT_MAX = 25


@dataclass(frozen=True)
class Interval:
    """Point estimate with a percentile bootstrap interval and bootstrap SE.

    ``n_valid`` counts resamples where the metric was finite; NaN resamples are
    dropped rather than silently counted.
    """

    estimate: float
    lo: float
    hi: float
    se: float
    n_boot: int
    n_valid: int

    def as_list(self) -> list[float]:
        return [self.lo, self.hi]

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _as_arrays(y: ArrayLike, s: ArrayLike) -> tuple[NDArray[np.int8], NDArray[np.float64]]:
    ya = np.asarray(y).astype(np.int8)
    sa = np.asarray(s, dtype=np.float64)
    if ya.shape != sa.shape or ya.ndim != 1:
        raise ValueError(f"y and s must be 1-D of equal length, got {ya.shape} and {sa.shape}")
    return ya, sa


def stratified_bootstrap_indices(y: ArrayLike, n_boot: int, rng: np.random.Generator) -> NDArray[np.intp]:
    """(n_boot, n) indices resampling reals among reals and fakes among fakes.

    Column ``j`` of every row holds an index of the same class as ``y[j]``, so
    ``y[idx] == y`` for every row.
    """
    ya = np.asarray(y)
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    idx = np.empty((n_boot, ya.size), dtype=np.intp)
    for label in np.unique(ya):
        members = np.flatnonzero(ya == label)
        idx[:, members] = members[rng.integers(0, members.size, size=(n_boot, members.size))]
    return idx


def _interval(estimate: float, samples: NDArray[np.float64], alpha: float) -> Interval:
    """Percentile interval, standard error and counts of the finite resampled values.

    Why not ``scipy.stats.bootstrap``: given the reals and the fakes as two samples it draws the same stratified
    resamples from the same seed, but it takes the percentiles at ``(1 - confidence_level) / 2``, which is not
    ``0.05 / 2`` in floating point (0.025000000000000022): on the tiny cells the lower AUC bound moved in the
    last bit (0.6503173828125 -> 0.6503173828125001), so the stored baselines would not reproduce. It also has
    no stratum for the calibration reals nor per-resample thresholds, and returns NaN where a resample has no
    value instead of counting the finite ones.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return Interval(float(estimate), math.nan, math.nan, math.nan, int(samples.size), 0)
    lo, hi = np.quantile(finite, [alpha / 2.0, 1.0 - alpha / 2.0])
    se = float(finite.std(ddof=1)) if finite.size > 1 else math.nan
    return Interval(float(estimate), float(lo), float(hi), se, int(samples.size), int(finite.size))


def bootstrap_ci(
    y: ArrayLike,
    s: ArrayLike,
    metric_fn: MetricFn,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> Interval:
    """Percentile CI of ``metric_fn(y, s)`` over stratified resamples (generic, slow path)."""
    ya, sa = _as_arrays(y, s)
    rng = np.random.default_rng(seed)
    idx = stratified_bootstrap_indices(ya, n_boot, rng)
    samples = np.array([metric_fn(ya[row], sa[row]) for row in idx], dtype=np.float64)
    return _interval(metric_fn(ya, sa), samples, alpha)


def bootstrap_auc(y: ArrayLike, s: ArrayLike, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> Interval:
    """Vectorised fast path of ``bootstrap_ci`` for ROC-AUC (one rank pass for all resamples).

    Uses the same resampling stream as ``bootstrap_ci`` with the same seed, so
    both give identical intervals.
    """
    ya, sa = _as_arrays(y, s)
    rng = np.random.default_rng(seed)
    idx = stratified_bootstrap_indices(ya, n_boot, rng)
    samples = auc_rows(ya, sa[idx])
    estimate = auc_rows(ya, sa[None, :])[0]
    return _interval(float(estimate), samples, alpha)


def bootstrap_metrics(
    y: ArrayLike,
    s: ArrayLike,
    *,
    fixed_threshold: float,
    calibration_real_scores: ArrayLike | None = None,
    target_fpr: float = 0.05,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, Interval]:
    """Bootstrap interval for every key of :func:`quantfake.metrics.compute_metrics`.

    The held-out calibration reals are resampled too (as their own stratum),
    because the calibrated threshold inherits their sampling noise.  The fixed
    threshold stays fixed; the oracle threshold is re-chosen per resample.
    """
    from quantfake.metrics import compute_metrics

    ya, sa = _as_arrays(y, s)
    rng = np.random.default_rng(seed)
    idx = stratified_bootstrap_indices(ya, n_boot, rng)
    cal = None if calibration_real_scores is None else np.asarray(calibration_real_scores, dtype=np.float64)
    cal_idx = None if cal is None else rng.integers(0, cal.size, size=(n_boot, cal.size))
    kwargs = dict(fixed_threshold=fixed_threshold, target_fpr=target_fpr)
    point = compute_metrics(ya, sa, calibration_real_scores=cal, **kwargs)
    samples = {k: np.empty(n_boot) for k in point}
    for b in range(n_boot):
        m = compute_metrics(ya, sa[idx[b]], calibration_real_scores=None if cal is None else cal[cal_idx[b]], **kwargs)
        for k in point:
            samples[k][b] = m[k]
    # The exact fast path for AUC keeps the AUC interval identical to bootstrap_auc's resamples.
    samples["auc"] = auc_rows(ya, sa[idx])
    return {k: _interval(point[k], samples[k], alpha) for k in point}


# --------------------------------------------------------------------------- DeLong


def delong_components(
    fake_scores: ArrayLike, real_scores: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Fast DeLong structural components for k score sets (rows).

    ``fake_scores`` is (k, m) and ``real_scores`` is (k, n).  Returns
    ``(auc[k], v10[k, m], v01[k, n])`` where ``v10[r, i]`` is the fraction of
    reals ranked below fake ``i`` (ties one half) and ``v01[r, j]`` the fraction
    of fakes ranked above real ``j``, computed from midranks in O((m+n) log(m+n)), all k sets in one ranking pass.
    """
    x = np.atleast_2d(np.asarray(fake_scores, dtype=np.float64))
    yr = np.atleast_2d(np.asarray(real_scores, dtype=np.float64))
    if x.shape[0] != yr.shape[0]:
        raise ValueError(f"need the same number of score sets, got {x.shape[0]} and {yr.shape[0]}")
    m, n = x.shape[1], yr.shape[1]
    tz = midrank_rows(np.hstack([x, yr]))  # ranks among all cases; within each class below
    aucs = auc_from_ranks(tz, np.r_[np.ones(m, bool), np.zeros(n, bool)])
    v10 = (tz[:, :m] - midrank_rows(x)) / n
    v01 = 1.0 - (tz[:, m:] - midrank_rows(yr)) / m
    return aucs, v10, v01


def delong_covariance(fake_scores: ArrayLike, real_scores: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """AUCs and their (k, k) DeLong covariance, S10/m + S01/n."""
    aucs, v10, v01 = delong_components(fake_scores, real_scores)
    m, n = v10.shape[1], v01.shape[1]
    s10 = np.atleast_2d(np.cov(v10)) if m > 1 else np.zeros((len(aucs), len(aucs)))
    s01 = np.atleast_2d(np.cov(v01)) if n > 1 else np.zeros((len(aucs), len(aucs)))
    return aucs, s10 / m + s01 / n


def delong_paired_test(
    real_scores_a: ArrayLike, fake_scores_a: ArrayLike, real_scores_b: ArrayLike, fake_scores_b: ArrayLike
) -> dict[str, float]:
    """Two-sided DeLong test of AUC_b - AUC_a when both score the same (paired) cases.

    Returns ``auc_a``, ``auc_b``, ``delta`` (b - a), ``se``, ``z`` and ``p``.  With
    zero variance, ``p`` is 1 for a zero delta and 0 otherwise.
    """
    fa, fb = np.asarray(fake_scores_a, float), np.asarray(fake_scores_b, float)
    ra, rb = np.asarray(real_scores_a, float), np.asarray(real_scores_b, float)
    if fa.shape != fb.shape or ra.shape != rb.shape:
        raise ValueError(f"paired arrays must match: fakes {fa.shape} vs {fb.shape}, reals {ra.shape} vs {rb.shape}")
    aucs, cov = delong_covariance(np.vstack([fa, fb]), np.vstack([ra, rb]))
    delta = float(aucs[1] - aucs[0])
    var = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
    var = max(var, 0.0)
    if var <= 1e-15:
        z = 0.0 if abs(delta) < 1e-12 else math.copysign(math.inf, delta)
        p = 1.0 if abs(delta) < 1e-12 else 0.0
    else:
        z = delta / math.sqrt(var)
        p = float(2.0 * sps.norm.sf(abs(z)))
    return {"auc_a": float(aucs[0]), "auc_b": float(aucs[1]), "delta": delta, "se": math.sqrt(var), "z": z, "p": p}


# --------------------------------------------------------------------------- McNemar


def mcnemar_test(flips_a_to_b: int, flips_b_to_a: int) -> tuple[float, str]:
    """Two-sided McNemar p-value on discordant counts; exact binomial when the sum is small.

    Returns ``(p, method)`` with method ``"exact"`` or ``"chi2_cc"`` (continuity
    corrected).  No discordant pairs gives p = 1.
    """
    b, c = int(flips_a_to_b), int(flips_b_to_a)
    if b < 0 or c < 0:
        raise ValueError(f"flip counts must be >= 0, got {b} and {c}")
    if b + c == 0:
        return 1.0, "exact"
    if b + c < MCNEMAR_EXACT_MAX:
        return float(sps.binomtest(min(b, c), b + c, 0.5).pvalue), "exact"
    chi2 = (abs(b - c) - 1.0) ** 2 / (b + c)
    return float(sps.chi2.sf(chi2, df=1)), "chi2_cc"


# --------------------------------------------------------------------------- paired shift


def _paired_delta_auc_boot(
    real: NDArray[np.float64], ref: NDArray[np.float64], q: NDArray[np.float64], n_boot: int, seed: int
) -> NDArray[np.float64]:
    """ΔAUC per resample, resampling reals and seed-pairs (same index for ref and q)."""
    rng = np.random.default_rng(seed)
    ri = rng.integers(0, real.size, size=(n_boot, real.size))
    fi = rng.integers(0, ref.size, size=(n_boot, ref.size))
    y = np.r_[np.zeros(real.size, np.int8), np.ones(ref.size, np.int8)]
    auc_ref = auc_rows(y, np.hstack([real[ri], ref[fi]]))
    auc_q = auc_rows(y, np.hstack([real[ri], q[fi]]))
    return auc_q - auc_ref


def paired_shift(
    real_scores: ArrayLike,
    ref_fake_scores: ArrayLike,
    q_fake_scores: ArrayLike,
    threshold: float,
    seed: int = 0,
    n_boot: int = 1000,
    alpha: float = 0.05,
) -> dict[str, float | int | str | list[float]]:
    """Did quantization move the detector's view of the fakes?  (q minus reference.)

    Keys:
    ``auc_ref``, ``auc_q``, ``delta_auc`` (q - ref), ``delta_auc_se_delong``,
    ``delta_auc_p_delong`` (paired DeLong), ``delta_auc_ci95`` (paired bootstrap,
    percentile, level ``1 - alpha``; None when ``n_boot`` is 0);
    ``mean_delta_score``, ``median_delta_score``, ``wilcoxon_stat``,
    ``wilcoxon_p`` (signed-rank on per-image score deltas; 1.0 if all deltas are 0);
    ``flips_to_real`` (fake by ref, real by q at ``threshold``), ``flips_to_fake``,
    ``mcnemar_p``, ``mcnemar_method``;
    ``ks``, ``ks_p`` (two-sample KS between ref and q fake scores; ignores the
    pairing, so it answers "did the distribution move", not "did images move"),
    ``wasserstein`` (in score units); ``n_real``, ``n_fake``, ``threshold``.
    """
    real = np.asarray(real_scores, dtype=np.float64)
    ref = np.asarray(ref_fake_scores, dtype=np.float64)
    q = np.asarray(q_fake_scores, dtype=np.float64)
    if ref.shape != q.shape or ref.ndim != 1 or ref.size == 0:
        raise ValueError(f"ref and q fake scores must be equal-length 1-D (same seeds, same order), got {ref.shape} and {q.shape}")
    if real.ndim != 1 or real.size == 0:
        raise ValueError(f"real_scores must be a non-empty 1-D array, got shape {real.shape}")
    for name, arr in (("real", real), ("ref", ref), ("q", q)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} scores contain NaN or inf; accepted: finite floats")

    dl = delong_paired_test(real, ref, real, q)
    ci: list[float] | None = None  # n_boot 0: no bootstrap, no interval (DeLong's test stands on its own)
    if n_boot:
        boot = _paired_delta_auc_boot(real, ref, q, n_boot, seed)
        ci = [float(x) for x in np.quantile(boot, [alpha / 2.0, 1.0 - alpha / 2.0])]

    deltas = q - ref
    if np.all(deltas == 0):
        w_stat, w_p = 0.0, 1.0
    else:
        w = sps.wilcoxon(deltas, zero_method="wilcox")
        w_stat, w_p = float(w.statistic), float(w.pvalue)

    ref_fake = ref > threshold
    q_fake = q > threshold
    to_real = int(np.sum(ref_fake & ~q_fake))
    to_fake = int(np.sum(~ref_fake & q_fake))
    mc_p, mc_method = mcnemar_test(to_real, to_fake)

    ks = sps.ks_2samp(ref, q)
    return {
        "auc_ref": dl["auc_a"],
        "auc_q": dl["auc_b"],
        "delta_auc": dl["delta"],
        "delta_auc_se_delong": dl["se"],
        "delta_auc_p_delong": dl["p"],
        "delta_auc_ci95": ci,
        "mean_delta_score": float(deltas.mean()),
        "median_delta_score": float(np.median(deltas)),
        "wilcoxon_stat": w_stat,
        "wilcoxon_p": w_p,
        "flips_to_real": to_real,
        "flips_to_fake": to_fake,
        "mcnemar_p": mc_p,
        "mcnemar_method": mc_method,
        "ks": float(ks.statistic),
        "ks_p": float(ks.pvalue),
        "wasserstein": float(sps.wasserstein_distance(ref, q)),
        "n_real": int(real.size),
        "n_fake": int(ref.size),
        "threshold": float(threshold),
    }
