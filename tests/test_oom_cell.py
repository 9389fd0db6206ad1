"""Memory in whole bench sessions: an out-of-memory cell, or one that no recipe fits under ``--vram-budget``, is red
and recorded as an error (run record or benchmark JSON) while the other cells go on (issues 15, 16); a cell that
fits only with a memory-fit recipe runs with it and records it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from quantfake.store import Store

REPO = Path(__file__).resolve().parent.parent
FIDELITY = ["bench/test_fidelity.py", "--generators=fluxs", "--modes=txt2img", "--n-images=4", "--n-real=4",
            "--n-calibration=4", "--update-baselines"]


def _bench(tmp_path: Path, args: list[str], **env_vars: str) -> tuple[subprocess.CompletedProcess[str], str]:
    """``pytest <args>`` in a fresh process with a store, history and baselines under ``tmp_path``."""
    from quantfake.tiny import ensure_tiny_pipeline

    store = Store(tmp_path / "store")
    ensure_tiny_pipeline("fluxs", store.models_dir)
    cmd = [sys.executable, "-m", "pytest", *args, "-p", "no:cacheprovider", "-q", f"--store={store.root}",
           f"--history={tmp_path / 'history'}", f"--baselines-dir={tmp_path / 'baselines'}", "--no-report"]
    env = {k: v for k, v in os.environ.items() if k not in ("QUANTFAKE_RUN_ID", "QUANTFAKE_STORE")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), **env_vars)
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    return proc, proc.stdout + proc.stderr


def _cells(tmp_path: Path) -> dict[str, dict]:
    (record,) = list((tmp_path / "history").glob("*.json"))
    return {c["cell_id"]: c for c in json.loads(record.read_text())["cells"]}


@pytest.mark.parametrize("where", ["cell", "generation"])
def test_an_oom_cell_is_red_recorded_and_the_others_go_on(tmp_path: Path, where: str) -> None:
    proc, out = _bench(tmp_path, [*FIDELITY, "--precisions=fp32,w8,w4", "-p", "tests.plugins.oom_cell"],
                       QF_TEST_OOM_PRECISION="w8", QF_TEST_OOM_AT=where)
    assert proc.returncode == 1, out[-3000:]
    assert "fluxs-w8-txt2img: out of memory (recorded; other cells go on)" in out
    cells = _cells(tmp_path)
    assert cells["fluxs-w8-txt2img"]["status"] == "error" and "out of memory" in cells["fluxs-w8-txt2img"]["message"]
    assert cells["fluxs-w4-txt2img"]["status"] == "passed" and cells["fluxs-w4-txt2img"]["metrics"]["psnr"] > 0


def test_an_oom_efficiency_cell_is_red_and_its_json_says_so(tmp_path: Path) -> None:
    bench_json = tmp_path / "bench.json"
    proc, out = _bench(tmp_path, ["bench/test_efficiency.py", "-p", "tests.plugins.oom_cell", "--generators=fluxs",
                                  "--precisions=w8", "-k", "effic-fluxs-w8", f"--benchmark-json={bench_json}"],
                       QF_TEST_OOM_PRECISION="none", QF_TEST_OOM_STEP="1")
    assert proc.returncode == 1 and "out of memory (recorded in the run record and the benchmark JSON" in out, out[-3000:]
    (entry,) = json.loads(bench_json.read_text())["benchmarks"]
    assert entry["extra_info"]["oom"] is True and "injected" in entry["extra_info"]["oom_error"]
    cell = _cells(tmp_path)["effic-fluxs-w8"]  # an error cell: a later compare counts it lost
    assert cell["status"] == "error" and "out of memory" in cell["message"]


def _tiny_memory(tmp_path: Path, precision: str):
    from quantfake.loading import load_pipeline
    from quantfake.memory_placement import pipeline_memory

    return pipeline_memory(load_pipeline("fluxs", precision, "tiny", device="cpu", store=Store(tmp_path / "store")))


def test_a_cell_that_fits_only_with_a_recipe_runs_with_it_and_records_it(tmp_path: Path) -> None:
    from quantfake.memory_fit import HEADROOM_FRACTION, Recipe, choose_recipe, estimate

    mem = _tiny_memory(tmp_path, "fp32")
    as_is, sliced = (estimate(mem, Recipe(batch=4, vae_slicing=s), 64).peak_gib for s in (False, True))
    budget = (as_is + sliced) / 2 / (1 - HEADROOM_FRACTION)  # as is does not fit; sliced decoding does
    expected = choose_recipe(mem, budget, 64, 4).recipe
    assert expected == Recipe(batch=4, vae_slicing=True)
    proc, out = _bench(tmp_path, [*FIDELITY, "--precisions=fp32,w8", "--gen-batch-size=4", f"--vram-budget={budget}"])
    assert proc.returncode == 0, out[-3000:]
    cell = _cells(tmp_path)["fluxs-w8-txt2img"]
    fit, reference = cell["extra"]["memory_fit"], cell["extra"]["reference_memory_fit"]
    assert reference["summary"] == expected.summary == "VAE slicing, batch 4"
    assert reference["budget_gib"] == pytest.approx(budget) and reference["offload_applied"] == "none"
    assert fit["estimate_gib"] <= fit["limit_gib"] and fit["vae_mode"] in ("", "slicing")
    for image in (tmp_path / "store" / "images").glob("fluxs-*/0.json"):  # both sets, generated 4 a call
        assert json.loads(image.read_text())["batch"] == [0, 1, 2, 3]


def test_cells_that_fit_no_recipe_are_refused_red_and_recorded(tmp_path: Path) -> None:
    proc, out = _bench(tmp_path, [*FIDELITY, "--precisions=fp32,w8,w4", "--vram-budget=1e-6"])
    assert proc.returncode == 1, out[-3000:]
    cells = _cells(tmp_path)
    assert set(cells) == {"fluxs-w8-txt2img", "fluxs-w4-txt2img"}  # refused, recorded, and the session went on
    for cell in cells.values():
        assert cell["status"] == "error" and "does not fit --vram-budget 1e-06 GiB" in cell["message"]
        assert "needs --vram-budget" in cell["message"]
    bench_json = tmp_path / "bench.json"
    proc, out = _bench(tmp_path, ["bench/test_efficiency.py", "--generators=fluxs", "--precisions=fp32,w8",
                                  "-k", "effic-fluxs-fp32 or effic-fluxs-w8", "--vram-budget=1e-6",
                                  f"--benchmark-json={bench_json}"])
    assert proc.returncode == 1 and "does not fit --vram-budget" in out, out[-3000:]
    entries = json.loads(bench_json.read_text())["benchmarks"]
    assert len(entries) == 2 and all("does not fit" in e["extra_info"]["memory_fit_refused"] for e in entries)


def test_an_efficiency_cell_records_its_memory_fit(tmp_path: Path) -> None:
    bench_json = tmp_path / "bench.json"
    proc, out = _bench(tmp_path, ["bench/test_efficiency.py", "--generators=fluxs", "--precisions=fp32",
                                  "-k", "effic-fluxs-fp32", "--vram-budget=2", f"--benchmark-json={bench_json}"])
    assert proc.returncode == 0, out[-3000:]
    (entry,) = json.loads(bench_json.read_text())["benchmarks"]
    fit = entry["extra_info"]["memory_fit"]
    assert fit["summary"] == "as is, batch 1" and fit["budget_gib"] == 2.0 and fit["cap"].startswith("none on cpu")
    assert entry["extra_info"]["step_ms"] > 0
