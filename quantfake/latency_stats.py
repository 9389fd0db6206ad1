"""Is a benchmark slower than its baseline? Latency samples compared on the log scale.

Latency noise is multiplicative (a busy host or a throttled clock scales every call), so samples are compared as
logarithms: the ratio of geometric means new / base, its Welch t-interval, and a one-sided Welch t-test of
H0 "new is at most (1 + tolerance) x base". asv compares with Mann-Whitney U; with the 3-10 rounds a cell affords,
U's smallest possible p (1 / C(10, 5) = 0.004 for 5 rounds against 5) cannot survive Benjamini-Hochberg over a few
hundred tests, so a plain slow-down could never be flagged; the t-test on logs has no such floor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

__all__ = ["SlowdownTest", "latency_ci95", "slowdown_test"]


def _logs(samples_ms: Sequence[float], what: str) -> np.ndarray:
    x = np.asarray(samples_ms, dtype=float)
    if x.size == 0 or not np.all(np.isfinite(x)) or np.any(x <= 0):
        raise ValueError(f"{what}: latency samples must be a non-empty list of positive numbers, got {list(samples_ms)[:8]}")
    return np.log(x)


def latency_ci95(samples_ms: Sequence[float]) -> list[float]:
    """95 % t-interval of the geometric-mean latency (ms); one sample gives a zero-width interval."""
    logs = _logs(samples_ms, "latency_ci95")
    if logs.size < 2:
        return [float(samples_ms[0])] * 2
    half = sps.t.ppf(0.975, logs.size - 1) * logs.std(ddof=1) / math.sqrt(logs.size)
    return [float(np.exp(logs.mean() - half)), float(np.exp(logs.mean() + half))]


@dataclass(frozen=True)
class SlowdownTest:
    """New against base latency: ``ratio`` (geometric means new / base) with its 95 % CI and the one-sided p of
    H0 "ratio <= 1 + tolerance" (small p: significantly slower than the tolerance allows)."""

    ratio: float
    ratio_ci95: tuple[float, float]
    tolerance: float
    p: float
    note: str = ""

    @property
    def beyond_tolerance(self) -> bool:
        return self.ratio > 1.0 + self.tolerance

    @property
    def faster(self) -> bool:
        """The whole CI lies below 1 / (1 + tolerance): significantly faster by more than the tolerance."""
        return self.ratio_ci95[1] < 1.0 / (1.0 + self.tolerance)


def slowdown_test(base_ms: Sequence[float], new_ms: Sequence[float], tolerance: float) -> SlowdownTest:
    """Welch t-test on log samples (see the module docstring). A side with one sample adds no variance; with no
    variance at all the test is tolerance-only (p 0 or 1) and says so in ``note``."""
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    la, lb = _logs(base_ms, "base"), _logs(new_ms, "new")
    diff = float(lb.mean() - la.mean())
    terms = [(x.var(ddof=1) / x.size, x.size - 1) for x in (la, lb) if x.size > 1]
    var = sum(v for v, _ in terms)
    margin = math.log1p(tolerance)
    if var <= 0:
        p = 0.0 if diff > margin else 1.0
        return SlowdownTest(math.exp(diff), (math.exp(diff),) * 2, tolerance, p,
                            "no spread in the samples: tolerance-only")
    df = var**2 / sum(v**2 / dof for v, dof in terms)
    se = math.sqrt(var)
    p = float(sps.t.sf((diff - margin) / se, df))
    half = float(sps.t.ppf(0.975, df)) * se
    return SlowdownTest(math.exp(diff), (math.exp(diff - half), math.exp(diff + half)), tolerance, p)
