"""quantfake generate's per-rank records: seconds per image with loading charged once, shards summed, and
``quantfake plan`` reading them (the bench over a filled store measured no generation)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from quantfake.generate_record import generate_record, per_image_costs, write_generate_record
from quantfake.plan import costs_from_files
from quantfake.plan import main as plan_main


def _rank(rank: int, units: list[tuple[str, float, float]], sets: list[tuple[str, str, str, str, int, float]],
          steps: int | None = None) -> dict:
    return generate_record(
        rank=rank, num_processes=2, device=f"cuda:{rank}", device_name="NVIDIA H100 80GB HBM3",
        options={"profile": "random", "steps": steps}, phases={"started": 0.0, "work": 15.3},
        units=[{"unit": u, "job": u.split("[")[0], "began_s": b, "ended_s": e} for u, b, e in units],
        sets=[{"unit": u, "generator": g, "precision": p, "mode": m, "role": "eval", "generated": n, "reused": 0,
               "seconds": sec, "status": "done"} for u, g, p, m, n, sec in sets])


def test_load_is_charged_once_and_the_shards_of_a_set_add_up() -> None:
    rank0 = _rank(0, [("flux-bf16[1/2]", 0.0, 80.0), ("sd3-nf4", 80.0, 125.0)],
                  [("flux-bf16[1/2]", "flux", "bf16", "txt2img", 8, 72.0),
                   ("sd3-nf4", "sd3", "nf4", "txt2img", 16, 34.0), ("sd3-nf4", "sd3", "nf4", "img2img", 16, 10.0)])
    rank1 = _rank(1, [("flux-bf16[2/2]", 0.0, 83.0)], [("flux-bf16[2/2]", "flux", "bf16", "txt2img", 8, 70.0)])
    # training fakes (tiny profile) take their own seconds and are no eval cost: the load is 83 - 70 - 5 s
    rank1["sets"].append({**rank1["sets"][0], "role": "train", "generated": 99, "seconds": 5.0})
    costs = per_image_costs([rank0, rank1])
    assert costs[("flux", "bf16", "txt2img")] == pytest.approx((80.0 + 78.0) / 16)
    assert costs[("sd3", "nf4", "txt2img")] == pytest.approx((34.0 + 1.0) / 16), "the unit's 1 s load, once"
    assert costs[("sd3", "nf4", "img2img")] == pytest.approx(10.0 / 16)


def test_plan_reads_generate_records_written_in_the_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = [write_generate_record(tmp_path, _rank(r, [(f"sd3-{p}", 0.0, 30.0)],
                                                   [(f"sd3-{p}", "sd3", p, "txt2img", 16, 28.0)], steps=28))
             for r, p in ((0, "bf16"), (1, "nf4"))]
    assert [p.parent.name for p in paths] == ["generate_records"] * 2 and paths[0].name.endswith("-rank0.json")
    assert json.loads(paths[1].read_text())["device_name"] == "NVIDIA H100 80GB HBM3"
    costs = costs_from_files(paths)
    assert costs.per_image[("sd3", "bf16", "txt2img")] == pytest.approx(30.0 / 16)
    assert costs.steps[("sd3", "nf4", "txt2img")] == 28
    args = ["--generators", "sd3", "--precisions", "bf16,nf4", "--modes", "txt2img", "--detectors", "npr",
            "--n-images", "32", "--startup-s", "10"]
    assert plan_main([*sum((["--from", str(p)] for p in paths), []), *args, "--gpus", "1", "--gpus", "2"]) == 0
    out = capsys.readouterr().out
    # sd3's native steps are 28, as measured: 32 images x 30/16 s per set, plus start-up; no scoring cost known
    assert "1 GPU(s): 64 images" in out and "(130 s)" in out, out
    assert "2 GPU(s)" in out and "(70 s)" in out, out
    assert "scaled, not measured" not in out


def test_records_rebuilt_from_a_launch_log_carry_its_sets_units_and_phases(tmp_path: Path) -> None:
    """scripts/generate_log_to_records.py, on lines as a rank prints them (a progress bar glued before the
    header, as in benchmarks/multigpu_h100's logs)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("to_records", Path(__file__).parents[1] / "scripts/generate_log_to_records.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    log = "\n".join([
        "generate sd3-bf16-txt2img-9d: 100%|##| 16/16 [00:27<00:00]   \r[rank 1/2] 2 units (flux-nf4, sd3-bf16) of 6 "
        "jobs on cuda:1 in 286.0 s, store /tmp/x",
        "job        mode     role      generated    reused    seconds  recipe: check   status",
        "---------  -------  ------  -----------  --------  ---------  --------------  --------",
        "flux-nf4   txt2img  eval             16         0      161.8  eager batch 1: none  done",
        "sd3-bf16   txt2img  eval             16         0       27.4  eager batch 1: none  done",
        "[rank 1] timeline: flux-nf4                   0.6 ->   170.6 s ( 169.9 s: generate  161.8, load/other   8.1)",
        "[rank 1] timeline: sd3-bf16                 170.6 ->   198.6 s (  28.0 s: generate   27.4, load/other   0.6)",
        "[rank 1] phases: started 0.0, imports 10.6, group 10.8, folders 10.9, work 10.9, done 209.5, barrier 209.6 s "
        "(process start at 1795685243.832; group gloo; cores 16-31, 16 threads)"])
    (record,) = module.records_from_log(log, "random", None, "NVIDIA H100 80GB HBM3")
    assert (record["rank"], record["num_processes"], record["device"]) == (1, 2, "cuda:1")
    assert [u["unit"] for u in record["units"]] == ["flux-nf4", "sd3-bf16"] and record["phases"]["work"] == 10.9
    assert per_image_costs([record]) == pytest.approx({("flux", "nf4", "txt2img"): 170.0 / 16,
                                                       ("sd3", "bf16", "txt2img"): 28.0 / 16})
