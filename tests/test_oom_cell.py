"""An out-of-memory cell is red and recorded as an error in the run record, and the next cell still runs (issue 16)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from quantfake.store import Store

REPO = Path(__file__).resolve().parent.parent


def test_an_oom_cell_is_red_recorded_and_the_others_go_on(tmp_path: Path) -> None:
    from quantfake.tiny import ensure_tiny_pipeline

    store = Store(tmp_path / "store")
    ensure_tiny_pipeline("fluxs", store.models_dir)
    history = tmp_path / "history"
    cmd = [sys.executable, "-m", "pytest", "bench/test_fidelity.py", "-p", "no:cacheprovider", "-q",
           "-p", "tests.plugins.oom_cell", "--generators=fluxs", "--precisions=fp32,w8,w4", "--modes=txt2img",
           "--n-images=4", "--n-real=4", "--n-calibration=4", f"--store={store.root}", f"--history={history}",
           f"--baselines-dir={tmp_path / 'baselines'}", "--update-baselines", "--no-report"]
    env = {k: v for k, v in os.environ.items() if k not in ("QUANTFAKE_RUN_ID", "QUANTFAKE_STORE")}
    env.update(QF_TEST_OOM_PRECISION="w8", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-3000:]
    assert "fluxs-w8-txt2img: out of memory (recorded; other cells go on)" in out
    (record,) = [p for p in history.glob("*.json")]
    cells = {c["cell_id"]: c for c in json.loads(record.read_text())["cells"]}
    assert cells["fluxs-w8-txt2img"]["status"] == "error" and "out of memory" in cells["fluxs-w8-txt2img"]["message"]
    assert cells["fluxs-w4-txt2img"]["status"] == "passed" and cells["fluxs-w4-txt2img"]["metrics"]["psnr"] > 0
    shutil.rmtree(store.root, ignore_errors=True)


def test_an_oom_efficiency_cell_is_red_and_its_json_says_so(tmp_path: Path) -> None:
    bench_json = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "pytest", "bench/test_efficiency.py", "-p", "no:cacheprovider", "-q",
           "-p", "tests.plugins.oom_cell", "--generators=fluxs", "--precisions=w8", "-k", "effic-fluxs-w8",
           f"--store={tmp_path / 'store'}", f"--history={tmp_path / 'history'}", "--no-report",
           f"--benchmark-json={bench_json}"]
    env = {k: v for k, v in os.environ.items() if k not in ("QUANTFAKE_RUN_ID", "QUANTFAKE_STORE")}
    env.update(QF_TEST_OOM_PRECISION="none", QF_TEST_OOM_STEP="1", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "out of memory (recorded in the run record and the benchmark JSON" in out, out[-3000:]
    (entry,) = json.loads(bench_json.read_text())["benchmarks"]
    assert entry["extra_info"]["oom"] is True and "injected" in entry["extra_info"]["oom_error"]
    (record,) = (tmp_path / "history").glob("*.json")
    (cell,) = json.loads(record.read_text())["cells"]  # an error cell: a later compare counts it lost
    assert cell["cell_id"] == "effic-fluxs-w8" and cell["status"] == "error" and "out of memory" in cell["message"]
