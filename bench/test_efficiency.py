"""What does quantization cost or save at run time? Latency, memory, weight bytes, FLOPs and roofline per cell.

Thin pytest-benchmark cells over :mod:`quantfake.efficiency.cells`; every measurement lands in
``benchmark.extra_info``. Profiles: ``tiny`` times the toy pipelines on CPU (wall time, peak RSS); ``random``
builds the full-size denoiser with random weights (GPU only); ``pretrained`` times real weights.
Environment knobs (set by ``scripts/gpu_efficiency.sh``): ``QUANTFAKE_EFFIC_DEADLINE`` (epoch seconds after
which remaining cells skip, so a time-boxed run still writes its JSON) and ``QUANTFAKE_TF32=1`` (fp32
matmuls may use TF32; recorded in every cell).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import pytest
import torch

from quantfake.efficiency import device_info, free_cached_memory, synchronize
from quantfake.efficiency.cells import (
    DETECTOR_DTYPES,
    denoiser_inputs,
    detector_cells,
    detector_dtype,
    detector_input_size,
    efficiency_cells,
    latent_size_for,
    measure_denoiser_step,
    measure_detector,
    measure_generation_overhead,
    measure_pipeline_e2e,
    oom_guarded,
    step_batch,
    uses_cfg,
)
from quantfake.generators import get_generator
from quantfake.loading import load_denoiser, load_pipeline, resolve_device
from quantfake.precisions import get_precision, reference_precision, unavailable_reason

IMAGES_PER_STEP = 1  # one image per denoiser step (two rows under CFG): the per-image cost
#: (warmup, repeats) of the step timing, the pytest-benchmark rounds, and the e2e timing, per device type
REPEATS: dict[str, dict[str, int]] = {
    "cpu": {"warmup": 1, "repeats": 2, "rounds": 1, "e2e_warmup": 1, "e2e_repeats": 1, "overhead_pairs": 4},
    # one full-size step is 50 ms .. 3 s: few repeats keep a 45-cell H100 run inside its time box
    "cuda": {"warmup": 1, "repeats": 3, "rounds": 2, "e2e_warmup": 1, "e2e_repeats": 3, "overhead_pairs": 6},
}
OVERHEAD_TOLERANCE = 0.25  # the guard fails only when the suite is shown (CI lower bound) to be >25 % slower


def _options(config: pytest.Config) -> Any:
    from fixtures.plugin import bench_options

    return bench_options(config)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Cells from the registries filtered by --generators / --precisions / --detectors / --compile."""
    if not {"effic_cell", "overhead_generator", "det_cell"} & set(metafunc.fixturenames):
        return
    o = _options(metafunc.config)
    if "effic_cell" in metafunc.fixturenames:
        cells = efficiency_cells(o.generators, o.precisions, (True,) if o.compile else (False,))
        metafunc.parametrize("effic_cell", [pytest.param(c, id=c.id) for c in cells])
    if "overhead_generator" in metafunc.fixturenames:
        gens = [] if o.profile == "random" or o.compile else list(o.generators)  # needs a whole pipeline
        metafunc.parametrize("overhead_generator", [pytest.param(g, id=f"effic-overhead-{g}") for g in gens])
    if "det_cell" in metafunc.fixturenames:
        cells = [] if o.compile else detector_cells(o.detectors)
        metafunc.parametrize("det_cell", [pytest.param(c, id=c.id) for c in cells])


# ------------------------------------------------------------------ helpers


@pytest.fixture(scope="module")
def effic_device(qf_options) -> str:
    device = resolve_device(qf_options.device)
    if device.startswith("cuda") and os.environ.get("QUANTFAKE_TF32") == "1":
        torch.set_float32_matmul_precision("high")  # fp32 matmuls on TF32 tensor cores; recorded per cell
    return device


@pytest.fixture(autouse=True)
def _deadline_and_cleanup():
    deadline = os.environ.get("QUANTFAKE_EFFIC_DEADLINE")
    if deadline and time.time() > float(deadline):
        pytest.skip(f"time budget spent (QUANTFAKE_EFFIC_DEADLINE={deadline})")
    torch.manual_seed(0)
    yield
    free_cached_memory()


