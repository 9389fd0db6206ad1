"""Which efficiency numbers ``quantfake compare`` gates, and how much worse each may get (the one list).

Efficiency cells are compared run against run on the same runner (``compare previous latest``), never against a
committed file: latency and memory belong to a machine. Tolerances are relative (0.10: up to 10 % worse passes)
plus an absolute floor in the metric's unit, so a few MiB on a tiny model never flag. Latency is gated
statistically (its p-value joins the Benjamini-Hochberg control of every test in the comparison); peak memory
repeats exactly for the same code and shapes, so it is gated on its tolerance alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from quantfake.errors import UnknownIdError

__all__ = ["EFFICIENCY_GATES", "EfficiencyGate", "get_gate", "parse_tolerance_overrides"]


@dataclass(frozen=True)
class EfficiencyGate:
    """One gated efficiency metric of kind-``efficiency`` cells in a run record."""

    metric: str
    #: relative tolerance per device type; a shared 2-core CPU runner drifts by tens of percent between runs
    tolerance: Mapping[str, float]
    #: absolute slack in the metric's unit, added to the relative tolerance
    floor: float
    #: True: compared through its samples with a p-value (into Benjamini-Hochberg); False: tolerance only
    statistical: bool
    description: str

    def tolerance_for(self, device: str) -> float:
        """The tolerance of a device string (``cuda:1`` -> cuda; unknown types take the strictest)."""
        kind = str(device or "cpu").split(":")[0]
        return float(self.tolerance.get(kind, min(self.tolerance.values())))


EFFICIENCY_GATES: tuple[EfficiencyGate, ...] = (
    EfficiencyGate("latency_ms", {"cuda": 0.10, "cpu": 0.50}, 0.0, True,
                   "median of pytest-benchmark's rounds; flagged when significantly slower than (1 + tol) x base "
                   "(one-sided Welch t-test on log samples)"),
    EfficiencyGate("peak_vram_gib", {"cuda": 0.05}, 0.05, False, "torch allocator peak (tensors) during the rounds"),
    EfficiencyGate("peak_reserved_gib", {"cuda": 0.10}, 0.25, False,
                   "what torch's caching allocator held at its peak during the rounds"),
    EfficiencyGate("peak_rss_gib", {"cpu": 0.25}, 0.25, False,
                   "process resident-set peak during the rounds (the memory figure a CPU run has)"),
)


def get_gate(metric: str) -> EfficiencyGate:
    for gate in EFFICIENCY_GATES:
        if gate.metric == metric:
            return gate
    raise UnknownIdError("efficiency metric", metric, [g.metric for g in EFFICIENCY_GATES])


def parse_tolerance_overrides(items: Sequence[str] | None) -> dict[str, float]:
    """``["latency_ms=0.2", ...]`` (the CLI's ``--efficiency-tolerance``) -> ``{"latency_ms": 0.2}``; bad input
    raises ValueError naming the value and what is accepted."""
    out: dict[str, float] = {}
    accepted = ", ".join(g.metric for g in EFFICIENCY_GATES)
    for item in items or ():
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--efficiency-tolerance {item!r} is not METRIC=FRACTION (metrics: {accepted})")
        get_gate(name.strip())
        try:
            tol = float(value)
        except ValueError:
            raise ValueError(f"--efficiency-tolerance {item!r}: {value!r} is not a number (e.g. 0.1 for 10 %)") from None
        if not tol >= 0:
            raise ValueError(f"--efficiency-tolerance {item!r}: the tolerance must be >= 0")
        out[name.strip()] = tol
    return out
