"""End to end: a real degradation of a bench cell fails its baseline with a readable message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CELL = ["--generators", "sd3", "--precisions", "fp32", "--modes", "txt2img", "--detectors", "npr"]


def _bench(tmp: Path, *extra: str, swap: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("QUANTFAKE_RUN_ID", None)
    plugin: list[str] = []
    if swap is not None:  # fault injection through a test plugin (tests/plugins/swap_fakes.py)
        env["QF_TEST_SWAP_FAKES"] = swap
        plugin = ["-p", "tests.plugins.swap_fakes"]
    cmd = [sys.executable, "-m", "pytest", "bench/test_detection.py", "-p", "no:cacheprovider", "-q", *plugin, *CELL,
           "--history", str(tmp / "history"), "--baselines-dir", str(tmp / "baselines"), "--no-report", *extra]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)


@pytest.mark.slow
def test_degraded_cell_fails_its_baseline_and_clean_run_passes(tmp_path: Path) -> None:
    created = _bench(tmp_path, "--update-baselines")
    assert created.returncode == 0, created.stdout[-3000:]
    baseline = json.loads((tmp_path / "baselines" / "tiny.json").read_text())
    assert list(baseline["cells"]) == ["sd3-fp32-txt2img-npr"]

    clean = _bench(tmp_path)
    assert clean.returncode == 0, clean.stdout[-3000:]

    degraded = _bench(tmp_path, swap="0.5")  # half of the fakes replaced by real photographs
    assert degraded.returncode == 1, degraded.stdout[-3000:]
    out = degraded.stdout
    assert "sd3-fp32-txt2img-npr" in out and "auc" in out and "baseline" in out.lower(), out[-3000:]
    record = json.loads(sorted((tmp_path / "history").glob("*.json"))[-1].read_text())
    assert record["cells"][0]["status"] == "failed"
    assert record["cells"][0]["metrics"]["auc"] < baseline["cells"]["sd3-fp32-txt2img-npr"]["metrics"]["auc"]