def _store(options: Any) -> Any:
    """The options carry the store folder (a Path); loaders want a Store."""
    from quantfake.store import Store

    return options.store if isinstance(options.store, Store) else Store(options.store)


def _common(device: str, profile: str) -> dict[str, Any]:
    info = device_info(device)
    return {"profile": profile, "device": device, "device_name": info.get("name"),
            "float32_matmul_precision": torch.get_float32_matmul_precision(), "torch_version": torch.__version__}


def _run_benchmark(benchmark: Any, fn: Callable[[], Any], device: str, rounds: int, extra: dict[str, Any]) -> None:
    """pytest-benchmark timing of ``fn`` (synchronized, so the wall clock covers GPU work), then extra_info."""
    def timed() -> None:
        fn()
        synchronize(device)

    if extra.get("oom"):
        benchmark.extra_info.update(extra, timed="nothing: the cell ran out of memory")
        benchmark.pedantic(lambda: None, rounds=1)
        return
    synchronize(device)
    benchmark.pedantic(timed, rounds=rounds, warmup_rounds=0)
    benchmark.extra_info.update(extra)


# ------------------------------------------------------------------ generator cells


def test_generator_efficiency(effic_cell, qf_options, effic_device, benchmark) -> None:
    """One denoiser step (and, with a whole pipeline, one image end to end) at one precision."""
    spec, prec = get_generator(effic_cell.generator), get_precision(effic_cell.precision)
    device, profile = effic_device, qf_options.profile
    reason = unavailable_reason(prec, device)
    if reason:
        pytest.skip(reason)
    if profile == "random" and not device.startswith("cuda"):
        pytest.skip("the random profile builds full-size denoisers (up to 12B parameters): GPU only")
    if effic_cell.compile and not device.startswith("cuda"):
        pytest.skip("torch.compile cells are GPU only (CPU inductor compile is minutes per model)")
    reps = REPEATS["cuda" if device.startswith("cuda") else "cpu"]
    size = qf_options.size or spec.native_size
    latent = latent_size_for(profile, size)
    rows = step_batch(spec, IMAGES_PER_STEP)
    extra: dict[str, Any] = {
        **_common(device, profile), "generator": spec.id, "precision": prec.id, "compile": effic_cell.compile,
        "size": size, "latent_size": latent, "images_per_step": IMAGES_PER_STEP, "step_batch": rows,
        "cfg": uses_cfg(spec), "compute_dtype": str(prec.torch_dtype).removeprefix("torch."),
    }
    holder: dict[str, Any] = {}

    def load() -> dict[str, Any]:
        if profile == "random":
            holder["model"], load_s = load_denoiser(spec.id, prec.id, device=device)
        else:
            loaded = load_pipeline(spec.id, prec.id, profile, device=device, store=_store(qf_options),
                                   model_root=qf_options.model_root)
            holder["loaded"], holder["model"], load_s = loaded, loaded.denoiser, loaded.load_seconds
        return {"load_s": load_s}

    def step() -> Any:
        with torch.inference_mode():
            return holder["model"](**holder["inputs"], return_dict=False)

    try:  # the holder (not locals) owns the model, so it is released even when the cell fails
        extra.update(oom_guarded(load))
        if not extra["oom"]:
            holder["inputs"] = denoiser_inputs(spec.id, holder["model"], rows, latent, device, prec.torch_dtype)
            extra.update(oom_guarded(lambda: measure_denoiser_step(
                holder["model"], holder["inputs"], device, repeats=reps["repeats"], warmup=reps["warmup"],
                compile=effic_cell.compile)))
        if not extra["oom"] and "loaded" in holder:
            steps = qf_options.steps or spec.default_steps
            extra.update(oom_guarded(lambda: measure_pipeline_e2e(
                holder["loaded"], steps, size, device, repeats=reps["e2e_repeats"], warmup=reps["e2e_warmup"],
                images=IMAGES_PER_STEP)))
        _run_benchmark(benchmark, step, device, reps["rounds"], extra)
    finally:
        holder.clear()
    if not extra["oom"]:
        assert extra["step_ms"] > 0 and extra["flops_per_step"] > 0 and extra["weights_bytes"] > 0


