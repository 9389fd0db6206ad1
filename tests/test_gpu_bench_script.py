"""scripts/gpu-bench.sh (what the GPU workflow runs), rehearsed on the tiny profile: first run writes baselines and
exits 3, the second passes the gate, and a run that loses a cell fails it (issue 16)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from quantfake.store import Store

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "gpu-bench.sh"


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_first_run_writes_baselines_second_passes_a_lost_cell_fails(tmp_path: Path) -> None:
    from quantfake.tiny import ensure_tiny_pipeline

    store = Store(tmp_path / "store")
    ensure_tiny_pipeline("fluxs", store.models_dir)
    env = {k: v for k, v in os.environ.items() if k not in ("QUANTFAKE_RUN_ID", "QUANTFAKE_STORE")}
    bin_dir = str(Path(sys.executable).parent)
    env.update(PROFILE="tiny", HISTORY=str(tmp_path / "history"), BASELINES_DIR=str(tmp_path / "baselines"),
               BENCH_PATHS="bench/test_fidelity.py",
               NUM_GPUS="0", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), PATH=f"{bin_dir}:{env.get('PATH', '')}")

    def run(precisions: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(SCRIPT), "-p", "no:cacheprovider", "-q",
                               "--generators=fluxs", f"--precisions={precisions}", "--modes=txt2img", "--n-images=4",
                               f"--store={store.root}", "--no-report"],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=300)

    first = run("fp32,w8,w4")
    assert first.returncode == 3, first.stdout[-2000:] + first.stderr[-2000:]
    assert (tmp_path / "baselines" / "tiny.json").exists() and "git add" in first.stdout
    second = run("fp32,w8,w4")
    assert second.returncode == 0, second.stdout[-2000:]
    assert "0 significant regression(s)" in second.stdout
    lost = run("fp32,w8")  # fluxs-w4-txt2img ran before and is gone now
    assert lost.returncode == 1 and "fluxs-w4-txt2img" in lost.stdout and "missing from the new run" in lost.stdout
