"""``quantfake compare A B``: what changed between two runs, and is it significant.

Each metric of each cell present in both runs is tested with the same gate as
the baselines (:func:`quantfake.baselines.check_metric`): A is the reference,
B the new run. Efficiency cells are compared too (:mod:`quantfake.compare_efficiency`): latency through its
samples (significantly slower than its tolerance allows), peak memory against its tolerance. Across all the
tests with a p-value (detection, fidelity and latency) the p-values are adjusted by Benjamini-Hochberg, so the
share of false regressions among those flagged stays at alpha.  Exit status: 0 no significant regression, 1 at
least one or a cell that ran in A and is missing, skipped or errored in B (unless ``--allow-missing``), 2 usage
error.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from tabulate import tabulate

from quantfake.baselines import BenchConfig, check_metric, load_config
from quantfake.compare_efficiency import EFFICIENCY_KIND, compare_efficiency, format_efficiency_table
from quantfake.efficiency_gates import EFFICIENCY_GATES, parse_tolerance_overrides
from quantfake.metrics import METRICS
from quantfake.option_specs import DEFAULT_HISTORY_DIR
from quantfake.results import cells_by_id, load_run

__all__ = ["compare_runs", "lost_cells", "rows_to_frame", "format_table", "main"]

#: statuses of a cell that produced numbers; a base cell with one of these must produce numbers again
RAN = ("passed", "failed")


def _finite(x: Any) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(float(x))


def compare_runs(
    a: Mapping[str, Any],
    b: Mapping[str, Any],
    config: BenchConfig,
    metrics: Sequence[str] | None = None,
    efficiency_tolerances: Mapping[str, float] | None = None,
) -> list[dict[str, Any]]:
    """One row per (cell, metric) present and finite in both runs, efficiency cells' rows last.

    ``metrics=None`` compares the config's gated metrics and every efficiency gate; ``["all"]`` every metric
    with a direction; named metrics only those. Row keys: cell_id, metric, a, b, delta (b - a), ci95_b,
    tolerance, p, q, regression, improved (efficiency rows add kind, ratio, ratio_ci95, floor, device;
    see :func:`quantfake.compare_efficiency.compare_efficiency`).
    """
    cells_a, cells_b = cells_by_id(a), cells_by_id(b)
    rows: list[dict[str, Any]] = []
    for cell_id in sorted(set(cells_a) & set(cells_b)):
        ca, cb = cells_a[cell_id], cells_b[cell_id]
        if EFFICIENCY_KIND in (ca.kind, cb.kind):
            continue
        if metrics is None:
            names = list(config.gated_for(cb.kind))
        elif list(metrics) == ["all"]:
            names = sorted(k for k in set(ca.metrics) & set(cb.metrics) if METRICS.get(k) and METRICS[k].higher_is_better is not None)
        else:
            names = list(metrics)
        for name in names:
            va, vb = ca.metrics.get(name), cb.metrics.get(name)
            if not (_finite(va) and _finite(vb)):
                continue
            chk = check_metric(
                name, va, vb,
                se_baseline=ca.se.get(name), se_new=cb.se.get(name),
                tolerance=config.tolerance(name), alpha=config.alpha,
            )
            rows.append({
                "cell_id": cell_id, "metric": name, "a": float(va), "b": float(vb), "delta": float(vb) - float(va),
                "ci95_b": cb.ci95.get(name), "tolerance": chk.tolerance, "p": chk.p,
                "beyond_tolerance": chk.drop > chk.tolerance, "regression": chk.regression, "improved": chk.improved,
            })
    rows += compare_efficiency(a, b, efficiency_tolerances, metrics)
    return control_false_discoveries(rows, config.alpha)


def control_false_discoveries(rows: list[dict[str, Any]], alpha: float) -> list[dict[str, Any]]:
    """Benjamini-Hochberg over every (cell, metric) test of a comparison: a change is a regression when it exceeds
    its tolerance and its BH-adjusted p (``q``) is below ``alpha``.

    Hundreds of cells at alpha 0.05 would flag several regressions by chance alone; BH keeps the expected share
    of false flags among the flagged at ``alpha`` (scipy's ``false_discovery_control``). Rows without a p-value
    (peak memory: deterministic) are judged on their tolerance alone and get no ``q``.
    """
    tested = [r for r in rows if r.get("p") is not None]
    for row in rows:
        row.setdefault("q", None)
        if row.get("p") is None:
            row["regression"] = bool(row["beyond_tolerance"])
    if not tested:
        return rows
    from scipy.stats import false_discovery_control

    q = false_discovery_control([min(max(r["p"], 0.0), 1.0) for r in tested], method="bh")
    for row, qv in zip(tested, q, strict=True):
        row["q"] = float(qv)
        row["regression"] = bool(row["beyond_tolerance"] and qv < alpha)
    return rows


def lost_cells(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Cells that ran in ``a`` and are missing, skipped or errored in ``b``: ``[(cell_id, what happened)]``.

    A model, a weights file or bitsandbytes vanishing from a runner turns cells into skips or errors; a gate
    that only compares the cells present in both runs would pass (issue 16).
    """
    cells_a, cells_b = cells_by_id(a), cells_by_id(b)
    lost = []
    for cell_id, ca in sorted(cells_a.items()):
        if ca.status not in RAN:
            continue
        cb = cells_b.get(cell_id)
        if cb is None:
            lost.append((cell_id, "missing from the new run"))
        elif cb.status not in RAN:
            lost.append((cell_id, f"{cb.status} in the new run: {cb.message[:160]}".rstrip(": ")))
    return lost


def rows_to_frame(rows: list[dict[str, Any]]):  # -> pandas.DataFrame (pandas imported lazily)
    """The rows as a DataFrame, for notebooks and reports."""
    import pandas as pd

    return pd.DataFrame(rows, columns=["cell_id", "metric", "a", "b", "delta", "ci95_b", "tolerance", "p", "q", "regression",
                                       "improved", "ratio", "ratio_ci95"])


def format_table(rows: list[dict[str, Any]]) -> str:
    """Plain-text tables (detection / fidelity rows, then efficiency rows); regressions marked ``REGRESSION``,
    significant gains ``improved``."""
    def ci(v: Any) -> str:
        return f"[{v[0]:.3f}, {v[1]:.3f}]" if v and all(_finite(x) for x in v) else ""

    quality = [r for r in rows if r.get("kind") != EFFICIENCY_KIND]
    efficiency = [r for r in rows if r.get("kind") == EFFICIENCY_KIND]
    body = [
        [r["cell_id"], r["metric"], f"{r['a']:.4f}", f"{r['b']:.4f}", f"{r['delta']:+.4f}", ci(r["ci95_b"]),
         f"{r['tolerance']:.3f}", f"{r['p']:.3g}", f"{r.get('q', r['p']):.3g}",
         "REGRESSION" if r["regression"] else ("improved" if r["improved"] else "")]
        for r in quality
    ]
    tables = [tabulate(body, headers=["cell", "metric", "A", "B", "B-A", "B 95% CI", "tol", "p (drop)", "q (BH)",
                                      "verdict"])] if quality else []
    if efficiency:
        tables.append(format_efficiency_table(efficiency))
    return "\n\n".join(tables)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``quantfake compare A B [--history DIR] [--metric NAME ...] [--pyproject PATH]``."""
    parser = argparse.ArgumentParser(prog="quantfake compare", description=__doc__.splitlines()[0])
    parser.add_argument("a", help="reference run: file path, run id, 'latest' or 'previous'")
    parser.add_argument("b", help="new run: file path, run id, 'latest' or 'previous'")
    parser.add_argument("--history", default=DEFAULT_HISTORY_DIR, help=f"history folder (default {DEFAULT_HISTORY_DIR})")
    parser.add_argument("--metric", action="append", dest="metrics", metavar="NAME",
                        help="metric to compare (repeatable; 'all' for every metric); default: gated metrics")
    parser.add_argument("--pyproject", default="pyproject.toml", help="where [tool.quantfake] is read from")
    parser.add_argument("--allow-missing", action="store_true",
                        help="do not fail when cells of A are missing, skipped or errored in B (a smaller run on purpose)")
    defaults = "; ".join(f"{g.metric} " + " ".join(f"{k} +{v:.0%}" for k, v in g.tolerance.items())
                         + (f" +{g.floor:g}" if g.floor else "") for g in EFFICIENCY_GATES).replace("%", "%%")  # argparse
    parser.add_argument("--efficiency-tolerance", action="append", metavar="METRIC=FRACTION", default=[],
                        help=f"relative tolerance of an efficiency metric on every device (repeatable; defaults: "
                             f"{defaults}), e.g. latency_ms=0.2")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code or 0)
    try:
        if args.metrics and args.metrics != ["all"]:
            known = set(METRICS) | {g.metric for g in EFFICIENCY_GATES}
            unknown = [m for m in args.metrics if m not in known]
            if unknown:
                raise ValueError(f"unknown metric(s) {unknown}; accepted: {sorted(known)} or 'all'")
        tolerances = parse_tolerance_overrides(args.efficiency_tolerance)
        config = load_config(args.pyproject)
        run_a = load_run(args.a, args.history)
        run_b = load_run(args.b, args.history)
    except (FileNotFoundError, ValueError) as exc:
        print(f"quantfake compare: error: {exc}", file=sys.stderr)
        return 2
    rows = compare_runs(run_a, run_b, config, args.metrics, tolerances)
    n_tests = sum(r.get("p") is not None for r in rows)
    print(f"A = {run_a['run_id']}  B = {run_b['run_id']}  (alpha={config.alpha}, Benjamini-Hochberg over "
          f"{n_tests} tests: a regression is a change beyond its tolerance with q < alpha; peak memory, which "
          f"repeats exactly, on its tolerance alone)")
    only_a = sorted(set(cells_by_id(run_a)) - set(cells_by_id(run_b)))
    only_b = sorted(set(cells_by_id(run_b)) - set(cells_by_id(run_a)))
    print(format_table(rows) if rows else "no common cells with comparable metrics")
    if only_a:
        print(f"cells only in A: {', '.join(only_a)}")
    if only_b:
        print(f"cells only in B: {', '.join(only_b)}")
    n_reg = sum(r["regression"] for r in rows)
    print(f"{n_reg} significant regression(s)")
    lost = lost_cells(run_a, run_b)
    if lost:
        print(tabulate(lost, headers=["cell of A lost in B", "what happened"]))
        verdict = "allowed (--allow-missing)" if args.allow_missing else "FAIL (pass --allow-missing if intended)"
        print(f"{len(lost)} cell(s) of A did not run in B: {verdict}")
    return 1 if n_reg or (lost and not args.allow_missing) else 0


if __name__ == "__main__":
    sys.exit(main())
