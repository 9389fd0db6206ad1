"""``quantfake generate``: reruns reuse the store, the bench reuses what it made, concurrent writers lose nothing."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from quantfake.cpu_affinity import read_topology
from quantfake.distributed import main, plan_jobs, process_device
from quantfake.generate import GenerationRequest, generate
from quantfake.generators import GENERATORS
from quantfake.loading import load_pipeline
from quantfake.options import build_options
from quantfake.session.engine import Session
from quantfake.session.reals import TRAIN_MODES
from quantfake.store import Store, sha256_bytes

SLICE = ["--generators", "sd3", "--precisions", "fp32,bf16", "--modes", "txt2img", "--n-images", "4",
         "--no-train-fakes", "--no-progress"]
TOTAL_RE = re.compile(r"generated=(\d+) reused=(\d+) skipped_sets=(\d+)")


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """One intra-op thread: the box is shared, and equal thread counts keep CPU numerics comparable."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny sd3 pipeline built once; tests copy it into fresh stores (building is the slow part)."""
    from quantfake.tiny import ensure_tiny_pipeline

    models = Store(tmp_path_factory.mktemp("models")).models_dir
    ensure_tiny_pipeline("sd3", models)
    return models


def _fresh_store(root: Path, models: Path) -> Path:
    shutil.copytree(models, root / "models", ignore=shutil.ignore_patterns("*.lock"))
    return root


def _totals(out: str) -> tuple[int, int, int]:
    found = TOTAL_RE.findall(out)
    assert len(found) == 1, f"expected one total line in:\n{out}"
    return tuple(int(x) for x in found[0])


def _files(store: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(store)): (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in (store / "images").rglob("*") if p.suffix in (".png", ".npy")}


# ------------------------------------------------------------------ planning (no generation)


def test_plan_is_generator_x_precision_with_modes() -> None:
    o = build_options({"generators": "sd3,flux", "precisions": "fp32,int8", "modes": "txt2img,img2img"})
    jobs = plan_jobs(o, train_fakes=False)
    assert [j.id for j in jobs] == ["sd3-fp32", "sd3-int8", "flux-fp32", "flux-int8"]
    assert all(j.tasks == [("txt2img", "eval"), ("img2img", "eval")] for j in jobs)


def test_tiny_plan_adds_training_fakes_of_every_generator_at_fp32() -> None:
    o = build_options({"profile": "tiny", "generators": "sd3", "precisions": "fp32,bf16", "modes": "txt2img"})
    jobs = {j.id: j for j in plan_jobs(o)}
    assert set(jobs) == {"sd3-bf16"} | {f"{g}-fp32" for g in GENERATORS}
    train = [(m, "train") for m in TRAIN_MODES]
    assert jobs["sd3-fp32"].tasks == [("txt2img", "eval"), *train], "training sets share the sd3-fp32 pipeline"
    assert jobs["flux-fp32"].tasks == train
    assert jobs["sd3-bf16"].tasks == [("txt2img", "eval")]
    pretrained = build_options({"profile": "pretrained", "generators": "sd3", "precisions": "fp32"})
    assert [j.id for j in plan_jobs(pretrained)] == ["sd3-fp32"], "no training fakes outside the tiny profile"


def test_process_device_pins_each_rank_unless_cpu_is_asked() -> None:
    assert process_device(None, 1, "cpu") == "cpu"
    assert process_device("cuda", 1, "cuda") == "cuda"
    assert process_device("cuda", 4, "cuda:3") == "cuda:3"
    assert process_device(None, 4, "cuda:2") == "cuda:2"
    assert process_device("cpu", 4, "cuda:2") == "cpu"
    assert process_device(None, 2, "cpu:0") == "cpu", "torchrun on the CPU: plain 'cpu', as --device cpu gives"


