"""End to end (issue 21): faults in a bench session are named, recorded in the run record and shown in the summary.

One warm store (a cell's fakes, the tiny detector, a baseline) is built once; each test runs the bench once more
against a copy of it with one fault.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
CELL = ["--generators", "fluxs", "--precisions", "fp32", "--modes", "txt2img", "--detectors", "npr",
        "--n-images", "8", "--n-real", "8", "--n-calibration", "8"]
CELL_ID = "fluxs-fp32-txt2img-npr"
pytestmark = pytest.mark.slow


def _bench(root: Path, *extra: str, store: Path | None = None, env: dict[str, str] | None = None,
           test: str = "bench/test_detection.py") -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "pytest", test, "-p", "no:cacheprovider", "-q", *CELL,
           "--store", str(store or root / "store"), "--history", str(root / "history"),
           "--baselines-dir", str(root / "baselines"), "--no-report", *extra]
    environ = {k: v for k, v in os.environ.items() if k not in ("QUANTFAKE_RUN_ID", "QUANTFAKE_STORE")}
    environ.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", **(env or {}))
    return subprocess.run(cmd, cwd=ROOT, env=environ, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def warm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("warm")
    proc = _bench(root, "--update-baselines")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root


@pytest.fixture
def run_dir(warm: Path, tmp_path: Path) -> Path:
    """A copy of the warm store, history and baselines."""
    for part in ("store", "history", "baselines"):
        shutil.copytree(warm / part, tmp_path / part, ignore=shutil.ignore_patterns("*.lock"))
    return tmp_path


def _latest(root: Path) -> dict[str, Any]:
    return json.loads(sorted((root / "history").glob("*.json"))[-1].read_text())


def test_a_replaced_store_image_is_regenerated_and_reported(run_dir: Path) -> None:
    (folder,) = [p for p in (run_dir / "store" / "images").glob("fluxs-fp32-txt2img-*") if (p / "7.png").exists()]
    png = folder / "3.png"
    Image.new("RGB", (64, 64), (0, 128, 0)).save(png)
    replaced = hashlib.sha256(png.read_bytes()).hexdigest()
    proc = _bench(run_dir)
    assert proc.returncode == 0, proc.stdout[-3000:]
    manifest = json.loads((folder / "3.json").read_text())  # rewritten with the entry (bitwise the same on CPU)
    assert hashlib.sha256(png.read_bytes()).hexdigest() == manifest["sha256"] != replaced, "not regenerated"
    (notice,) = [n for n in _latest(run_dir)["notices"] if n["kind"] == "store_repair"]
    assert notice["path"] == str(png) and "truncated or replaced" in notice["reason"]
    assert f"notice: regenerated corrupt store entry {png}" in proc.stdout


def test_too_few_real_images_fail_with_the_reason_in_the_record(run_dir: Path, tmp_path: Path) -> None:
    reals = tmp_path / "reals"
    reals.mkdir()
    for i in range(6):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(reals / f"{i}.png")
    Image.new("RGB", (1, 1)).save(reals / "dot.png")
    (reals / "broken.png").write_bytes((reals / "0.png").read_bytes()[:100])
    proc = _bench(run_dir, "--real-dir", str(reals), "--n-real", "16")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-3000:]
    record = _latest(run_dir)
    (cell,) = record["cells"]
    assert cell["status"] == "error" and "too few usable real images (6; 2 excluded)" in cell["message"]
    (excluded,) = [n for n in record["notices"] if n["kind"] == "real_images_excluded"]
    assert sorted(Path(f["path"]).name for f in excluded["files"]) == ["broken.png", "dot.png"]
    assert "excluded 2 real image file(s)" in proc.stdout and "Traceback" not in out


@pytest.mark.parametrize("where", ["compute", "setup"])
def test_a_run_where_every_cell_raises_is_recorded_and_compared(run_dir: Path, where: str) -> None:
    if where == "compute":
        assert _bench(run_dir).returncode == 0  # a second good run: "previous" must be it, not the one before
    broken = _bench(run_dir, "-p", "tests.plugins.broken_cells", env={"QF_TEST_BREAK": where})
    assert broken.returncode == 1, broken.stdout[-3000:]
    record = _latest(run_dir)
    (cell,) = record["cells"]
    assert cell["cell_id"] == CELL_ID and cell["status"] == "error" and "injected" in cell["message"]
    assert "(1 cells: 1 error)" in broken.stdout
    if where == "setup":
        return
    compare = subprocess.run([sys.executable, "-m", "quantfake.cli", "compare", "previous", "latest", "--history",
                              str(run_dir / "history")], cwd=ROOT, capture_output=True, text=True, timeout=300,
                             env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert compare.returncode == 1 and f"B = {record['run_id']}" in compare.stdout, compare.stdout + compare.stderr


def test_an_unsafe_checkpoint_is_one_message_not_a_traceback(tmp_path: Path) -> None:
    class Payload:
        def __reduce__(self):
            return (print, ("this pickle ran code",))

    (tmp_path / "weights").mkdir()
    torch.save({"model": Payload()}, tmp_path / "weights" / "NPR.pth")
    proc = _bench(tmp_path, "--profile", "pretrained", "--weights-dir", str(tmp_path / "weights"))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-3000:]
    assert "NPR.pth is a pickle that needs code execution" in out and "--trust-checkpoints" in out
    assert "Traceback" not in out and "this pickle ran code" not in out
    assert len(proc.stdout.splitlines()) < 40, proc.stdout
    (cell,) = _latest(tmp_path)["cells"]
    assert cell["status"] == "error" and "--trust-checkpoints" in cell["message"]


def test_n_boot_zero_records_a_tolerance_only_gate(run_dir: Path) -> None:
    proc = _bench(run_dir, "--n-boot", "0")
    assert proc.returncode == 0, proc.stdout[-3000:]
    (cell,) = _latest(run_dir)["cells"]
    assert cell["ci95"] == {} and cell["extra"]["gate"] == "tolerance-only"
    assert "tolerance-only gate" in cell["message"] and "1 cell(s) had a tolerance-only gate" in proc.stdout
