"""Run records (schema, multi-process merge, aliases) and ``quantfake compare``."""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from quantfake import compare as C
from quantfake.baselines import BenchConfig
from quantfake.environment import collect_environment
from quantfake.results import CellResult, RunRecorder, list_runs, load_run, new_run_id

ENV = {"python": "3.11", "platform": "test", "packages": {}, "torch": None, "cuda": None, "gpu": None,
       "git_revision": None, "hostname": "test"}


def _cell(cell_id: str, auc: float, se: float = 0.01, **kw) -> CellResult:
    return CellResult(cell_id=cell_id, kind="detection",
                      params={"generator": "sd3", "precision": "nf4", "mode": "txt2img", "detector": "npr"},
                      metrics={"auc": auc, "ap": auc, "eer": 1 - auc}, ci95={"auc": [auc - 2 * se, auc + 2 * se]},
                      se={"auc": se, "ap": se, "eer": se}, n={"real": 100, "fake": 100}, **kw)


def test_run_id_format_and_order() -> None:
    rid = new_run_id()
    assert re.fullmatch(r"\d{8}T\d{6}Z-\d{6}-[0-9a-f]{4}", rid)
    assert new_run_id() != rid


def test_cell_roundtrip_is_strict_json() -> None:
    cell = _cell("sd3-nf4-txt2img-npr", np.float64(0.8), paired={"delta_auc": np.float32(-0.01), "reference_precision": "fp32"},
                 scores={"real": np.arange(3.0), "fake": [0.5]})
    cell.metrics["precision_fixed"] = math.nan
    d = cell.to_dict()
    text = json.dumps(d, allow_nan=False)  # raises on NaN
    back = CellResult.from_dict(json.loads(text))
    assert math.isnan(back.metrics["precision_fixed"])
    assert back.metrics["auc"] == pytest.approx(0.8)
    assert back.scores == {"real": [0.0, 1.0, 2.0], "fake": [0.5]}
    assert list(d) == ["cell_id", "kind", "params", "status", "message", "metrics", "ci95", "se", "n",
                       "paired", "scores", "timings", "extra"]
    with pytest.raises(ValueError, match="accepted"):
        CellResult(cell_id="x", kind="detection", status="ok")


def _worker(args: tuple[str, str, int]) -> None:
    history, run_id, i = args
    RunRecorder(history, "tiny", run_id=run_id).add(_cell(f"cell-{i:02d}", 0.5 + i / 100))


def test_cells_from_several_processes_merge_into_one_record(tmp_path: Path) -> None:
    rec = RunRecorder(tmp_path, "tiny", options={"seeds": 4})
    with mp.get_context("spawn").Pool(2) as pool:
        pool.map(_worker, [(str(tmp_path), rec.run_id, i) for i in range(6)])
    rec.add(_cell("cell-00", 0.99))  # re-adding keeps the last version
    path = rec.finalize(environment=ENV, benchmark_json="bench.json")
    assert path == tmp_path / f"{rec.run_id}.json"
    record = json.loads(path.read_text())
    assert record["schema"] == 1 and record["profile"] == "tiny" and record["options"] == {"seeds": 4}
    assert [c["cell_id"] for c in record["cells"]] == [f"cell-{i:02d}" for i in range(6)]
    assert record["cells"][0]["metrics"]["auc"] == 0.99
    assert record["benchmark_json"] == "bench.json"
    assert not rec.partial_dir.exists()
    assert set(record) == {"schema", "run_id", "created", "profile", "options", "environment", "cells", "notices",
                           "benchmark_json"}


def test_collect_environment_has_schema_keys() -> None:
    env = collect_environment()
    for key in ("python", "platform", "packages", "torch", "cuda", "gpu", "git_revision", "hostname"):
        assert key in env
    assert "numpy" in env["packages"]


def _write_run(history: Path, run_id: str, cells: list[CellResult]) -> Path:
    rec = RunRecorder(history, "tiny", run_id=run_id)
    for c in cells:
        rec.add(c)
    return rec.finalize(environment=ENV)


def test_load_run_aliases(tmp_path: Path) -> None:
    p1 = _write_run(tmp_path, "20260101T000000Z-00000001", [_cell("a", 0.9)])
    p2 = _write_run(tmp_path, "20260102T000000Z-00000002", [_cell("a", 0.8)])
    assert [p.name for p in list_runs(tmp_path)] == [p1.name, p2.name]
    assert load_run("latest", tmp_path)["run_id"] == "20260102T000000Z-00000002"
    assert load_run("previous", tmp_path)["run_id"] == "20260101T000000Z-00000001"
    assert load_run(p1)["run_id"] == "20260101T000000Z-00000001"
    assert load_run("20260101T000000Z-00000001", tmp_path)["cells"][0]["cell_id"] == "a"
    with pytest.raises(FileNotFoundError, match="accepted"):
        load_run("nope", tmp_path)
    with pytest.raises(FileNotFoundError, match="previous"):
        load_run("previous", tmp_path / "empty")


