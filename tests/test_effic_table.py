"""scripts/effic_table.py: a ratio divides by the eager bf16 cell of the nearest run in time (one machine session),
end-to-end rows pair by batch and steps, and JSON that is not pytest-benchmark's is skipped."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def effic_table():
    spec = importlib.util.spec_from_file_location("effic_table", REPO / "scripts" / "effic_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _step(precision: str, step_ms: float) -> dict:
    return {"name": f"test_generator_efficiency[effic-flux-{precision}]", "extra_info": {
        "generator": "flux", "precision": precision, "compile": False, "step_ms": step_ms, "step_min_ms": step_ms,
        "step_batch": 1, "latent_size": 128, "weights_bytes": 2**30, "peak_vram_gib": 1.0, "flops_per_step": 1e12,
        "tflops_per_s": 1.0, "roofline_fraction": 0.5}}


def _e2e(precision: str, images: int, ms_per_image: float) -> dict:
    return {"name": f"test_generator_efficiency[effic-e2e-flux-{precision}-b{images}]", "extra_info": {
        "generator": "flux", "precision": precision, "compile": False, "e2e_ms": ms_per_image * images,
        "e2e_ms_per_image": ms_per_image, "e2e_images": images, "e2e_steps": 4, "images_per_hour": 1.0,
        "e2e_peak_vram_gib": 1.0}}


def _write(folder: Path, name: str, when: str, benchmarks: list[dict]) -> None:
    (folder / name).write_text(json.dumps({"datetime": when, "benchmarks": benchmarks}))


def test_ratios_use_the_bf16_of_the_nearest_session(tmp_path: Path, effic_table) -> None:
    _write(tmp_path, "a_old.json", "2026-11-26T05:00:00+00:00",
           [_step("bf16", 100.0), _e2e("bf16", 1, 1000.0), _e2e("bf16", 4, 800.0)])
    _write(tmp_path, "b_new.json", "2026-11-26T07:00:00+00:00",
           [_step("bf16", 200.0), _step("q8_0", 300.0), _e2e("bf16", 1, 2000.0), _e2e("bf16", 4, 1000.0),
            _e2e("q8_0", 1, 3000.0), _e2e("q8_0", 4, 1500.0)])
    _write(tmp_path, "c_next_call.json", "2026-11-26T07:05:00+00:00", [_step("q4_0", 500.0)])
    (tmp_path / "run_record.json").write_text(json.dumps({"cells": []}))  # not benchmark JSON: skipped

    frame = effic_table.load(tmp_path)
    steps = effic_table.generator_table(frame).set_index("precision")["vs bf16"]
    assert steps["q8_0"] == "1.50"  # 300 / 200 of its own file, not 300 / 100 of the older session
    assert steps["q4_0"] == "2.50"  # a later call with no bf16 cell: the nearest run's bf16 (200)
    e2e = effic_table.e2e_table(frame)
    q8 = e2e[e2e["precision"] == "q8_0"].set_index("batch")["vs bf16"]
    assert q8[1] == "1.50" and q8[4] == "1.50"  # 3000 / 2000 at batch 1, 1500 / 1000 at batch 4


def test_a_cell_that_timed_nan_images_says_so_beside_its_time(tmp_path: Path, effic_table) -> None:
    broken = _e2e("fp8rw", 1, 2400.0)
    broken["extra_info"].update(e2e_calls=4, e2e_nonfinite_calls=4)
    _write(tmp_path, "run.json", "2026-11-26T05:00:00+00:00", [_e2e("bf16", 1, 1000.0), _e2e("bf16", 4, 800.0), broken])
    times = effic_table.e2e_table(effic_table.load(tmp_path)).set_index(["precision", "batch"])["ms/image (median)"]
    assert times["fp8rw", 1] == "2400.0 (NaN images in 4 of 4 calls)"
    assert times["bf16", 1] == "1000.0"  # a cell without the count (older runs) is left as it was


def test_runs_without_end_to_end_cells_give_no_table(tmp_path: Path, effic_table) -> None:
    _write(tmp_path, "steps_only.json", "2026-11-26T05:00:00+00:00", [_step("bf16", 100.0)])
    assert effic_table.e2e_table(effic_table.load(tmp_path)).empty


def test_of_two_runs_of_a_cell_the_newer_is_shown_for_every_precision(tmp_path: Path, effic_table) -> None:
    _write(tmp_path, "a_old.json", "2026-11-26T09:00:00+00:00", [_step("bf16", 60.0), _step("fp8rw", 480.0)])
    _write(tmp_path, "b_new.json", "2026-11-26T11:00:00+00:00", [_step("bf16", 50.0), _step("fp8rw", 400.0)])
    steps = effic_table.generator_table(effic_table.load(tmp_path)).set_index("precision")
    assert steps.loc["bf16", "step ms (median)"] == "50.0" and steps.loc["fp8rw", "step ms (median)"] == "400.0"
    assert steps.loc["fp8rw", "vs bf16"] == "8.00"  # both from the newer session
