"""quantfake compare on efficiency cells: latency through its samples (p into Benjamini-Hochberg with the detection
tests), peak memory against its tolerance; the table names cell, base, new, CI and p (issue 16)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from quantfake import compare as C
from quantfake.baselines import BenchConfig
from quantfake.efficiency_gates import get_gate, parse_tolerance_overrides
from quantfake.latency_stats import latency_ci95, slowdown_test
from quantfake.results import CellResult
from quantfake.session.efficiency.record import efficiency_result


def _samples(median_ms: float, n: int = 7, spread: float = 0.03, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    return list(median_ms * np.exp(rng.normal(0.0, spread, n)))


def _effic(cell_id: str, median_ms: float, device: str = "cuda:0", vram: float = 4.0, seed: int = 0,
           spread: float = 0.03) -> CellResult:
    extra = {"generator": "sd3", "precision": "nf4", "measure": "step", "device": device,
             "latency_samples_ms": _samples(median_ms, spread=spread, seed=seed), "peak_vram_gib": vram,
             "peak_reserved_gib": vram + 0.5, "peak_rss_gib": 2.0}
    return efficiency_result(cell_id, extra)


def _detect(cell_id: str, auc: float, se: float = 0.01) -> CellResult:
    return CellResult(cell_id, "detection", {"precision": "nf4"}, metrics={"auc": auc}, se={"auc": se},
                      ci95={"auc": [auc - 2 * se, auc + 2 * se]})


def _run(run_id: str, cells: list[CellResult]) -> dict:
    return {"schema": 1, "run_id": run_id, "cells": [c.to_dict() for c in cells]}


def test_slowdown_test_on_log_samples() -> None:
    base = _samples(100.0, seed=1)
    same = slowdown_test(base, _samples(100.0, seed=2), tolerance=0.10)
    assert same.p > 0.5 and not same.beyond_tolerance and same.ratio_ci95[0] < 1.0 < same.ratio_ci95[1]
    slow = slowdown_test(base, _samples(150.0, seed=2), tolerance=0.10)
    assert slow.ratio == pytest.approx(1.5, rel=0.05) and slow.p < 1e-4 and slow.beyond_tolerance
    within = slowdown_test(base, _samples(105.0, seed=2), tolerance=0.10)
    assert within.p > 0.05 and not within.beyond_tolerance  # slower, but not beyond the tolerance
    flat = slowdown_test([10.0, 10.0], [20.0, 20.0], tolerance=0.10)
    assert flat.p == 0.0 and "tolerance-only" in flat.note
    low, high = latency_ci95([9.0, 10.0, 11.0])
    assert low < 10.0 < high
    with pytest.raises(ValueError, match="positive"):
        slowdown_test([1.0, -1.0], [1.0], 0.1)


def test_efficiency_record_takes_the_device_memory_and_marks_oom() -> None:
    gpu = _effic("effic-sd3-nf4", 50.0)
    assert gpu.kind == "efficiency" and set(gpu.metrics) == {"latency_ms", "peak_vram_gib", "peak_reserved_gib"}
    assert gpu.metrics["latency_ms"] == pytest.approx(float(np.median(gpu.extra["latency_samples_ms"])))
    cpu = _effic("effic-sd3-nf4", 50.0, device="cpu")
    assert set(cpu.metrics) == {"latency_ms", "peak_rss_gib"}
    oom = efficiency_result("effic-flux-fp32", {"device": "cuda", "oom": True, "oom_error": "OutOfMemoryError"})
    assert oom.status == "error" and "out of memory" in oom.message


def test_compare_flags_a_slower_cell_and_a_memory_growth_only(tmp_path: Path, capsys) -> None:
    base = [_effic("effic-sd3-bf16", 50.0, seed=1), _effic("effic-sd3-nf4", 60.0, seed=2),
            _effic("effic-sdxl-nf4", 80.0, vram=5.0, seed=3)]
    new = [_effic("effic-sd3-bf16", 51.0, seed=4), _effic("effic-sd3-nf4", 90.0, seed=5),
           _effic("effic-sdxl-nf4", 80.0, vram=6.0, seed=6)]
    rows = C.compare_runs(_run("a", base), _run("b", new), BenchConfig())
    flagged = {(r["cell_id"], r["metric"]) for r in rows if r["regression"]}
    assert flagged == {("effic-sd3-nf4", "latency_ms"), ("effic-sdxl-nf4", "peak_vram_gib"),
                       ("effic-sdxl-nf4", "peak_reserved_gib")}
    slow = next(r for r in rows if r["cell_id"] == "effic-sd3-nf4" and r["metric"] == "latency_ms")
    assert slow["ratio"] == pytest.approx(1.5, rel=0.05) and slow["q"] < 0.05 and slow["ratio_ci95"][0] > 1.1
    vram = next(r for r in rows if r["cell_id"] == "effic-sdxl-nf4" and r["metric"] == "peak_vram_gib")
    assert vram["p"] is None and vram["q"] is None  # deterministic: tolerance alone
    for run_id, cells in (("20260101T000000Z-0000000a", base), ("20260102T000000Z-0000000b", new)):
        (tmp_path / f"{run_id}.json").write_text(json.dumps({**_run(run_id, cells), "created": "", "profile": "random"}))
    assert C.main(["previous", "latest", "--history", str(tmp_path), "--pyproject", str(tmp_path / "none.toml")]) == 1
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("effic-sd3-nf4") and "latency_ms" in x)
    assert "REGRESSION" in line and f"{slow['a']:.4g}" in line and f"{slow['b']:.4g}" in line
    assert f"[{slow['ratio_ci95'][0]:.3f}, {slow['ratio_ci95'][1]:.3f}]" in line and f"{slow['p']:.3g}" in line
    assert "3 significant regression(s)" in out
    # a wider tolerance from the command line lets the same slow-down pass
    assert C.main(["previous", "latest", "--history", str(tmp_path), "--pyproject", str(tmp_path / "none.toml"),
                   "--efficiency-tolerance", "latency_ms=0.8", "--efficiency-tolerance", "peak_vram_gib=0.5",
                   "--efficiency-tolerance", "peak_reserved_gib=0.5"]) == 0


def test_latency_p_values_share_benjamini_hochberg_with_the_detection_tests() -> None:
    """A borderline slow-down (2 noisy rounds) is flagged alone and not among 40 unchanged detection cells; a clear
    one still is."""
    unchanged = [_detect(f"c{i:02d}", 0.90) for i in range(40)]
    edge_a = _effic("effic-sd3-nf4", 60.0, seed=1, spread=0.15)
    edge_b = _effic("effic-sd3-nf4", 90.0, seed=2, spread=0.15)
    alone = C.compare_runs(_run("a", [edge_a]), _run("b", [edge_b]), BenchConfig(), metrics=["latency_ms"])
    assert alone[0]["q"] < 0.05 and alone[0]["regression"]
    many = C.compare_runs(_run("a", unchanged + [edge_a]), _run("b", unchanged + [edge_b]), BenchConfig(),
                          metrics=["auc", "latency_ms"])
    edge = next(r for r in many if r["metric"] == "latency_ms")
    assert edge["p"] < 0.05 < edge["q"] and not edge["regression"]
    clear = C.compare_runs(_run("a", unchanged + [_effic("effic-sd3-nf4", 60.0, seed=1)]),
                           _run("b", unchanged + [_effic("effic-sd3-nf4", 120.0, seed=2)]), BenchConfig(),
                           metrics=["auc", "latency_ms"])
    assert next(r for r in clear if r["metric"] == "latency_ms")["regression"]


def test_tolerances_come_from_the_registry_and_bad_overrides_are_refused(capsys) -> None:
    assert get_gate("latency_ms").tolerance_for("cuda:1") == 0.10 and get_gate("latency_ms").tolerance_for("cpu") == 0.5
    assert parse_tolerance_overrides(["latency_ms=0.2"]) == {"latency_ms": 0.2}
    for bad, says in (("latency=0.2", "latency_ms"), ("latency_ms", "METRIC=FRACTION"), ("latency_ms=fast", "number"),
                      ("latency_ms=-1", ">= 0")):
        with pytest.raises(ValueError, match=says):
            parse_tolerance_overrides([bad])
    assert C.main(["a", "b", "--efficiency-tolerance", "vram=0.1"]) == 2
    assert "vram" in capsys.readouterr().err
