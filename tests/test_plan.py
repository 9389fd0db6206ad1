"""quantfake plan: recorded per-image costs -> predicted wall time on N GPUs (longest group first)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from quantfake.plan import Costs, costs_from_files, image_seconds, main, plan_grid


def _record(path: Path) -> Path:
    cells = []
    t = 1000.0
    for g, p, per_image in (("sd3", "bf16", 2.0), ("sdxl", "nf4", 6.0)):
        for i, det in enumerate(("npr", "clipd")):
            gen_s = 10 * per_image
            busy = (gen_s if i == 0 else 0.0) + 1.0  # the first cell of a set generates it, every cell scores 1 s
            cells.append({"cell_id": f"{g}-{p}-txt2img-{det}", "params": {"generator": g, "precision": p,
                          "mode": "txt2img"}, "extra": {"generation_key": f"{g}-{p}"},
                          "timings": {"generation_s": gen_s, "generated": 10, "cell_s": busy,
                                      "start_unix": t, "end_unix": t + busy}})
            t += busy
    path.write_text(json.dumps({"cells": cells}))
    return path


def test_costs_from_a_record_count_each_set_once(tmp_path: Path) -> None:
    costs = costs_from_files([_record(tmp_path / "r.json")])
    assert costs.per_image == {("sd3", "bf16", "txt2img"): 2.0, ("sdxl", "nf4", "txt2img"): 6.0}
    assert costs.per_cell_s == pytest.approx(1.0)


def test_plan_packs_groups_longest_first_and_scales_what_was_not_measured(tmp_path: Path) -> None:
    costs = costs_from_files([_record(tmp_path / "r.json")])
    groups = [("sd3", "bf16", ("txt2img",), 2), ("sdxl", "nf4", ("txt2img",), 2), ("sd3", "nf4", ("txt2img",), 2)]
    one = plan_grid(groups, costs, n_images=10, gpus=1, startup_s=5.0)
    assert one.wall_s == pytest.approx(5.0 + (20 + 2) + (60 + 2) + one.groups[2].seconds)
    two = plan_grid(groups, costs, n_images=10, gpus=2, startup_s=5.0)
    assert two.bins_s[0] == pytest.approx(62.0)  # sdxl-nf4 alone on one GPU, the two sd3 groups on the other
    assert two.wall_s == pytest.approx(5.0 + max(62.0, 22.0 + one.groups[2].seconds))
    assert [g.estimated for g in one.groups] == [False, False, True]
    img2img, estimated = image_seconds(costs, "sd3", "bf16", "img2img", strength=0.5)
    assert img2img == pytest.approx(1.0) and not estimated
    with pytest.raises(ValueError, match="no measured"):
        image_seconds(Costs(), "sd3", "bf16", "txt2img", 0.6)


def test_plan_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    record = str(_record(tmp_path / "r.json"))
    assert main(["--from", record, "--generators", "sd3,sdxl", "--precisions", "bf16,nf4", "--modes", "txt2img",
                 "--detectors", "npr,clipd", "--n-images", "10", "--gpus", "1", "--gpus", "2"]) == 0
    out = capsys.readouterr().out
    assert "1 GPU(s): 40 images, 8 detection cells" in out and "2 GPU(s)" in out and "scaled, not measured" in out
    with pytest.raises(SystemExit):
        main(["--from", record, "--generators", "sd9"])
    assert "sd9" in capsys.readouterr().err


def test_plan_rescales_measured_costs_to_the_requested_steps(tmp_path: Path) -> None:
    costs = costs_from_files([_record(tmp_path / "r.json")])  # a record without options: default steps (sd3: 28)
    s, estimated = image_seconds(costs, "sd3", "bf16", "txt2img", 0.6, steps=56)
    assert s == pytest.approx(4.0) and not estimated
    s, _ = image_seconds(costs, "sd3", "bf16", "img2img", 0.5, steps=28)
    assert s == pytest.approx(1.0)


def test_plan_cli_with_the_study_preset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--from", str(_record(tmp_path / "r.json")), "--preset", "study", "--gpus", "8"]) == 0
    out = capsys.readouterr().out
    assert "8 GPU(s): 18000 images, 144 detection cells" in out


def test_split_plan_cuts_the_group_that_bounds_the_wall(tmp_path: Path) -> None:
    costs = costs_from_files([_record(tmp_path / "r.json")])
    groups = [("sd3", "bf16", ("txt2img",), 2), ("sdxl", "nf4", ("txt2img",), 2)]
    whole = plan_grid(groups, costs, n_images=10, gpus=2, startup_s=0.0)
    split = plan_grid(groups, costs, n_images=10, gpus=2, startup_s=0.0, split=True)
    assert whole.wall_s == pytest.approx(62.0)  # sdxl-nf4 alone
    assert split.wall_s == pytest.approx(53.0)  # sdxl-nf4 halved (31 + 31), sd3 (22) beside one half
    assert sum(split.bins_s) == pytest.approx(sum(whole.bins_s))