def test_generation_overhead(overhead_generator, qf_options, effic_device, benchmark) -> None:
    """Guard: the suite's generation path is not measurably slower than a bare diffusers call."""
    spec = get_generator(overhead_generator)
    device, profile = effic_device, qf_options.profile
    available = [p for p in qf_options.precisions if unavailable_reason(get_precision(p), device) is None]
    if not available:
        pytest.skip(f"none of the precisions {qf_options.precisions} runs on {device}")
    precision = reference_precision(available)
    reps = REPEATS["cuda" if device.startswith("cuda") else "cpu"]
    size = qf_options.size or spec.native_size
    steps = qf_options.steps or spec.default_steps
    loaded = load_pipeline(spec.id, precision, profile, device=device, store=_store(qf_options),
                           model_root=qf_options.model_root)
    extra: dict[str, Any] = {**_common(device, profile), "generator": spec.id, "precision": precision,
                             "size": size, "steps": steps, "images": IMAGES_PER_STEP}
    extra.update(oom_guarded(lambda: measure_generation_overhead(
        loaded, steps, size, device, pairs=reps["overhead_pairs"], warmup=1, images=IMAGES_PER_STEP)))
    extra["overhead_tolerance"] = OVERHEAD_TOLERANCE

    def bare() -> Any:
        from quantfake.efficiency.cells import pipeline_call_kwargs

        with torch.inference_mode():
            return loaded.pipe(**pipeline_call_kwargs(spec, steps, size, IMAGES_PER_STEP))

    _run_benchmark(benchmark, bare, device, 1, extra)
    if not extra["oom"]:
        low, high = extra["overhead_ratio_ci95"]
        assert low <= 1.0 + OVERHEAD_TOLERANCE, (
            f"{spec.id}: the suite's generation path is slower than a bare pipeline call by "
            f"{extra['overhead_pct']:.1f} % (95 % CI of the ratio {low:.3f}..{high:.3f}, tolerance "
            f"{OVERHEAD_TOLERANCE:.0%})")


# ------------------------------------------------------------------ detector cells


def test_detector_efficiency(det_cell, qf_options, effic_device, benchmark) -> None:
    """Images/s and peak memory of one detector at one dtype and batch size, next to its FLOP-bound limit.

    Weights are a seeded random init: throughput does not depend on their values, so no checkpoint is needed.
    """
    from quantfake.detectors import get_detector
    from quantfake.detectors.loaded import build_module

    spec = get_detector(det_cell.detector)
    device, profile = effic_device, qf_options.profile
    tiny = profile == "tiny"
    on_gpu = device.startswith("cuda")
    if not tiny and not on_gpu:
        pytest.skip("full-size detectors (CLIP ViT-L, ResNet-50 at full resolution) are timed on GPU only")
    if det_cell.dtype == "fp16" and not on_gpu:
        pytest.skip(f"fp16 detectors are timed on GPU only (CPU float16 kernels are not a deployment path); "
                    f"CPU dtypes: {', '.join(d for d in DETECTOR_DTYPES if d != 'fp16')}")
    reps = REPEATS["cuda" if on_gpu else "cpu"]
    size = detector_input_size(spec, tiny)
    dtype = detector_dtype(det_cell.dtype)
    extra: dict[str, Any] = {**_common(device, profile), "detector": spec.id, "precision": det_cell.dtype,
                             "architecture": "tiny" if tiny else "full", "weights": "random init"}
    holder: dict[str, Any] = {}

    def run() -> dict[str, Any]:
        holder["module"] = build_module(spec, tiny=tiny).to(device)
        result = measure_detector(holder["module"], det_cell.batch, size, device, dtype,
                                  repeats=reps["repeats"], warmup=reps["warmup"])
        holder["x"] = torch.randn(det_cell.batch, 3, size, size, device=device, dtype=dtype)
        return result

    def forward() -> Any:
        with torch.inference_mode():
            return holder["module"](holder["x"])

    try:
        extra.update(oom_guarded(run))
        _run_benchmark(benchmark, forward, device, reps["rounds"], extra)
    finally:
        holder.clear()
    if not extra["oom"]:
        assert extra["images_per_s"] > 0 and extra["flops_per_image"] > 0
