"""Is calling through the suite measurably slower than a bare diffusers call?

Calls alternate A, B, A, B ... so machine drift (clocks, thermals, neighbours on a shared box) hits both
equally; each pair gives a ratio a_i / b_i, and we report the median ratio with a bootstrap CI.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from quantfake.measure.devices import DeviceLike, as_device
from quantfake.measure.timing import Sampler, timer_sampler


@dataclass(frozen=True)
class OverheadComparison:
    """Paired timings of A (e.g. suite call) and B (e.g. bare call); ratio > 1 means A is slower."""

    a_ms: tuple[float, ...]
    b_ms: tuple[float, ...]
    ratio_median: float
    ratio_ci95: tuple[float, float]
    n_boot: int

    @classmethod
    def from_samples(cls, a_ms: Sequence[float], b_ms: Sequence[float], n_boot: int = 2000,
                     seed: int = 0) -> OverheadComparison:
        """Median of per-pair ratios with a percentile-bootstrap 95 % CI (resampling pairs)."""
        if len(a_ms) != len(b_ms):
            raise ValueError(f"a_ms and b_ms must pair up, got {len(a_ms)} and {len(b_ms)} samples")
        if len(a_ms) < 2:
            raise ValueError(f"need at least 2 pairs for a confidence interval, got {len(a_ms)}")
        if n_boot < 1:
            raise ValueError(f"n_boot must be >= 1, got {n_boot}")
        a, b = np.asarray(a_ms, dtype=float), np.asarray(b_ms, dtype=float)
        if (b <= 0).any():
            raise ValueError(f"b_ms must all be > 0 to form ratios, got min {b.min()}")
        ratios = a / b
        rng = np.random.default_rng(seed)
        boot_medians = np.median(ratios[rng.integers(0, len(ratios), size=(n_boot, len(ratios)))], axis=1)
        low, high = np.percentile(boot_medians, [2.5, 97.5])
        return cls(a_ms=tuple(a.tolist()), b_ms=tuple(b.tolist()), ratio_median=float(np.median(ratios)),
                   ratio_ci95=(float(low), float(high)), n_boot=n_boot)

    @property
    def overhead_pct(self) -> float:
        """Median overhead of A over B in percent (negative: A was faster)."""
        return (self.ratio_median - 1.0) * 100.0

    def is_within(self, tolerance: float) -> bool:
        """Conservative check: the CI's *upper* bound is at most 1 + tolerance (0.03 for "within 3 %").

        Too few pairs give a wide CI and fail this; that is a real "not shown", not a flaky test.
        """
        if tolerance < 0:
            raise ValueError(f"tolerance must be >= 0, got {tolerance}")
        return self.ratio_ci95[1] <= 1.0 + tolerance

    def as_dict(self) -> dict[str, Any]:
        return {"ratio_median": self.ratio_median, "ratio_ci95": list(self.ratio_ci95),
                "overhead_pct": self.overhead_pct, "pairs": len(self.a_ms),
                "a_median_ms": float(np.median(self.a_ms)), "b_median_ms": float(np.median(self.b_ms))}


def compare_overhead(fn_a: Callable[[], Any], fn_b: Callable[[], Any], pairs: int = 20, warmup: int = 2,
                     device: DeviceLike | None = "cpu", n_boot: int = 2000, seed: int = 0,
                     sampler: Sampler | None = None) -> OverheadComparison:
    """Time ``pairs`` alternating calls A, B, A, B ... after ``warmup`` untimed rounds of each.

    One sampler times every call of the alternation (A on even rounds, B on odd), so under the bench the
    pairs are pytest-benchmark's own rounds (default: :func:`timer_sampler`).
    """
    if pairs < 2:
        raise ValueError(f"pairs must be >= 2, got {pairs}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    calls = itertools.count()

    def alternating() -> Any:
        return (fn_a if next(calls) % 2 == 0 else fn_b)()

    stats = (sampler or timer_sampler(as_device(device)))(alternating, 2 * warmup, 2 * pairs)
    samples = list(stats.samples_ms)
    return OverheadComparison.from_samples(samples[0::2], samples[1::2], n_boot=n_boot, seed=seed)
