"""The bench under pytest-xdist (``-n 2 --dist loadgroup``) records the same cells and numbers as ``-n 0``.

Workers write one file per cell; the controller must merge them into one run record. Two precisions give two
xdist groups, so both workers load the shared fp32 reference at once and race for it on one store.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("xdist", reason="pytest-xdist is not installed (pip install -e .[dev])")

from quantfake.cells import fidelity_cells  # noqa: E402
from quantfake.options import build_options  # noqa: E402
from quantfake.results import list_runs, load_run  # noqa: E402
from quantfake.store import Store  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SLICE = {"generators": "sd3", "precisions": "fp32,fp16,bf16", "modes": "txt2img", "n_images": "4"}


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny sd3 pipeline built once and copied into each run's store (building it is the slow part)."""
    from quantfake.tiny import ensure_tiny_pipeline

    models = Store(tmp_path_factory.mktemp("models")).models_dir
    ensure_tiny_pipeline("sd3", models)
    return models


def _bench(workers: int, root: Path, models: Path) -> tuple[subprocess.CompletedProcess[str], Path]:
    """One ``pytest bench/test_fidelity.py`` session on a fresh store; returns the process and its history."""
    store, history = root / "store", root / "history"
    shutil.copytree(models, store / "models", ignore=shutil.ignore_patterns("*.lock"))
    cmd = [sys.executable, "-m", "pytest", "bench/test_fidelity.py", "-p", "no:cacheprovider", "-q",
           "-n", str(workers), "--dist", "loadgroup", *(f"--{k.replace('_', '-')}={v}" for k, v in SLICE.items()),
           f"--store={store}", f"--history={history}", f"--baselines-dir={root / 'baselines'}",
           "--update-baselines", "--no-report", "--cpu-affinity=none"]  # threads as OMP_NUM_THREADS says
    env = {k: v for k, v in os.environ.items() if k not in ("QUANTFAKE_RUN_ID", "QUANTFAKE_STORE")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")  # same numerics in every process, no oversubscription
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    return proc, history


def _only_record(proc: subprocess.CompletedProcess[str], history: Path) -> dict[str, Any]:
    tail = (proc.stdout + proc.stderr)[-3000:]
    assert proc.returncode == 0, f"bench exited {proc.returncode}:\n{tail}"
    runs = list_runs(history)
    assert len(runs) == 1, f"expected one merged run record in {history}, found {runs}:\n{tail}"
    partial = history / ".partial"
    assert not partial.exists() or not any(partial.iterdir()), "unmerged cell files were left behind"
    return load_run(runs[0])


def test_xdist_run_records_the_same_cells_and_metrics_as_a_serial_run(tmp_path: Path, tiny_models: Path) -> None:
    expected = sorted(c.id for c in fidelity_cells(build_options(SLICE)))
    assert len(expected) == 2, "the slice must give one cell per xdist group"

    serial = _only_record(*_bench(0, tmp_path / "serial", tiny_models))
    parallel = _only_record(*_bench(2, tmp_path / "xdist", tiny_models))

    cells = {}
    for name, record in (("serial", serial), ("xdist", parallel)):
        by_id = {c["cell_id"]: c for c in record["cells"]}
        assert sorted(by_id) == expected, f"{name} run recorded {sorted(by_id)}"
        assert all(c["status"] != "error" for c in by_id.values())
        cells[name] = by_id
    for cell_id in expected:
        s, x = cells["serial"][cell_id], cells["xdist"][cell_id]
        assert s["extra"]["generation_key"] == x["extra"]["generation_key"]
        assert s["metrics"] == x["metrics"], f"{cell_id}: metrics differ between -n 0 and -n 2"
        assert s["ci95"] == x["ci95"]
