"""Metrics against scikit-learn and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from quantfake import metrics as M


def _sample(seed: int, n_real: int = 60, n_fake: int = 40, shift: float = 1.0, ties: bool = False):
    rng = np.random.default_rng(seed)
    s = np.r_[rng.normal(0, 1, n_real), rng.normal(shift, 1, n_fake)]
    if ties:
        s = np.round(s, 1)
    y = np.r_[np.zeros(n_real, int), np.ones(n_fake, int)]
    return y, s


@pytest.mark.parametrize("seed,ties", [(0, False), (1, True), (2, True)])
def test_ranking_metrics_match_sklearn(seed: int, ties: bool) -> None:
    y, s = _sample(seed, ties=ties)
    assert M.roc_auc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert M.average_precision(y, s) == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)
    fpr, tpr, _ = M.roc_curve(y, s)
    sk_fpr, sk_tpr, _ = skm.roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    for max_fpr in (0.01, 0.05, 0.2):
        assert M.tpr_at_fpr(y, s, max_fpr) == pytest.approx(sk_tpr[sk_fpr <= max_fpr].max())


@pytest.mark.parametrize("seed", [0, 3])
def test_threshold_metrics_match_sklearn(seed: int) -> None:
    y, s = _sample(seed)
    t = 0.4
    pred = (s > t).astype(int)
    m = M.threshold_metrics(y, s, t)
    assert m["acc"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["precision"] == pytest.approx(skm.precision_score(y, pred))
    assert m["recall"] == pytest.approx(skm.recall_score(y, pred))
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert m["bacc"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert m["racc"] == pytest.approx(np.mean(pred[y == 0] == 0))
    assert m["facc"] == pytest.approx(np.mean(pred[y == 1] == 1))


def test_hand_computed_case() -> None:
    # reals 0.1 0.4 0.35 0.8 ; fakes 0.35 0.9 0.7 0.2
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8, 0.35, 0.9, 0.7, 0.2])
    # pairs (fake > real) + 0.5 ties: 0.35->1.5, 0.9->4, 0.7->3, 0.2->1  = 9.5 / 16
    assert M.roc_auc(y, s) == pytest.approx(9.5 / 16)
    m = M.threshold_metrics(y, s, 0.5)  # fake calls: 0.8 (real), 0.9, 0.7
    assert m == pytest.approx({"acc": 5 / 8, "racc": 3 / 4, "facc": 2 / 4, "bacc": 5 / 8,
                               "precision": 2 / 3, "recall": 1 / 2, "f1": 2 * (2 / 3) * 0.5 / (2 / 3 + 0.5)})
    # score == threshold counts as real: the real 0.35 is correct at t=0.35, wrong just below it
    assert M.threshold_metrics(y, s, 0.35)["racc"] == pytest.approx(2 / 4)
    assert M.threshold_metrics(y, s, 0.349)["racc"] == pytest.approx(1 / 4)


def test_eer_known_cases() -> None:
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    assert M.eer(y, np.array([0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9])) == 0.0
    assert M.eer(y, np.array([0.6, 0.7, 0.8, 0.9, 0.1, 0.2, 0.3, 0.4])) == 1.0
    # one real above one fake: FPR = FNR = 0.25 at the threshold between them
    assert M.eer(y, np.array([0.1, 0.2, 0.3, 0.65, 0.6, 0.7, 0.8, 0.9])) == pytest.approx(0.25)
    # against an independent brute-force on a random sample: the EER lies between FPR and FNR at the crossing
    yy, ss = _sample(5)
    fpr, tpr, _ = M.roc_curve(yy, ss)
    fnr = 1 - tpr
    i = int(np.argmin(np.abs(fnr - fpr)))
    assert abs(M.eer(yy, ss) - (fpr[i] + fnr[i]) / 2) <= abs(fnr[i] - fpr[i]) / 2 + 1e-12


def test_calibrated_threshold_controls_fpr_on_calibration_reals() -> None:
    rng = np.random.default_rng(0)
    cal = rng.normal(0, 1, 200)
    for target in (0.01, 0.05, 0.2):
        t = M.calibrate_threshold(cal, target)
        assert np.mean(cal > t) <= target
        assert np.mean(cal >= t) > target  # the threshold is not needlessly high
    with pytest.raises(ValueError, match="target_fpr"):
        M.calibrate_threshold(cal, 0.0)


def test_oracle_threshold_is_best_accuracy() -> None:
    y, s = _sample(7, ties=True)
    t = M.oracle_threshold(y, s)
    best = M.threshold_metrics(y, s, t)["acc"]
    for cand in np.r_[-np.inf, np.unique(s)]:
        assert M.threshold_metrics(y, s, cand)["acc"] <= best + 1e-12


def test_compute_metrics_keys_and_policies() -> None:
    y, s = _sample(11, shift=2.0)
    rng = np.random.default_rng(1)
    m = M.compute_metrics(y, s, fixed_threshold=0.5, calibration_real_scores=rng.normal(0, 1, 100))
    for policy in ("fixed", "calibrated", "oracle"):
        for stem in ("acc", "racc", "facc", "bacc", "precision", "recall", "f1"):
            assert f"{stem}_{policy}" in m
        assert f"threshold_{policy}" in m
    assert set(m) <= set(M.METRICS)
    assert m["threshold_fixed"] == 0.5
    assert m["acc_oracle"] >= max(m["acc_fixed"], m["acc_calibrated"])
    no_cal = M.compute_metrics(y, s, fixed_threshold=0.5)
    assert "acc_calibrated" not in no_cal and "threshold_calibrated" not in no_cal


def test_fixed_threshold_can_fail_while_auc_is_fine() -> None:
    """The student-study failure mode: good ranking, useless upstream threshold."""
    y, s = _sample(4, n_real=200, n_fake=200, shift=1.5)
    s = (s - 10.0)  # a detector whose scores all sit below its upstream threshold 0
    rng = np.random.default_rng(2)
    m = M.compute_metrics(y, s, fixed_threshold=0.0, calibration_real_scores=rng.normal(0, 1, 400) - 10.0)
    assert m["auc"] > 0.8
    assert m["recall_fixed"] == 0.0
    assert m["recall_calibrated"] > 0.2


def test_warns_when_calibrating_on_evaluated_reals() -> None:
    y, s = _sample(0)
    with pytest.warns(UserWarning, match="held-out"):
        M.compute_metrics(y, s, fixed_threshold=0.5, calibration_real_scores=s[y == 0][::-1])


def test_input_errors_name_the_bad_value() -> None:
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        M.roc_auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="both reals"):
        M.roc_auc([1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="NaN"):
        M.roc_auc([0, 1], [0.1, math.nan])
    with pytest.raises(KeyError, match="accepted"):
        M.metric_info("acc")


def test_registry_directions() -> None:
    assert M.metric_info("auc").higher_is_better is True
    assert M.metric_info("eer").higher_is_better is False
    assert M.metric_info("threshold_oracle").higher_is_better is None
    assert all("oracle" in k for k in M.METRICS if "oracle" in M.METRICS[k].display)
