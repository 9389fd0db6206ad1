"""The efficiency half of ``quantfake compare``: latency and peak memory of ``efficiency`` cells, run against run.

For each cell of kind ``efficiency`` that ran in both runs and each gate of :data:`EFFICIENCY_GATES` it records:
latency is tested through its pytest-benchmark samples (:func:`quantfake.latency_stats.slowdown_test`; the p-value
joins the Benjamini-Hochberg control of :func:`quantfake.compare.control_false_discoveries`), peak memory against
its tolerance alone (it repeats exactly for the same code and shapes, so it has no p-value).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from tabulate import tabulate

from quantfake.efficiency_gates import EFFICIENCY_GATES, EfficiencyGate
from quantfake.latency_stats import slowdown_test
from quantfake.results import CellResult, cells_by_id

__all__ = ["EFFICIENCY_KIND", "compare_efficiency", "format_efficiency_table"]

EFFICIENCY_KIND = "efficiency"
RAN = ("passed", "failed")


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(float(x))


def compare_efficiency(a: Mapping[str, Any], b: Mapping[str, Any], tolerances: Mapping[str, float] | None = None,
                       metrics: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One row per (efficiency cell, gated metric) finite in both runs; A is the base, B the new run.

    ``tolerances`` override the registry's (``{"latency_ms": 0.2}``, every device); ``metrics`` restricts the
    gates (None or ``["all"]``: every gate). Row keys: cell_id, metric, kind, device, a, b, delta, ratio (B/A; for
    latency the ratio of geometric means), ratio_ci95 (latency only), ci95_b, tolerance, floor, p (latency only,
    one-sided "slower than the tolerance allows"), beyond_tolerance, regression, improved.
    """
    gates = [g for g in EFFICIENCY_GATES if not metrics or list(metrics) == ["all"] or g.metric in metrics]
    cells_a, cells_b = cells_by_id(a), cells_by_id(b)
    rows: list[dict[str, Any]] = []
    for cell_id in sorted(set(cells_a) & set(cells_b)):
        ca, cb = cells_a[cell_id], cells_b[cell_id]
        if EFFICIENCY_KIND not in (ca.kind, cb.kind) or ca.status not in RAN or cb.status not in RAN:
            continue  # cells that did not run in B are lost_cells' business
        for gate in gates:
            if _finite(ca.metrics.get(gate.metric)) and _finite(cb.metrics.get(gate.metric)):
                rows.append(_row(cell_id, ca, cb, gate, (tolerances or {}).get(gate.metric)))
    return rows


def _row(cell_id: str, ca: CellResult, cb: CellResult, gate: EfficiencyGate, override: float | None) -> dict[str, Any]:
    va, vb = float(ca.metrics[gate.metric]), float(cb.metrics[gate.metric])
    device = str(cb.params.get("device") or cb.extra.get("device") or "cpu")
    tol = gate.tolerance_for(device) if override is None else float(override)
    row: dict[str, Any] = {"cell_id": cell_id, "metric": gate.metric, "kind": EFFICIENCY_KIND, "device": device,
                           "a": va, "b": vb, "delta": vb - va, "ci95_b": cb.ci95.get(gate.metric), "tolerance": tol,
                           "floor": gate.floor, "ratio": vb / va if va else math.inf, "ratio_ci95": None, "p": None}
    samples_a, samples_b = ca.extra.get("latency_samples_ms"), cb.extra.get("latency_samples_ms")
    if gate.statistical and samples_a and samples_b:
        test = slowdown_test(samples_a, samples_b, tol)
        row.update(ratio=test.ratio, ratio_ci95=list(test.ratio_ci95), p=test.p,
                   beyond_tolerance=test.beyond_tolerance, improved=test.faster, note=test.note)
    else:  # deterministic (memory), or a record without samples: tolerance only
        row.update(beyond_tolerance=vb > va * (1 + tol) + gate.floor, improved=vb < va * (1 - tol) - gate.floor)
    row["regression"] = row["beyond_tolerance"]  # statistical rows: decided with the BH-adjusted q by compare
    return row


def format_efficiency_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Plain-text table of efficiency rows: base, new, B/A with its CI, tolerance, p and q; verdicts marked."""
    def num(v: Any, spec: str = ".4g") -> str:
        return format(v, spec) if _finite(v) else "-"

    def ci(v: Any) -> str:
        return f"[{v[0]:.3f}, {v[1]:.3f}]" if v and all(_finite(x) for x in v) else "-"

    body = [
        [r["cell_id"], r["metric"], num(r["a"]), num(r["b"]), num(r["ratio"], ".3f"), ci(r.get("ratio_ci95")),
         ci(r.get("ci95_b")), f"+{r['tolerance']:.0%}" + (f" +{r['floor']:g}" if r.get("floor") else ""),
         num(r.get("p"), ".3g"), num(r.get("q"), ".3g"),
         "REGRESSION" if r["regression"] else ("improved" if r.get("improved") else "")]
        for r in rows
    ]
    return tabulate(body, headers=["efficiency cell", "metric", "A (base)", "B (new)", "B/A", "B/A 95% CI",
                                   "B 95% CI", "tol", "p (slower)", "q (BH)", "verdict"], disable_numparse=True)
