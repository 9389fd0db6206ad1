"""Bootstrap intervals and paired shift tests: known answers and independent checks."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from quantfake import metrics as M
from quantfake import stats as S
from quantfake.auc import midrank_rows


def _data(seed: int = 0, n_real: int = 50, n_fake: int = 50, shift: float = 1.0):
    rng = np.random.default_rng(seed)
    real = rng.normal(0, 1, n_real)
    fake = rng.normal(shift, 1, n_fake)
    y = np.r_[np.zeros(n_real, int), np.ones(n_fake, int)]
    return y, np.r_[real, fake], real, fake


def test_stratified_indices_keep_class_counts() -> None:
    y, _, _, _ = _data(n_real=7, n_fake=3)
    idx = S.stratified_bootstrap_indices(y, 50, np.random.default_rng(0))
    assert idx.shape == (50, 10)
    assert np.all(y[idx] == y)


def test_bootstrap_is_seeded_and_covers_estimate() -> None:
    y, s, _, _ = _data(1)
    a = S.bootstrap_ci(y, s, M.roc_auc, n_boot=200, seed=3)
    b = S.bootstrap_ci(y, s, M.roc_auc, n_boot=200, seed=3)
    c = S.bootstrap_ci(y, s, M.roc_auc, n_boot=200, seed=4)
    assert a == b
    assert a != c
    assert a.lo < a.estimate < a.hi
    assert a.n_valid == 200 and a.se > 0


def test_fast_auc_path_equals_generic_path_and_is_fast() -> None:
    y, s, _, _ = _data(2)
    slow = S.bootstrap_ci(y, s, M.roc_auc, n_boot=300, seed=0)
    fast = S.bootstrap_auc(y, s, n_boot=300, seed=0)
    assert fast.lo == pytest.approx(slow.lo) and fast.hi == pytest.approx(slow.hi)
    assert fast.se == pytest.approx(slow.se)
    t0 = time.perf_counter()
    S.bootstrap_auc(y, s, n_boot=1000, seed=0)
    assert time.perf_counter() - t0 < 1.0


def test_bootstrap_se_matches_delong_se() -> None:
    """Two independent variance estimates of the same AUC must roughly agree."""
    y, s, real, fake = _data(3, 80, 80)
    boot = S.bootstrap_auc(y, s, n_boot=1000, seed=0)
    _, cov = S.delong_covariance(fake[None, :], real[None, :])
    assert boot.se == pytest.approx(math.sqrt(cov[0, 0]), rel=0.2)


def test_bootstrap_ci_narrows_with_more_data() -> None:
    y1, s1, _, _ = _data(4, 30, 30)
    y2, s2, _, _ = _data(4, 300, 300)
    w1 = S.bootstrap_auc(y1, s1, n_boot=400).hi - S.bootstrap_auc(y1, s1, n_boot=400).lo
    w2 = S.bootstrap_auc(y2, s2, n_boot=400).hi - S.bootstrap_auc(y2, s2, n_boot=400).lo
    assert w2 < w1 / 2


def test_bootstrap_metrics_covers_every_key() -> None:
    y, s, _, _ = _data(5, 30, 30)
    cal = np.random.default_rng(9).normal(0, 1, 60)
    out = S.bootstrap_metrics(y, s, fixed_threshold=0.5, calibration_real_scores=cal, n_boot=60, seed=0)
    point = M.compute_metrics(y, s, fixed_threshold=0.5, calibration_real_scores=cal)
    assert set(out) == set(point)
    for k, iv in out.items():
        assert iv.estimate == pytest.approx(point[k], nan_ok=True)
    assert out["acc_calibrated"].lo <= out["acc_calibrated"].hi
    assert out["threshold_fixed"].se == 0.0


def test_midranks() -> None:
    np.testing.assert_allclose(midrank_rows([3.0, 1.0, 3.0, 2.0, 3.0]), [[4.0, 1.0, 4.0, 2.0, 4.0]])


def _structural_components(fake: np.ndarray, real: np.ndarray):
    """Direct O(n*m) DeLong (1988) placement values."""
    psi = (fake[:, None] > real[None, :]).astype(float) + 0.5 * (fake[:, None] == real[None, :])
    return psi.mean(), psi.mean(axis=1), psi.mean(axis=0)


def test_fast_delong_matches_direct_structural_components() -> None:
    rng = np.random.default_rng(0)
    real = np.round(rng.normal(0, 1, 23), 1)
    fa = np.round(rng.normal(1, 1, 17), 1)
    fb = np.round(fa + rng.normal(0, 0.5, 17), 1)
    aucs, v10, v01 = S.delong_components(np.vstack([fa, fb]), np.vstack([real, real]))
    _, cov = S.delong_covariance(np.vstack([fa, fb]), np.vstack([real, real]))
    comps = [_structural_components(f, real) for f in (fa, fb)]
    for r, (auc, c10, c01) in enumerate(comps):
        assert aucs[r] == pytest.approx(auc)
        np.testing.assert_allclose(v10[r], c10)
        np.testing.assert_allclose(v01[r], c01)
    m, n = fa.size, real.size
    d10 = comps[1][1] - comps[0][1]
    d01 = comps[1][2] - comps[0][2]
    var_direct = d10.var(ddof=1) / m + d01.var(ddof=1) / n
    assert cov[0, 0] + cov[1, 1] - 2 * cov[0, 1] == pytest.approx(var_direct)
    res = S.delong_paired_test(real, fa, real, fb)
    assert res["se"] == pytest.approx(math.sqrt(var_direct))
    assert res["delta"] == pytest.approx(comps[1][0] - comps[0][0])


def test_mcnemar_exact_and_chi2() -> None:
    assert S.mcnemar_test(0, 0) == (1.0, "exact")
    p, method = S.mcnemar_test(0, 6)
    assert method == "exact" and p == pytest.approx(2 * 0.5**6)
    p, method = S.mcnemar_test(10, 30)
    assert method == "chi2_cc" and p == pytest.approx(0.0027, abs=2e-4)  # chi2 = 361/40 = 9.025
    with pytest.raises(ValueError, match="-1"):
        S.mcnemar_test(-1, 2)


def test_paired_shift_identical_scores_show_no_shift() -> None:
    _, _, real, fake = _data(6)
    out = S.paired_shift(real, fake, fake.copy(), threshold=0.5, n_boot=200)
    assert out["delta_auc"] == 0.0
    assert out["delta_auc_ci95"] == [0.0, 0.0]
    assert out["delta_auc_p_delong"] == 1.0
    assert out["wilcoxon_p"] == 1.0
    assert out["median_delta_score"] == 0.0
    assert out["mcnemar_p"] == 1.0
    assert out["flips_to_real"] == out["flips_to_fake"] == 0
    assert out["ks"] == 0.0 and out["ks_p"] == 1.0
    assert out["wasserstein"] == 0.0


def test_paired_shift_detects_shifted_scores() -> None:
    _, _, real, fake = _data(7, 60, 60, shift=1.5)
    rng = np.random.default_rng(1)
    q = fake - 1.0 + rng.normal(0, 0.2, fake.size)  # quantization made fakes look real
    out = S.paired_shift(real, fake, q, threshold=0.5, n_boot=300)
    assert out["delta_auc"] < 0
    assert out["delta_auc_ci95"][1] < 0
    assert out["delta_auc_p_delong"] < 0.01
    assert out["wilcoxon_p"] < 0.01
    assert out["median_delta_score"] == pytest.approx(-1.0, abs=0.15)
    assert out["flips_to_real"] > out["flips_to_fake"]
    assert out["mcnemar_p"] < 0.01
    assert out["ks_p"] < 0.01
    assert out["wasserstein"] == pytest.approx(1.0, abs=0.2)


def test_paired_shift_small_noise_is_not_significant() -> None:
    _, _, real, fake = _data(8, 50, 50)
    rng = np.random.default_rng(2)
    q = fake + rng.normal(0, 0.01, fake.size)
    out = S.paired_shift(real, fake, q, threshold=0.5, n_boot=300)
    assert out["delta_auc_p_delong"] > 0.05
    assert out["delta_auc_ci95"][0] <= 0 <= out["delta_auc_ci95"][1]
    assert out["wilcoxon_p"] > 0.05


def test_paired_shift_rejects_unpaired_arrays() -> None:
    with pytest.raises(ValueError, match="same seeds"):
        S.paired_shift([0.1, 0.2], [0.5, 0.6], [0.5], threshold=0.5)
