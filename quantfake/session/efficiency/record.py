"""The run-record entry of one efficiency cell: what ``quantfake compare`` gates and ``lost_cells`` counts.

Kind ``efficiency``. Its ``latency_ms`` is the median of pytest-benchmark's own rounds (the same samples as the
benchmark JSON, kept in ``extra['latency_samples_ms']`` for the compare gate's test), with the 95 % interval of
the geometric mean; the memory figures are the ones the device has (GPU: allocator peak and reserved; CPU:
resident-set peak). A cell that ran out of memory is recorded as an error, so a later comparison sees it lost. A cell
whose pipeline calls made non-finite images is recorded as failed, with its timings: they are a time of broken
images, kept to be seen, never a result.
"""

from __future__ import annotations

from collections.abc import Mapping
from statistics import median
from typing import Any

from quantfake.latency_stats import latency_ci95
from quantfake.results import CellResult

#: memory metrics recorded per device type (names as in :mod:`quantfake.efficiency_gates`)
MEMORY_METRICS: dict[str, tuple[str, ...]] = {"cuda": ("peak_vram_gib", "peak_reserved_gib"), "cpu": ("peak_rss_gib",)}
#: fields of a cell's report that identify it (the record's ``params``)
PARAM_KEYS: tuple[str, ...] = ("generator", "precision", "compile", "measure", "images", "detector", "batch",
                               "profile", "device")
KIND = "efficiency"
#: prefixes of the watched pipeline calls' counts in a cell's report (:class:`quantfake.measure.NonFiniteCalls`):
#: end-to-end cells' ``e2e_``, the overhead guard's ``overhead_``
NONFINITE_PREFIXES: tuple[str, ...] = ("e2e_", "overhead_")


def efficiency_result(cell_id: str, extra: Mapping[str, Any], memory_prefix: str = "") -> CellResult:
    """The cell's report fields (``extra``, as in benchmark.extra_info) as a run-record cell.

    ``memory_prefix`` selects which memory fields the cell's own peak is (``e2e_`` for end-to-end cells).
    """
    params = {k: extra[k] for k in PARAM_KEYS if k in extra}
    if extra.get("oom"):
        return CellResult(cell_id, KIND, params, status="error", message=f"out of memory: {extra.get('oom_error')}",
                          extra=dict(extra))
    if extra.get("memory_fit_refused"):
        return CellResult(cell_id, KIND, params, status="error", message=extra["memory_fit_refused"], extra=dict(extra))
    metrics: dict[str, float] = {}
    ci95: dict[str, list[float]] = {}
    n: dict[str, int] = {}
    samples = extra.get("latency_samples_ms")
    if samples:
        metrics["latency_ms"] = float(median(samples))
        ci95["latency_ms"] = latency_ci95(samples)
        n["latency_ms"] = len(samples)
    device_type = str(extra.get("device") or "cpu").split(":")[0]
    for name in MEMORY_METRICS.get(device_type, ()):
        value = extra.get(memory_prefix + name)
        if value is not None:
            metrics[name] = float(value)
    if extra.get("overhead_ratio_median") is not None:  # the overhead guard: reported, judged by its own test
        metrics["overhead_ratio"] = float(extra["overhead_ratio_median"])
        ci95["overhead_ratio"] = list(extra["overhead_ratio_ci95"])
        n["overhead_ratio"] = int(extra.get("overhead_pairs") or 0)
    broken = nonfinite_message(cell_id, extra)
    return CellResult(cell_id, KIND, params, status="failed" if broken else "passed", message=broken or "",
                      metrics=metrics, ci95=ci95, n=n, extra=dict(extra))


def nonfinite_message(cell_id: str, extra: Mapping[str, Any]) -> str | None:
    """Why the cell's timing is no result: how many of its pipeline calls made non-finite images; None if none."""
    for prefix in NONFINITE_PREFIXES:
        bad = extra.get(f"{prefix}nonfinite_calls")
        if bad:
            where = ", ".join(extra.get(f"{prefix}nonfinite_where") or ()) or "an unknown place"
            return (f"{cell_id}: {bad} of {extra.get(f'{prefix}calls')} pipeline calls (warm-up included) made "
                    f"non-finite images (numpy's invalid value at {where}): the timing is of non-finite images")
    return None
