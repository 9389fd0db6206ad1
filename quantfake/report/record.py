"""Flatten a run record (read by :func:`quantfake.results.read_run_record`) and pytest-benchmark JSON into pandas
frames.

Why: every table and plot needs the same flattening of nested cell dicts; doing
it once here keeps the renderers free of schema knowledge.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = [
    "PARAM_KEYS",
    "cells_frame",
    "load_benchmark_json",
    "benchmark_frame",
]

PARAM_KEYS: tuple[str, ...] = (
    "generator", "precision", "mode", "detector", "perturbation", "detector_precision",
)
_PAIRED_SCALARS: tuple[str, ...] = (
    "reference_precision", "delta_auc", "delta_auc_p_delong", "wilcoxon_p",
    "mcnemar_p", "ks", "ks_p", "wasserstein",
)


def _number(value: Any) -> float:
    """float(value), or NaN for None/non-numbers (missing metrics stay visible as NaN)."""
    try:
        result = float(value)
    except (TypeError, ValueError):
        return math.nan
    return result


def cells_frame(record: Mapping[str, Any]) -> pd.DataFrame:
    """One row per cell: ids, params, metrics, ``<metric>_ci95`` (lo, hi), paired_* stats.

    Scores stay out of the frame (they are lists); use ``record['cells']`` for them.
    """
    rows: list[dict[str, Any]] = []
    for cell in record.get("cells", []):
        params = cell.get("params") or {}
        row: dict[str, Any] = {
            "cell_id": cell.get("cell_id", ""),
            "kind": cell.get("kind", ""),
            "status": cell.get("status", ""),
            "message": cell.get("message", "") or "",
        }
        for key in PARAM_KEYS:
            row[key] = params.get(key)
        for name, value in (cell.get("metrics") or {}).items():
            row[name] = _number(value)
        for name, bounds in (cell.get("ci95") or {}).items():
            if isinstance(bounds, (list, tuple)) and len(bounds) == 2:
                row[f"{name}_ci95"] = (_number(bounds[0]), _number(bounds[1]))
        counts = cell.get("n") or {}
        row["n_real"] = counts.get("real")
        row["n_fake"] = counts.get("fake")
        paired = cell.get("paired") or {}
        for key in _PAIRED_SCALARS:
            value = paired.get(key)
            row[f"paired_{key}"] = value if key == "reference_precision" else _number(value)
        ci = paired.get("delta_auc_ci95")
        row["paired_delta_auc_ci95"] = (
            (_number(ci[0]), _number(ci[1])) if isinstance(ci, (list, tuple)) and len(ci) == 2 else None
        )
        row["memory_fit"] = memory_fit_label((cell.get("extra") or {}).get("memory_fit"))
        row["has_paired"] = bool(paired)
        row["has_scores"] = bool((cell.get("scores") or {}).get("fake"))
        rows.append(row)
    return pd.DataFrame(rows)


def memory_fit_label(fit: Mapping[str, Any] | None) -> str | None:
    """``"model offload, batch 1 (est. 22.7 of 24 GiB)"`` for a cell run under ``--vram-budget``; else None."""
    if not fit:
        return None
    label = f"{fit.get('summary')} (est. {fit.get('estimate_gib', float('nan')):.1f} of {fit.get('budget_gib'):g} GiB)"
    return label + (" [offload n/a on CPU]" if fit.get("offload_note") else "")


def load_benchmark_json(path: str | Path) -> dict[str, Any]:
    """Load a pytest-benchmark JSON file (``--benchmark-json`` output)."""
    payload = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(payload, dict) or not isinstance(payload.get("benchmarks"), list):
        raise ValueError(f"{path} is not pytest-benchmark JSON: no 'benchmarks' list")
    return payload


def benchmark_frame(payload: Mapping[str, Any]) -> pd.DataFrame:
    """One row per benchmark; absent extra_info keys become NaN/None, never errors.

    ``latency_ms`` is extra_info.step_ms when present, else the median in ms (the same number since efficiency
    cells time through pytest-benchmark). ``peak_gib`` is peak_vram_gib, else peak_rss_gib (``e2e_`` ones for an
    end-to-end cell); ``memory_kind`` says which.
    """
    rows: list[dict[str, Any]] = []
    for bench in payload.get("benchmarks", []):
        extra = bench.get("extra_info") or {}
        params = bench.get("params") or {}
        stats = bench.get("stats") or {}
        median_ms = _number(stats.get("median")) * 1000.0
        step_ms = _number(extra.get("step_ms"))
        prefix = "e2e_" if extra.get("measure") == "e2e" else ""  # an end-to-end cell's own peak
        vram, rss = _number(extra.get(f"{prefix}peak_vram_gib")), _number(extra.get(f"{prefix}peak_rss_gib"))
        memory_kind = "vram" if not math.isnan(vram) else ("rss" if not math.isnan(rss) else None)
        rows.append({
            "name": bench.get("name", ""),
            "generator": extra.get("generator", params.get("generator")),
            "precision": extra.get("precision", params.get("precision")),
            "median_ms": median_ms,
            "mean_ms": _number(stats.get("mean")) * 1000.0,
            "step_ms": step_ms,
            "latency_ms": step_ms if not math.isnan(step_ms) else median_ms,
            "peak_gib": vram if memory_kind == "vram" else rss,
            "memory_kind": memory_kind,
            "weights_bytes": _number(extra.get("weights_bytes")),
            "tflops_per_s": _number(extra.get("tflops_per_s")),
            "memory_fit": "refused: does not fit --vram-budget" if extra.get("memory_fit_refused")
            else memory_fit_label(extra.get("memory_fit")),
        })
    return pd.DataFrame(rows)
