"""Efficiency cells end to end (issue 16): timed under ``pytest -n 2`` and recorded in the run record and the
benchmark JSON; a delay injected into one cell fails ``quantfake compare`` naming that cell; and
``pytest-benchmark compare`` on the two autosaved files finds the same cell slower (one timer, one verdict).

Run A is serial, run B has two xdist workers (``--dist loadgroup``, quantfake's scheduler) and the delay
(tests/plugins/slow_cell.py), on the tiny fluxs pipeline's step and end-to-end cells and one detector cell.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from quantfake.results import list_runs, load_run
from quantfake.store import Store

pytest.importorskip("xdist", reason="pytest-xdist is not installed (pip install -e .[dev])")

REPO = Path(__file__).resolve().parent.parent
SLOW_CELL = "effic-fluxs-w8"
#: two generator x precision groups of two cells and a one-cell group (three work units for two workers)
CELLS = {"effic-fluxs-fp32", "effic-fluxs-w8", "effic-e2e-fluxs-fp32-b1", "effic-e2e-fluxs-w8-b1", "effic-det-npr-fp32-b1"}
#: both tools call a cell slower beyond +200 %; the 300 ms delay makes a ~10 ms tiny step 30x slower, while a
#: serial run against a two-worker run on a shared 2-core CPU moves the other cells by well under 3x
TOLERANCE = 2.0


def _bench(root: Path, name: str, *extra: str, env_extra: dict[str, str] | None = None) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "pytest", "bench/test_efficiency.py", "-p", "no:cacheprovider", "-q",
           "--generators=fluxs", "--precisions=fp32,w8", "-k", "effic-fluxs or effic-e2e-fluxs or effic-det-npr-fp32-b1",
           f"--store={root / 'store'}", f"--history={root / 'history'}", "--no-report",
           f"--benchmark-storage=file://{root / 'benchmarks'}", "--benchmark-autosave",
           f"--benchmark-json={root / f'{name}.json'}", *extra]
    env = {k: v for k, v in os.environ.items() if k not in ("QUANTFAKE_RUN_ID", "QUANTFAKE_STORE")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), **(env_extra or {}))
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    return {"out": out, "json": json.loads((root / f"{name}.json").read_text()), "record": load_run(list_runs(root / "history")[-1])}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    from quantfake.tiny import ensure_tiny_pipeline

    root = tmp_path_factory.mktemp("effic_gate")
    ensure_tiny_pipeline("fluxs", Store(root / "store").models_dir)
    base = _bench(root, "a")
    slowed = _bench(root, "b", "-n", "2", "--dist", "loadgroup", "-p", "tests.plugins.slow_cell",
                    env_extra={"QF_TEST_SLOW_CELL": SLOW_CELL, "QF_TEST_SLOW_MS": "300"})
    return root, base, slowed


def test_xdist_workers_time_and_record_efficiency_cells(runs) -> None:
    _root, _base, slowed = runs
    assert "automatically disabled" not in slowed["out"]
    cells = {c["cell_id"]: c for c in slowed["record"]["cells"]}
    assert set(cells) == CELLS and all(c["kind"] == "efficiency" and c["status"] == "passed" for c in cells.values())
    benchmarks = {b["param"]: b for b in slowed["json"]["benchmarks"]}
    assert set(benchmarks) == CELLS
    worker = {cell_id: b["extra_info"]["worker"] for cell_id, b in benchmarks.items()}
    assert set(worker.values()) == {"gw0", "gw1"}  # both workers timed
    for precision in ("fp32", "w8"):  # a pipeline's step and end-to-end cells share one worker (loadgroup)
        assert worker[f"effic-fluxs-{precision}"] == worker[f"effic-e2e-fluxs-{precision}-b1"]
    for cell_id, cell in cells.items():
        stats = benchmarks[cell_id]["stats"]
        assert len(stats["data"]) == cell["n"]["latency_ms"] >= 3  # every round, with a CI
        assert cell["metrics"]["latency_ms"] == pytest.approx(stats["median"] * 1e3)  # one timer
        low, high = cell["ci95"]["latency_ms"]
        assert 0 < low <= high and cell["metrics"]["peak_rss_gib"] > 0


def test_compare_fails_on_the_delayed_cell_and_names_it(runs) -> None:
    root, _base, _slowed = runs
    proc = subprocess.run([sys.executable, "-m", "quantfake.cli", "compare", "previous", "latest",
                           "--history", str(root / "history"), "--efficiency-tolerance", f"latency_ms={TOLERANCE}"],
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    flagged = [line for line in proc.stdout.splitlines() if "REGRESSION" in line]
    assert len(flagged) == 1 and flagged[0].startswith(SLOW_CELL) and "latency_ms" in flagged[0], proc.stdout


def test_pytest_benchmark_compare_agrees_on_which_cells_are_slower(runs) -> None:
    root, base, slowed = runs
    files = sorted((root / "benchmarks").glob("*/*.json"))
    assert len(files) == 2, files  # the two autosaved runs (the xdist one written once, by the controller)
    proc = subprocess.run([sys.executable, "-m", "pytest_benchmark", "--storage", f"file://{root / 'benchmarks'}",
                           "compare", *map(str, files), "--between=median"],
                          cwd=root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    change = {m["cell"]: float(m["pct"]) for m in re.finditer(
        r"\[(?P<cell>[^\]]+)\]\s+[\d,.]+\s+[\d,.]+\s+(?P<pct>[+-][\d.]+)%", proc.stdout)}
    assert set(change) == CELLS, proc.stdout
    slower_by_pytest_benchmark = {c for c, pct in change.items() if pct > TOLERANCE * 100}
    from quantfake.baselines import BenchConfig
    from quantfake.compare import compare_runs

    rows = compare_runs(base["record"], slowed["record"], BenchConfig(), efficiency_tolerances={"latency_ms": TOLERANCE})
    slower_by_quantfake = {r["cell_id"] for r in rows if r["metric"] == "latency_ms" and r["regression"]}
    assert slower_by_pytest_benchmark == slower_by_quantfake == {SLOW_CELL}
