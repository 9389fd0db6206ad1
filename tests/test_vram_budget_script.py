"""scripts/vram_budget_rehearsal.sh (the 24 GiB rehearsal on a GPU), its shell logic run on the tiny profile on the
CPU: a stage per generator, the summary of fit / estimate / s/image, refused cells red, a stage past its timeout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "vram_budget_rehearsal.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                                reason="needs bash and coreutils timeout")


def _run(tmp_path: Path, name: str, **env_vars: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    from quantfake.store import Store
    from quantfake.tiny import ensure_tiny_pipeline

    store = Store(tmp_path / "store")
    ensure_tiny_pipeline("fluxs", store.models_dir)
    out = tmp_path / name
    env = {k: v for k, v in os.environ.items() if k not in ("QUANTFAKE_RUN_ID",)}
    env.update(OUT=str(out), PROFILE="tiny", DEVICE="cpu", GENERATORS="fluxs", PRECISIONS="fp32", STEPS="2",
               PYTHON=sys.executable, QUANTFAKE_STORE=str(store.root), OMP_NUM_THREADS="1", **env_vars)
    proc = subprocess.run(["bash", str(SCRIPT)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    summary = out / "vram_budget_summary.json"
    return proc, json.loads(summary.read_text()) if summary.exists() else {}


def test_a_fitting_cell_is_summarized_with_its_recipe_and_speed(tmp_path: Path) -> None:
    proc, summary = _run(tmp_path, "fits", BUDGET_GIB="1")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    (cell,) = summary["cells"]
    assert cell["generator"] == "fluxs" and cell["status"] == "ran" and cell["memory_fit"] == "as is, batch 1"
    assert cell["budget_gib"] == 1.0 and cell["estimate_gib"] < 1 and cell["s_per_image"] > 0 and cell["steps"] == 2
    assert summary["stages"] == [{"stage": "fluxs", "exit_status": 0, "seconds": summary["stages"][0]["seconds"],
                                  "timed_out": False}]
    assert "| fluxs | fp32 | ran | as is, batch 1 |" in proc.stdout


def test_a_cell_no_recipe_fits_is_red_and_summarized_as_refused(tmp_path: Path) -> None:
    proc, summary = _run(tmp_path, "refused", BUDGET_GIB="0.000001")
    assert proc.returncode == 1, proc.stdout[-3000:]
    (cell,) = summary["cells"]
    assert cell["status"] == "refused: no recipe fits" and "needs --vram-budget" in cell["error"]


def test_a_stage_past_its_timeout_is_stopped_and_reported(tmp_path: Path) -> None:
    proc, summary = _run(tmp_path, "timeout", BUDGET_GIB="1", STAGE_TIMEOUT_S="2", CELL_RESERVE_S="0")
    assert proc.returncode == 124, proc.stdout[-3000:]
    assert summary["stages"][0]["timed_out"] is True and summary["cells"] == []
    assert "stage fluxs: exit 124" in proc.stdout and "(timed out)" in proc.stdout
