"""An efficiency cell that timed NaN images is red, with its timings recorded, and the other cells go on: the PIL
output cannot show NaN, so numpy's invalid-value flag at diffusers' uint8 cast marks those calls."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers.image_processor import VaeImageProcessor

from quantfake.measure import NonFiniteCalls
from quantfake.profiles import TINY_VAE_FACTOR
from quantfake.session.efficiency.cells import measure_generation_overhead, measure_pipeline_e2e
from quantfake.session.efficiency.record import efficiency_result
from quantfake.store import Store
from tests.plugins.nan_images import decode_nan

REPO = Path(__file__).resolve().parent.parent
SIZE = 8 * TINY_VAE_FACTOR


def test_only_calls_whose_uint8_cast_met_nan_are_counted_and_numpy_state_comes_back() -> None:
    processor, checked = VaeImageProcessor(), NonFiniteCalls()
    before = np.geterr(), np.geterrcall()
    pixels = torch.zeros(2, 3, 8, 8)
    for image in (pixels, pixels.clone().index_fill_(3, torch.tensor([0]), float("nan")), pixels):
        out = checked.watch(lambda image=image: processor.postprocess(image, output_type="pil"))()
        assert len(out) == 2  # the output is what the call returns, PIL images
    assert (checked.calls, checked.nonfinite) == (3, 1)
    (where,) = checked.where
    assert where.startswith("diffusers/image_processor.py:") and where.endswith(" numpy_to_pil")
    assert (np.geterr(), np.geterrcall()) == before


@pytest.fixture
def loaded(tmp_path: Path, one_torch_thread):
    from quantfake.loading import load_pipeline

    return load_pipeline("fluxs", "fp32", "tiny", device="cpu", store=Store(tmp_path))


def test_an_e2e_cell_is_green_with_no_nonfinite_call(loaded) -> None:
    e2e = measure_pipeline_e2e(loaded, steps=1, size=SIZE, device="cpu", repeats=2, warmup=1, images=2)
    assert (e2e["e2e_calls"], e2e["e2e_nonfinite_calls"], e2e["e2e_nonfinite_where"]) == (3, 0, [])
    cell = efficiency_result("effic-e2e-fluxs-fp32-b2", {**e2e, "measure": "e2e", "device": "cpu"})
    assert cell.status == "passed" and cell.message == ""


def test_an_e2e_cell_of_nan_images_is_red_and_keeps_its_timings(loaded) -> None:
    decode_nan(loaded.pipe)
    e2e = measure_pipeline_e2e(loaded, steps=1, size=SIZE, device="cpu", repeats=2, warmup=1, images=2)
    assert (e2e["e2e_calls"], e2e["e2e_nonfinite_calls"]) == (3, 3)
    cell = efficiency_result("effic-e2e-fluxs-fp32-b2", {**e2e, "measure": "e2e", "device": "cpu"})
    assert cell.status == "failed" and cell.metrics["latency_ms"] == e2e["e2e_ms"] > 0
    assert cell.message.startswith("effic-e2e-fluxs-fp32-b2: 3 of 3 pipeline calls (warm-up included) made "
                                   "non-finite images (numpy's invalid value at diffusers/image_processor.py:")
    assert cell.message.endswith("the timing is of non-finite images")


def test_the_overhead_guard_counts_nan_images_on_both_sides(loaded) -> None:
    decode_nan(loaded.pipe)
    overhead = measure_generation_overhead(loaded, steps=1, size=SIZE, device="cpu", pairs=2, warmup=1)
    assert overhead["overhead_calls"] == overhead["overhead_nonfinite_calls"] == 6  # 2 x (1 warm-up + 2 pairs)
    cell = efficiency_result("effic-overhead-fluxs", {**overhead, "device": "cpu"})
    assert cell.status == "failed" and "6 of 6 pipeline calls" in cell.message


def test_a_bench_cell_of_nan_images_is_red_recorded_and_the_others_go_on(tmp_path: Path) -> None:
    from quantfake.tiny import ensure_tiny_pipeline

    store, bench_json = Store(tmp_path / "store"), tmp_path / "bench.json"
    ensure_tiny_pipeline("fluxs", store.models_dir)
    cmd = [sys.executable, "-m", "pytest", "bench/test_efficiency.py", "-p", "tests.plugins.nan_images",
           "--generators=fluxs", "--precisions=fp32,w8", "-k", "effic-e2e", "-p", "no:cacheprovider", "-q",
           f"--store={store.root}", f"--history={tmp_path / 'history'}", f"--benchmark-json={bench_json}",
           "--no-report"]
    env = {k: v for k, v in os.environ.items() if k not in ("QUANTFAKE_RUN_ID", "QUANTFAKE_STORE")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), QF_TEST_NAN_PRECISION="w8")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-3000:]
    assert "effic-e2e-fluxs-w8-b1: 4 of 4 pipeline calls (warm-up included) made non-finite images" in out
    assert "(timings recorded in the run record and the benchmark JSON; other cells go on)" in out
    (record,) = (tmp_path / "history").glob("*.json")
    cells = {c["cell_id"]: c for c in json.loads(record.read_text())["cells"]}
    nan_cell = cells["effic-e2e-fluxs-w8-b1"]
    assert nan_cell["status"] == "failed" and nan_cell["metrics"]["latency_ms"] > 0
    assert cells["effic-e2e-fluxs-fp32-b1"]["status"] == "passed"
    entries = {e["name"]: e["extra_info"] for e in json.loads(bench_json.read_text())["benchmarks"]}
    assert entries["test_generator_efficiency[effic-e2e-fluxs-w8-b1]"]["e2e_nonfinite_calls"] == 4
    assert entries["test_generator_efficiency[effic-e2e-fluxs-fp32-b1]"]["e2e_nonfinite_calls"] == 0