@pytest.fixture()
def two_runs(tmp_path: Path) -> Path:
    _write_run(tmp_path, "20260101T000000Z-0000000a", [_cell("c1", 0.95), _cell("c2", 0.90), _cell("gone", 0.7)])
    _write_run(tmp_path, "20260102T000000Z-0000000b", [_cell("c1", 0.95), _cell("c2", 0.80), _cell("new", 0.7)])
    _write_run(tmp_path, "20260103T000000Z-0000000c", [_cell("c1", 0.95), _cell("c2", 0.90), _cell("gone", 0.7)])
    return tmp_path


def test_compare_rows_flag_the_planted_regression(two_runs: Path) -> None:
    a = load_run("20260101T000000Z-0000000a", two_runs)
    b = load_run("20260102T000000Z-0000000b", two_runs)
    rows = C.compare_runs(a, b, BenchConfig(), metrics=["auc", "eer"])
    by = {(r["cell_id"], r["metric"]): r for r in rows}
    assert set(by) == {("c1", "auc"), ("c1", "eer"), ("c2", "auc"), ("c2", "eer")}
    assert by[("c2", "auc")]["regression"] and by[("c2", "eer")]["regression"]
    assert by[("c2", "auc")]["delta"] == pytest.approx(-0.10)
    assert not by[("c1", "auc")]["regression"]
    assert len(C.rows_to_frame(rows)) == 4


def test_compare_cli_exit_codes(two_runs: Path, capsys) -> None:
    h = ["--history", str(two_runs), "--pyproject", str(two_runs / "none.toml")]
    assert C.main(["20260101T000000Z-0000000a", "20260102T000000Z-0000000b", *h]) == 1
    out = capsys.readouterr().out
    assert "REGRESSION" in out and "c2" in out and "cells only in A: gone" in out and "cells only in B: new" in out
    assert C.main(["20260101T000000Z-0000000a", "latest", *h]) == 0  # identical numbers
    assert "REGRESSION" not in capsys.readouterr().out
    assert C.main(["previous", "latest", *h, "--metric", "all"]) == 1  # 'new' of the previous run is missing
    out = capsys.readouterr().out
    assert "improved" in out and "new" in out and "did not run in B: FAIL" in out
    assert C.main(["previous", "latest", *h, "--metric", "all", "--allow-missing"]) == 0  # an improvement passes
    assert "allowed (--allow-missing)" in capsys.readouterr().out
    assert C.main(["missing.json", "latest", *h]) == 2
    assert "no run record" in capsys.readouterr().err
    assert C.main(["latest", "latest", *h, "--metric", "aucc"]) == 2
    assert C.main(["only-one-arg"]) == 2


def test_compare_fails_on_cells_lost_in_the_new_run(tmp_path: Path, capsys) -> None:
    """A cell that ran in the base and is missing, skipped or errored in the new run fails the gate (issue 16)."""
    base = [_cell("kept", 0.9), _cell("dropped", 0.9), _cell("skipped", 0.9), _cell("errored", 0.9)]
    new = [_cell("kept", 0.9), replace(_cell("skipped", 0.9), status="skipped", message="bitsandbytes missing"),
           replace(_cell("errored", 0.9), status="error", message="out of memory")]
    _write_run(tmp_path, "20260101T000000Z-0000000a", base)
    _write_run(tmp_path, "20260102T000000Z-0000000b", new)
    a, b = load_run("previous", tmp_path), load_run("latest", tmp_path)
    lost = dict(C.lost_cells(a, b))
    assert set(lost) == {"dropped", "skipped", "errored"}
    assert "missing" in lost["dropped"] and "bitsandbytes" in lost["skipped"] and "out of memory" in lost["errored"]
    h = ["--history", str(tmp_path), "--pyproject", str(tmp_path / "none.toml")]
    assert C.main(["previous", "latest", *h]) == 1
    assert "3 cell(s) of A did not run in B" in capsys.readouterr().out
    assert C.main(["previous", "latest", *h, "--allow-missing"]) == 0
    assert C.lost_cells(b, a) == []  # cells that did not run in the base are not owed by the new run


def test_compare_controls_the_false_discovery_rate() -> None:
    """One borderline drop (p ~ 0.03) among 40 unchanged cells is not flagged after Benjamini-Hochberg; the same
    drop alone is; a large drop still is among many."""
    def run(cells):
        return {"run_id": "r", "cells": [c.to_dict() for c in cells]}

    unchanged = [_cell(f"c{i:02d}", 0.90, se=0.01) for i in range(40)]
    borderline_a, borderline_b = _cell("edge", 0.90, se=0.0158), _cell("edge", 0.845, se=0.0158)  # drop 0.055
    config = BenchConfig()
    alone = C.compare_runs(run([borderline_a]), run([borderline_b]), config, metrics=["auc"])
    assert alone[0]["p"] < 0.05 and alone[0]["regression"]
    many = C.compare_runs(run(unchanged + [borderline_a]), run(unchanged + [borderline_b]), config, metrics=["auc"])
    edge = next(r for r in many if r["cell_id"] == "edge")
    assert edge["p"] < 0.05 < edge["q"] and not edge["regression"]
    big_a, big_b = _cell("big", 0.95, se=0.01), _cell("big", 0.70, se=0.01)
    rows = C.compare_runs(run(unchanged + [big_a]), run(unchanged + [big_b]), config, metrics=["auc"])
    assert next(r for r in rows if r["cell_id"] == "big")["regression"]
