"""Baseline lifecycle: config, gate, missing baselines, atomic partial updates."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from quantfake import baselines as B
from quantfake.metrics import compute_metrics
from quantfake.results import CellResult
from quantfake.stats import bootstrap_metrics


def make_cell(cell_id: str, seed: int, swap_fraction: float = 0.0, n: int = 150) -> CellResult:
    """A detection cell from synthetic scores; ``swap_fraction`` of the fakes are replaced by reals."""
    rng = np.random.default_rng(seed)
    real = rng.normal(0, 1, n)
    fake = rng.normal(2.5, 1, n)
    n_swap = int(round(swap_fraction * n))
    fake[:n_swap] = rng.normal(0, 1, n_swap)
    y = np.r_[np.zeros(n, int), np.ones(n, int)]
    s = np.r_[real, fake]
    cal = rng.normal(0, 1, n)
    point = compute_metrics(y, s, fixed_threshold=1.0, calibration_real_scores=cal)
    ivs = bootstrap_metrics(y, s, fixed_threshold=1.0, calibration_real_scores=cal, n_boot=150, seed=0)
    return CellResult(
        cell_id=cell_id, kind="detection", params={"generator": "toy", "precision": "fp16"},
        metrics=point, ci95={k: iv.as_list() for k, iv in ivs.items()}, se={k: iv.se for k, iv in ivs.items()},
        n={"real": n, "fake": n},
    )


@pytest.fixture(scope="module")
def cells() -> dict[str, CellResult]:
    return {
        "base": make_cell("toy-fp16-txt2img-npr", seed=0),
        "rerun": make_cell("toy-fp16-txt2img-npr", seed=1),
        "degraded": make_cell("toy-fp16-txt2img-npr", seed=1, swap_fraction=0.4),
    }


def _entry(cell: CellResult) -> dict:
    return {"metrics": cell.metrics, "ci95": cell.ci95, "se": cell.se, "n": cell.n}


def test_gate_passes_on_a_fresh_sample_of_the_same_detector(cells) -> None:
    config = B.BenchConfig(gated_metrics=("auc", "ap", "eer"))
    v = B.check_cell(cells["rerun"], _entry(cells["base"]), config)
    assert v.ok, v.message
    assert set(v.details["checks"]) == {"auc", "ap", "eer"}


def test_gate_fails_readably_when_fakes_are_swapped_for_reals(cells) -> None:
    config = B.BenchConfig(gated_metrics=("auc", "eer"), tolerances={"auc": 0.02, "eer": 0.02})
    base, bad = cells["base"], cells["degraded"]
    v = B.check_cell(bad, _entry(base), config)
    assert not v.ok
    msg = v.message
    assert "auc" in msg and "eer" in msg  # EER rises: the direction comes from the registry
    assert f"{base.metrics['auc']:.4f}" in msg and f"{bad.metrics['auc']:.4f}" in msg
    lo, hi = bad.ci95["auc"]
    assert f"{lo:.4f}" in msg and f"{hi:.4f}" in msg
    assert "tolerance 0.0200" in msg and "p=" in msg
    assert v.details["checks"]["auc"]["p"] < 0.05


def test_large_but_insignificant_drop_passes() -> None:
    # drop 0.05 > tolerance, but SEs of 0.05 each make it noise (z ~ 0.7)
    chk = B.check_metric("auc", 0.90, 0.85, se_baseline=0.05, se_new=0.05, tolerance=0.02, alpha=0.05)
    assert not chk.regression and chk.p > 0.05
    # significant but within tolerance passes too
    chk = B.check_metric("auc", 0.900, 0.890, se_baseline=0.001, se_new=0.001, tolerance=0.02, alpha=0.05)
    assert chk.p < 0.05 and not chk.regression
    # both: fails
    chk = B.check_metric("auc", 0.90, 0.80, se_baseline=0.01, se_new=0.01, tolerance=0.02, alpha=0.05)
    assert chk.regression
    assert chk.z == pytest.approx(0.10 / math.hypot(0.01, 0.01))


def test_missing_se_falls_back_to_tolerance_and_says_so() -> None:
    chk = B.check_metric("auc", 0.9, 0.8, se_baseline=None, se_new=float("nan"), tolerance=0.02, alpha=0.05)
    assert chk.regression and "standard error missing" in chk.note


def test_missing_baseline_fails_with_instructions(cells) -> None:
    v = B.check_cell(cells["base"], None, B.BenchConfig(), profile="tiny")
    assert not v.ok
    assert "no baseline" in v.message
    assert "pytest bench --update-baselines" in v.message and "toy-fp16-txt2img-npr" in v.message


def test_missing_gated_metric_fails(cells) -> None:
    cell = cells["base"].to_dict()
    del cell["metrics"]["auc"]
    v = B.check_cell(cell, _entry(cells["base"]), B.BenchConfig())
    assert not v.ok and "auc: gated metric missing" in v.message


def test_load_config_from_pyproject(tmp_path: Path) -> None:
    pp = tmp_path / "pyproject.toml"
    pp.write_text(
        '[tool.quantfake]\nalpha = 0.01\ngated_metrics = ["auc", "acc_calibrated"]\n'
        'tolerances = {auc = 0.03, acc_calibrated = 0.05}\nsomeone_elses_key = 1\n'
    )
    cfg = B.load_config(pp)
    assert cfg.alpha == 0.01 and cfg.gated_metrics == ("auc", "acc_calibrated")
    assert cfg.tolerance("auc") == 0.03 and cfg.tolerance("ap") == B.DEFAULT_TOLERANCES["ap"]
    assert B.load_config(tmp_path / "missing.toml") == B.BenchConfig()
    assert B.BenchConfig().tolerance("auc") == 0.02
    pp.write_text('[tool.quantfake]\ngated_metrics = ["aucc"]\n')
    with pytest.raises(ValueError, match="aucc.*accepted"):
        B.load_config(pp)
    with pytest.raises(ValueError, match="threshold_oracle"):
        B.BenchConfig(gated_metrics=("threshold_oracle",))


def test_update_rewrites_only_given_cells(tmp_path: Path, cells) -> None:
    path = B.baseline_path(tmp_path / "baselines", "tiny")
    other = make_cell("other-cell", seed=5)
    diff = B.update_baselines(path, [cells["base"], other], versions={"torch": "2.13"})
    assert "toy-fp16-txt2img-npr: new baseline" in diff
    before = json.loads(path.read_text())
    assert before["schema"] == 1 and before["profile"] == "tiny"
    assert set(before["cells"]) == {"toy-fp16-txt2img-npr", "other-cell"}
    assert before["cells"]["other-cell"]["versions"] == {"torch": "2.13"}

    diff = B.update_baselines(path, [cells["degraded"]])
    after = json.loads(path.read_text())
    assert after["cells"]["other-cell"] == before["cells"]["other-cell"]
    assert after["cells"]["toy-fp16-txt2img-npr"]["metrics"]["auc"] == pytest.approx(cells["degraded"].metrics["auc"])
    old_auc, new_auc = cells["base"].metrics["auc"], cells["degraded"].metrics["auc"]
    assert f"auc: {old_auc:.4f} -> {new_auc:.4f}" in diff
    assert not list(path.parent.glob("*.tmp"))
    # The stored entry works as a baseline for check_cell.
    assert B.check_cell(cells["degraded"], after["cells"]["toy-fp16-txt2img-npr"], B.BenchConfig()).ok


def test_bad_profile_name() -> None:
    with pytest.raises(ValueError, match="profile"):
        B.baseline_path("baselines", "../etc")


def test_gated_metrics_per_cell_kind(cells) -> None:
    config = B.BenchConfig(gated_metrics={"detection": ("auc",), "fidelity": ("psnr",)})
    fid_base = {"cell_id": "sd3-nf4-fid", "kind": "fidelity", "metrics": {"psnr": 30.0}, "se": {"psnr": 0.2}}
    fid_new = {**fid_base, "metrics": {"psnr": 25.0}}
    v = B.check_cell(fid_new, fid_base, config)
    assert not v.ok and "psnr: baseline 30.0000 -> new 25.0000" in v.message
    assert B.check_cell(fid_base, fid_base, config).ok
    # "auc" does not apply to fidelity cells under a flat list, but a gate that checks nothing fails
    flat = B.BenchConfig(gated_metrics=("auc",))
    v = B.check_cell(fid_base, fid_base, flat)
    assert not v.ok and "none of the gated metrics" in v.message
    assert not B.check_cell(cells["degraded"], _entry(cells["base"]), config).ok
    other_kind = {**fid_base, "kind": "latency"}
    assert "no gated metrics" in B.check_cell(other_kind, fid_base, config).message


def test_repository_pyproject_config_loads() -> None:
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    if not pyproject.is_file():
        pytest.skip("no pyproject.toml in this checkout")
    cfg = B.load_config(pyproject)
    assert 0 < cfg.alpha < 1 and cfg.gated_for("detection")


def test_update_baselines_writes_numbers_only_skipped_and_errored_cells_get_no_entry(tmp_path) -> None:
    """A cell skipped on this machine (e.g. a CUDA-only precision in CI) measured nothing: no empty entry."""
    import dataclasses

    from quantfake.options import build_options
    from quantfake.results import CellResult, RunRecorder
    from quantfake.session.finish import finish_session

    o = dataclasses.replace(build_options({"store": str(tmp_path / "store")}), history=tmp_path / "history",
                            baselines_dir=tmp_path / "baselines", update_baselines=True, report=False)
    run_id = "20261126T000000Z-000001-abcd"
    recorder = RunRecorder(o.history, o.profile, o.as_record(), run_id=run_id)
    recorder.add(CellResult("a-passed", "detection", metrics={"auc": 0.9}))
    recorder.add(CellResult("b-skipped", "detection", status="skipped", message="needs CUDA"))
    recorder.add(CellResult("c-error", "detection", status="error", message="boom"))
    finish_session(o, run_id)
    written = json.loads((tmp_path / "baselines" / f"{o.profile}.json").read_text())["cells"]
    assert list(written) == ["a-passed"] and written["a-passed"]["metrics"] == {"auc": 0.9}
