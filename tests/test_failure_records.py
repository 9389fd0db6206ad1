"""Failures leave a trace and read as messages (issue 21): run ids that sort by start, cell outcomes of every kind,
expected errors without tracebacks, and a gate that says when it checked tolerances only."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from quantfake.baselines import BenchConfig, check_cell
from quantfake.cells import CellSpec
from quantfake.cli import main
from quantfake.errors import MissingWeightsError
from quantfake.results import CellResult, RunRecorder, list_runs, new_run_id

CELL = CellSpec("detection", "fluxs", "fp32", "txt2img", "npr")


def test_runs_started_in_the_same_second_sort_in_the_order_they_started(tmp_path: Path) -> None:
    now = datetime(2026, 11, 25, 12, 0, 0, tzinfo=timezone.utc)
    in_process = [new_run_id(now) for _ in range(30)]
    assert sorted(in_process) == in_process and len(set(in_process)) == 30
    ids = [new_run_id(now, history_dir=tmp_path) for _ in range(30)]  # the counter of one history, across processes
    assert sorted(ids) == ids and ids[0].split("-")[1] == "000001"
    for run_id in ids[:2]:
        RunRecorder(tmp_path, "tiny", run_id=run_id).finalize(environment={})
    old = RunRecorder(tmp_path, "tiny", run_id="20261124T120000Z-0123abcd").finalize(environment={})
    assert list_runs(tmp_path)[0] == old  # ids of older versions are still read, in time order


def test_a_cell_that_raised_is_recorded_with_what_to_do() -> None:
    from quantfake.errors import CorruptStoreError
    from quantfake.outcomes import outcome_of

    missing = outcome_of(CELL, MissingWeightsError("detector npr", ["/w/NPR.pth"]))
    assert (missing.action, missing.result.status) == ("skip", "skipped") and "/w/NPR.pth" in missing.result.message
    corrupt = outcome_of(CELL, CorruptStoreError("/s/images/k/3.png: bytes changed"))
    assert (corrupt.action, corrupt.result.status) == ("fail", "error") and corrupt.message.startswith(CELL.id)
    bug = outcome_of(CELL, KeyError("x"))
    assert (bug.action, bug.result.status, bug.result.message) == ("raise", "error", "KeyError: 'x'")


def test_the_gate_says_when_it_checked_tolerances_only() -> None:
    config = BenchConfig(gated_metrics=("auc",))
    baseline = {"metrics": {"auc": 0.90}, "se": {"auc": 0.01}}
    without_ci = CellResult(CELL.id, "detection", metrics={"auc": 0.89})  # --n-boot 0: no standard errors
    verdict = check_cell(without_ci, baseline, config)
    assert verdict.ok and "tolerance-only gate" in verdict.message and verdict.details["gate"] == "tolerance-only"
    with_ci = CellResult(CELL.id, "detection", metrics={"auc": 0.89}, se={"auc": 0.01})
    assert check_cell(with_ci, baseline, config).details["gate"] == "statistical"



def test_n_boot_zero_means_no_bootstrap_not_the_default() -> None:
    from quantfake.stats import paired_shift

    rng = np.random.default_rng(0)
    real, ref = rng.normal(0, 1, 20), rng.normal(2, 1, 20)
    shift = paired_shift(real, ref, ref + 0.1, threshold=1.0, n_boot=0)
    assert shift["delta_auc_ci95"] is None and np.isfinite(shift["delta_auc_p_delong"])


def test_the_cli_shows_an_unsafe_checkpoint_as_one_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    class Payload:
        def __reduce__(self):
            return (print, ("this pickle ran code",))

    for folder in ("real", "fake", "weights"):
        (tmp_path / folder).mkdir()
    for i in range(2):
        pixels = np.random.default_rng(i).integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / "real" / f"{i}.png")
        Image.fromarray(255 - pixels).save(tmp_path / "fake" / f"{i}.png")
    torch.save({"model": Payload()}, tmp_path / "weights" / "NPR.pth")
    code = main(["train", "--detector", "npr", "--profile", "pretrained", "--weights-dir", str(tmp_path / "weights"),
                 "--real", str(tmp_path / "real"), "--fake", str(tmp_path / "fake"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("quantfake train: error: ") and "--trust-checkpoints" in err
    assert len(err.strip().splitlines()) == 1 and "this pickle ran code" not in err


def test_a_cell_kind_with_no_cell_in_the_grid_is_skipped_without_an_internal_error(tmp_path: Path) -> None:
    """An empty parameter set (here: no detector precision but fp32) reaches the report hook with pytest's NOTSET
    in place of a cell; on an H100 this used to end the session with an INTERNALERROR (exit 3, read as "new
    baselines" by gpu-bench.sh)."""
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parent.parent
    cmd = [sys.executable, "-m", "pytest", "bench/test_detector_precision.py", "-p", "no:cacheprovider", "-q",
           "--grid", "full", "--generators", "fluxs", "--detector-precisions", "fp32", f"--store={tmp_path / 's'}",
           f"--history={tmp_path / 'h'}", f"--baselines-dir={tmp_path / 'b'}", "--no-report"]
    env = {k: v for k, v in os.environ.items() if k not in ("QUANTFAKE_RUN_ID", "QUANTFAKE_STORE")}
    env.update(PYTHONPATH=str(repo))
    proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert "INTERNALERROR" not in out and proc.returncode in (0, 5), out[-3000:]
    assert "1 skipped" in out, out[-3000:]