def test_unknown_id_exits_2_listing_valid_ids(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["--generators", "sd3,nope", "--store", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "'nope'" in err and all(g in err for g in GENERATORS)
    assert main(["--profile", "huge", "--store", str(tmp_path)]) == 2
    assert "tiny" in capsys.readouterr().err
    assert not (tmp_path / "images").exists(), "nothing may be generated on a usage error"


# ------------------------------------------------------------------ generation


def test_rerun_generates_nothing_and_the_bench_reuses_the_store(capsys: pytest.CaptureFixture[str],
                                                               tmp_path: Path, tiny_models: Path) -> None:
    _fresh_store(tmp_path, tiny_models)
    assert main([*SLICE, "--store", str(tmp_path)]) == 0
    first = capsys.readouterr()
    assert _totals(first.out) == (8, 0, 0)
    assert "img/s" not in first.err and "generate sd3" not in first.err, "--no-progress: no per-image bars either"
    before = _files(tmp_path)
    assert len([f for f in before if f.endswith(".png")]) == 8

    assert main([*SLICE, "--store", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert _totals(out) == (0, 8, 0)
    assert _files(tmp_path) == before, "a rerun must not rewrite any file"

    # the bench opens its session from the same options with no --device: same keys, nothing generated
    bench = Session.open(build_options({"generators": "sd3", "precisions": "fp32,bf16", "modes": "txt2img",
                                        "n_images": "4", "store": str(tmp_path)}))
    for precision in ("fp32", "bf16"):
        res = bench.fakes.images("sd3", precision, "txt2img")
        assert (res.generated, res.reused) == (0, 4)


def test_a_pipeline_no_recipe_fits_is_refused_and_fails_the_run(capsys: pytest.CaptureFixture[str],
                                                                 tmp_path: Path, tiny_models: Path) -> None:
    _fresh_store(tmp_path, tiny_models)
    assert main([*SLICE, "--store", str(tmp_path), "--vram-budget", "1e-6"]) == 1
    out = capsys.readouterr().out
    assert "refused: sd3-fp32 does not fit --vram-budget 1e-06 GiB" in out and _totals(out)[0] == 0


def _race_worker(root: str, barrier: mp.Barrier, results: mp.Queue) -> None:
    """The spawned one of two processes generating the same request into the same store at the same moment."""
    torch.set_num_threads(1)
    loaded = load_pipeline("sd3", "fp32", "tiny", device="cpu", store=Store(root))
    barrier.wait(timeout=180)
    res = generate(loaded, _race_request(), Store(root), progress=False)
    results.put((res.generated, res.reused, res.key))


def _race_request() -> GenerationRequest:
    return GenerationRequest(n_images=4, steps=2, size=64, batch_size=2)


def test_two_processes_on_one_store_lose_and_corrupt_nothing(tmp_path: Path, tiny_models: Path) -> None:
    """This process and a spawned one race on one store; both must end with the single-process bytes.

    One spawned process, not two: starting a process that imports diffusers is the slow part on a shared box.
    """
    shared = _fresh_store(tmp_path / "shared", tiny_models)
    single = _fresh_store(tmp_path / "single", tiny_models)
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    child = ctx.Process(target=_race_worker, args=(str(shared), barrier, results))
    child.start()
    loaded = load_pipeline("sd3", "fp32", "tiny", device="cpu", store=Store(single))
    ref = generate(loaded, _race_request(), Store(single), progress=False)  # while the child starts up
    barrier.wait(timeout=180)
    mine = generate(loaded, _race_request(), Store(shared), progress=False)
    child.join(timeout=180)
    assert child.exitcode == 0
    got = [(mine.generated, mine.reused, mine.key), results.get(timeout=5)]

    req = _race_request()
    assert {key for *_, key in got} == {ref.key}
    assert sum(g for g, _, _ in got) == req.n_images, "each image is made exactly once"
    assert sum(g + r for g, r, _ in got) == 2 * req.n_images
    folder = Store(shared).image_dir(ref.key)
    assert not list(folder.glob(".*.tmp")), "no temporary file may be left behind"
    assert sorted(p.name for p in folder.glob("*.png")) == sorted(f"{s}.png" for s in req.seeds())
    json.loads((folder / "request.json").read_text())
    for img in ref.images:
        data = (folder / img.path.name).read_bytes()
        assert data == img.path.read_bytes(), f"seed {img.seed}: bytes differ from the single-process run"
        row = json.loads((folder / f"{img.seed}.json").read_text())
        assert row["sha256"] == sha256_bytes(data) and row["seed"] == img.seed
        Image.open(folder / img.path.name).convert("RGB").load()
        assert np.array_equal(np.load(folder / img.latent_path.name), np.load(img.latent_path))


def test_shards_of_a_set_make_the_bytes_of_the_whole_set(tmp_path: Path, tiny_models: Path) -> None:
    """Two GPUs sharing one heavy set by chunks (shard 0 and 1 of 2) write exactly what one GPU writes alone."""
    whole, sharded = (_fresh_store(tmp_path / name, tiny_models) for name in ("whole", "sharded"))
    loaded = load_pipeline("sd3", "fp32", "tiny", device="cpu", store=Store(whole))
    req = GenerationRequest(n_images=5, steps=2, size=64, batch_size=2)  # chunks {0,1}, {2,3}, {4}
    ref = generate(loaded, req, Store(whole), progress=False)
    parts = [generate(loaded, req, Store(sharded), progress=False, shard=(k, 2)) for k in (0, 1)]
    assert [[im.seed for im in p.images] for p in parts] == [[0, 1, 4], [2, 3]]
    assert [p.generated for p in parts] == [3, 2]
    for img in ref.images:
        assert (Store(sharded).image_dir(ref.key) / img.path.name).read_bytes() == img.path.read_bytes()
    again = generate(loaded, req, Store(sharded), progress=False)
    assert (again.generated, again.reused) == (0, 5), "the whole set is then in the store"
    with pytest.raises(ValueError, match="shard 2 of 2"):
        generate(loaded, req, Store(sharded), progress=False, shard=(2, 2))


def test_shard_plan_packs_jobs_heaviest_first_and_splits_only_what_exceeds_a_fair_share() -> None:
    from quantfake.distributed import job_cost, offered_units, shard_jobs

    o = build_options({"profile": "pretrained", "generators": "sd3,flux", "precisions": "bf16,int8",
                       "modes": "txt2img", "n_images": "64"})
    jobs = plan_jobs(o)
    costs = {j.id: job_cost(o, j) for j in jobs}
    assert max(costs, key=costs.get) == "flux-int8"
    one = shard_jobs(o, jobs, 1)
    assert [(u.key, u.shards) for u in one[0]] == sorted(((j, 1) for j in costs), key=lambda k: -costs[k[0]])
    assert [(u.key, u.shards) for u in offered_units(o, jobs, 1)] == [(u.key, u.shards) for u in one[0]]
    four = shard_jobs(o, jobs, 4)
    assert all(len({u.key for u in units}) == len(units) for units in four), "one shard of a job per rank"
    split = {u.key for units in four for u in units if u.shards > 1}
    assert "flux-int8" in split and "sd3-bf16" not in split
    assert sorted(u.key for units in four for u in units if u.shards == 1) == sorted(set(costs) - split)


def test_claims_give_each_unit_to_the_first_free_process(tmp_path: Path) -> None:
    """Two ranks drawing from one offer list: every unit goes to exactly one, and a rank that is busy longer
    (here: rank 0 on a heavy unit while rank 1 takes three light ones) takes fewer units."""
    from quantfake.distributed import claim
    from quantfake.packing import Unit

    units = [Unit("flux-nf4", 150.0), Unit("flux-bf16", 140.0), Unit("sdxl-nf4", 95.0), Unit("sdxl-bf16", 45.0),
             Unit("sd3-nf4", 28.0), Unit("sd3-bf16", 26.0)]
    ranks = [claim(units, tmp_path / "claims"), claim(units, tmp_path / "claims")]
    free_at, taken, done = [0.0, 0.0], [[], []], [False, False]
    while not all(done):  # event simulation: the rank free first claims next
        r = min((r for r in (0, 1) if not done[r]), key=lambda r: free_at[r])
        unit = next(ranks[r], None)
        if unit is None:
            done[r] = True
            continue
        taken[r].append(unit.key)
        free_at[r] += unit.cost
    assert sorted(taken[0] + taken[1]) == sorted(u.key for u in units), "each unit claimed exactly once"
    assert max(free_at) == 249.0 and taken[1] == ["flux-bf16", "sdxl-nf4"]
    assert len(list((tmp_path / "claims").iterdir())) == len(units)


def test_timeline_lines_attribute_each_units_own_generation_time():
    """Two shards of one job on one rank: each line sums only its own tasks' seconds, in run order."""
    from quantfake.distributed import TaskOutcome, timeline_lines
    from quantfake.packing import Unit

    units = [Unit("flux-bf16", 2.0, 0, 2), Unit("flux-bf16", 2.0, 1, 2), Unit("sd3-nf4", 1.0)]
    outcomes = [TaskOutcome("flux-bf16", "txt2img", "eval", seconds=10.0),
                TaskOutcome("flux-bf16", "txt2img", "eval", seconds=12.0),
                TaskOutcome("sd3-nf4", "txt2img", "eval", seconds=3.0),
                TaskOutcome("sd3-nf4", "img2img", "eval", seconds=4.0)]
    lines = timeline_lines(units, [1, 1, 2], [[0.0, 15.0], [15.0, 28.0], [28.0, 40.0]], outcomes, rank=1)
    assert [line.split("timeline: ")[1].split()[0] for line in lines] == ["flux-bf16[1/2]", "flux-bf16[2/2]", "sd3-nf4"]
    assert "generate   10.0, load/other   5.0" in lines[0]
    assert "generate   12.0, load/other   1.0" in lines[1]
    assert "generate    7.0, load/other   5.0" in lines[2]


def test_phase_line_counts_from_the_process_start_and_the_launch_offsets_read_it_back() -> None:
    from quantfake.distributed import PHASES, launch_offset_lines, phase_line

    start = 1_700_000_000.25
    stamps = {"started": start, **{name: start + at for name, at in zip(PHASES, (6.1, 8.3, 9.0, 9.1, 302.0, 302.4), strict=True)}}
    line = phase_line(0, start, stamps, ["group gloo", "cores 0-7,16-23, 8 threads"])
    assert line == ("[rank 0] phases: started 0.0, imports 6.1, group 8.3, folders 9.0, work 9.1, done 302.0, "
                    "barrier 302.4 s (process start at 1700000000.250; group gloo; cores 0-7,16-23, 8 threads)")
    later = phase_line(1, start + 2.0, {**stamps, "started": start + 2.0})
    log = "\n".join(["noise", later, "[rank 1] timeline: busy 1.0 s", line])
    assert launch_offset_lines(log, launched_at=start - 10.0) == [
        "[rank 0] launch -> process start 10.0 s, -> work start 19.1 s",
        "[rank 1] launch -> process start 12.0 s, -> work start 19.1 s"]


@pytest.mark.slow
def test_two_process_launch_on_the_cpu_makes_the_one_process_bytes(capsys: pytest.CaptureFixture[str],
                                                                    tmp_path: Path, tiny_models: Path) -> None:
    """torchrun with 2 CPU processes (``accelerate launch --cpu`` starts only one without mpirun): the ranks
    coordinate over gloo, pin disjoint cores, claim each set once, and write the bytes of a 1-process run."""
    single, pair = (_fresh_store(tmp_path / name, tiny_models) for name in ("single", "pair"))
    assert main([*SLICE, "--store", str(single), "--device", "cpu"]) == 0
    capsys.readouterr()
    two_cpus = sorted(os.sched_getaffinity(0))[:2]  # at most one thread a rank, as this module's reference uses
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "quantfake.distributed", *SLICE, "--store", str(pair), "--cpu-affinity", "auto"],
        capture_output=True, text=True, timeout=600, preexec_fn=lambda: os.sched_setaffinity(0, two_cpus))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    totals = [tuple(int(x) for x in t) for t in TOTAL_RE.findall(out)]
    assert len(totals) == 2 and sum(t[0] for t in totals) == 8 and all(t[1:] == (0, 0) for t in totals), out
    phases = sorted(re.findall(r"\[rank (\d)\] phases: .*work [\d.]+.*barrier [\d.]+ s \(process start at "
                               r"[\d.]+; group gloo; cores ([\d,-]+), 1 threads\)", out))
    assert [rank for rank, _ in phases] == ["0", "1"], out
    if len(two_cpus) == 2 and len({tuple(c.cpus) for c in read_topology(two_cpus)}) == 2:
        assert phases[0][1] != phases[1][1], "two physical cores: one each"
    assert len(list((pair / "claims").glob("*/*"))) == 2, "each set claimed once"
    reference = {p.relative_to(single): p.read_bytes() for p in (single / "images").rglob("*.png")}
    assert len(reference) == 8
    assert {p.relative_to(pair): p.read_bytes() for p in (pair / "images").rglob("*.png")} == reference
    assert {json.loads(p.read_text())["device"] for p in (pair / "images").glob("*/request.json")} == {"cpu"}
    records = [json.loads(p.read_text()) for p in sorted((pair / "generate_records").glob("*.json"))]
    assert sorted(r["rank"] for r in records) == [0, 1] and {r["num_processes"] for r in records} == {2}
    assert sum(s["generated"] for r in records for s in r["sets"]) == 8
    assert {s["unit"] for r in records for s in r["sets"]} == {u["unit"] for r in records for u in r["units"]}


def test_gpu_numa_nodes_map_each_local_rank_to_its_gpus_pci_node(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA side of --cpu-affinity without a GPU: rank i reads cuda:(i % count)'s PCI ids; a torch without
    them, or a device sysfs does not know, gives no preference."""
    from types import SimpleNamespace

    import quantfake.cpu_affinity as cpu_affinity
    from quantfake.distributed import apply_cpu_affinity, gpu_numa_nodes

    props = [SimpleNamespace(pci_domain_id=0, pci_bus_id=0x1B, pci_device_id=0),
             SimpleNamespace(pci_domain_id=0, pci_bus_id=0xDC, pci_device_id=0), SimpleNamespace()]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(props))
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props[i])
    monkeypatch.setattr(cpu_affinity, "pci_numa_node", {"0000:1b:00.0": 0, "0000:dc:00.0": 1}.get)
    assert gpu_numa_nodes(4) == [0, 1, None, 0]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_numa_nodes(2) == [None, None]
    before = os.sched_getaffinity(0)
    assert apply_cpu_affinity("none", 0, 2).startswith("cpus as launched")
    assert apply_cpu_affinity("auto", 0, 1).startswith("cpus as launched"), "one local process: nothing to split"
    assert os.sched_getaffinity(0) == before


def test_cpu_affinity_option_defaults_to_auto_and_refuses_other_values(capsys: pytest.CaptureFixture[str]) -> None:
    from quantfake.distributed import LaunchFlags, main, parse_args
    from quantfake.options import build_options

    # one definition for pytest and generate: the option registry's, validated by build_options
    raw, flags = parse_args([])
    assert flags == LaunchFlags(train_fakes=True, progress=True) and build_options(raw).cpu_affinity == "auto"
    raw, flags = parse_args(["--cpu-affinity", "none", "--no-progress"])
    assert build_options(raw).cpu_affinity == "none" and not flags.progress
    assert main(["--cpu-affinity", "numa"]) == 2
    # the bad value and every accepted one, in the message every unknown id gets
    assert capsys.readouterr().err == ("quantfake generate: unknown cpu affinity id 'numa'; valid cpu affinity ids: "
                                       "auto, none\n")


def test_process_start_is_read_from_the_boot_clock_ticks_of_proc_stat() -> None:
    from quantfake.distributed import process_start_time, start_from_stat

    stat = "4242 (python -m (x)) S 1 4242 4242 0 -1 4194560 " + " ".join(["0"] * 12) + " 150000 512 0"
    assert start_from_stat(stat, now=1_000_000.0, boottime=2000.0, ticks_per_s=100) == 1_000_000.0 - 500.0
    started = process_start_time()
    assert started <= time.time() and time.time() - started < 24 * 3600


def test_timeline_lines_add_each_units_cpu_use_and_cpu_use_counts_this_threads_work() -> None:
    """The CPU columns tell a slower core (main-thread CPU grows) from preemption or waiting; a busy loop on
    the calling thread shows up in its thread CPU seconds, a sleep does not."""
    import time

    from quantfake.distributed import TaskOutcome, timeline_lines
    from quantfake.measure.cpu_use import CpuUse, cpu_use
    from quantfake.packing import Unit

    before = cpu_use()
    end = time.thread_time() + 0.2
    while time.thread_time() < end:
        pass
    time.sleep(0.2)
    spent = cpu_use() - before
    assert 0.2 <= spent.thread_s < 0.35 and spent.process_s >= spent.thread_s and spent.preempted >= 0
    lines = timeline_lines([Unit("sdxl-nf4", 1.0)], [1], [[0.0, 96.0]],
                           [TaskOutcome("sdxl-nf4", "txt2img", "eval", seconds=90.0)], rank=0,
                           used=[CpuUse(88.04, 12, 131.5)])
    assert lines[0].endswith("load/other   6.0; main thread cpu 88.0 s, 12 preemptions; all threads cpu 131.5 s)")
