"""The one ROC-AUC core: the Mann-Whitney statistic from midranks, for many score rows at once.

``metrics.roc_auc``, the stratified and paired bootstraps, DeLong's structural components and the detector
training hold-out all compute their AUC here. One ``scipy.stats.rankdata`` pass ranks every row (ties get the
mean of their positions, so a tie counts one half): exact for scores with ties, O(n log n) per row, and bit for
bit the same number whichever caller asks.
"""

from __future__ import annotations

import numpy as np
import scipy.stats as sps
from numpy.typing import ArrayLike, NDArray


def midrank_rows(score_rows: ArrayLike) -> NDArray[np.float64]:
    """1-based ranks within each row (last axis), ties given the mean of their positions."""
    return sps.rankdata(np.atleast_2d(np.asarray(score_rows, dtype=np.float64)), axis=1)


def auc_from_ranks(ranks: NDArray[np.float64], is_fake: NDArray[np.bool_]) -> NDArray[np.float64]:
    """AUC of each row of midranks ``ranks`` whose columns ``is_fake`` are the positives (label 1 = fake)."""
    n_fake = int(is_fake.sum())
    n_real = is_fake.size - n_fake
    return (ranks[:, is_fake].sum(axis=1) - n_fake * (n_fake + 1) / 2.0) / (n_fake * n_real)


def auc_rows(labels: ArrayLike, score_rows: ArrayLike) -> NDArray[np.float64]:
    """ROC-AUC of every row of ``score_rows`` (k, n) against the same ``labels`` (n,), 1 = fake."""
    return auc_from_ranks(midrank_rows(score_rows), np.asarray(labels) == 1)


def roc_auc_value(labels: ArrayLike, scores: ArrayLike) -> float:
    """ROC-AUC of one score vector (both classes must be present; callers check and say so)."""
    return float(auc_rows(labels, np.asarray(scores, dtype=np.float64)[None, :])[0])
