"""Efficiency cells: latency, memory, weight bytes, FLOPs and roofline of one generator x precision (or detector).

Library logic behind ``bench/test_efficiency.py`` (no pytest here). A *step* is one denoiser forward at the
batch the pipeline really runs (classifier-free guidance doubles it for SD/SDXL/SD3; Flux-dev embeds its
guidance, one row per image), fed dummy inputs of the real shapes. FLOPs are counted once on a ``meta``-device
twin of the architecture (no memory, no kernels) and reused for every precision: bitsandbytes / torchao
kernels are invisible to ``FlopCounterMode``, and the *useful* work of a step does not change with how its
weights are stored. Every measurement that can run out of memory goes through :func:`oom_guarded`, so one
cell's OOM is recorded and the session goes on.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from quantfake.generators import GeneratorSpec, get_generator, text_sequence_length
from quantfake.measure.devices import GIB, DeviceLike, as_device, synchronize
from quantfake.measure.flops import achieved_tflops, count_flops, measure_matmul_peak_tflops, roofline_fraction
from quantfake.measure.memory import PeakMemory, peak_memory
from quantfake.measure.nonfinite import NonFiniteCalls
from quantfake.measure.oom import free_cached_memory, is_oom
from quantfake.measure.overhead import compare_overhead
from quantfake.measure.timing import Sampler, TimingStats, timer_sampler
from quantfake.measure.weights import component_weights_bytes, weights_bytes
from quantfake.precisions import COMPUTE_DTYPES, dtype_from_name
from quantfake.profiles import REAL_VAE_FACTOR, vae_factor

DENOISE_TIMESTEP = 999.0  # first step of a schedule; the cost of a step does not depend on it
#: Detectors without a fixed input size (R50 no-down, TrueFake R50) run at the image's own resolution;
#: the full-size cell uses 512x512, the output size of SD1.5, the smallest generator here.
FULL_RES_DETECTOR_SIZE = 512
TINY_DETECTOR_SIZE = 64  # the tiny world's images are 64x64
DETECTOR_DTYPES: tuple[str, ...] = tuple(COMPUTE_DTYPES)  # the detector compute dtypes a cell may time
DETECTOR_BATCHES: tuple[int, ...] = (1, 64)


# --------------------------------------------------------------------------------------------------
# the cell grid


#: what a generator efficiency cell times: one denoiser step, or whole images end to end (a batch of ``images``)
MEASURES: tuple[str, ...] = ("step", "e2e")


@dataclass(frozen=True)
class EfficiencyCell:
    """One generator x precision (x compiled or eager) efficiency measurement: a denoiser step or ``images``
    images end to end. Each is its own pytest-benchmark entry (one timed function per benchmark)."""

    generator: str
    precision: str
    compile: bool = False
    measure: str = "step"
    images: int = 1

    def __post_init__(self) -> None:
        if self.measure not in MEASURES:
            raise ValueError(f"unknown efficiency measure {self.measure!r}; accepted: {', '.join(MEASURES)}")
        if self.images < 1:
            raise ValueError(f"images must be >= 1, got {self.images}")

    @property
    def id(self) -> str:
        what = "" if self.measure == "step" else "e2e-"
        batch = "" if self.measure == "step" else f"-b{self.images}"
        return f"effic-{what}{self.generator}-{self.precision}{batch}" + ("-compile" if self.compile else "")


@dataclass(frozen=True)
class DetectorEfficiencyCell:
    """One detector x compute dtype x batch size throughput measurement."""

    detector: str
    dtype: str
    batch: int

    @property
    def id(self) -> str:
        return f"effic-det-{self.detector}-{self.dtype}-b{self.batch}"


def efficiency_cells(generators: tuple[str, ...] | list[str], precisions: tuple[str, ...] | list[str],
                     compile_modes: tuple[bool, ...] | list[bool] = (False,),
                     e2e_batches: tuple[int, ...] | list[int] = ()) -> list[EfficiencyCell]:
    """Every generator x precision x compile mode: the step cell, then one end-to-end cell per batch size.

    Generators outermost and a pipeline's cells next to each other, so one loaded pipeline serves them all. A
    precision meant to run compiled (``fp8rw``) gets its eager and its compiled cells whatever the modes: the speed
    it is for shows only against its own eager latency and compile time, in the same run.
    """
    from quantfake.precisions import get_precision

    specs = [get_precision(p) for p in precisions]  # unknown ids fail here, listing the valid ones
    return [cell for g in generators for s in specs for c in ((False, True) if s.compiled else compile_modes)
            for cell in (EfficiencyCell(get_generator(g).id, s.id, c),
                         *(EfficiencyCell(get_generator(g).id, s.id, c, "e2e", b) for b in e2e_batches))]


def detector_cells(detectors: tuple[str, ...] | list[str], dtypes: tuple[str, ...] | list[str] = tuple(DETECTOR_DTYPES),
                   batches: tuple[int, ...] | list[int] = DETECTOR_BATCHES) -> list[DetectorEfficiencyCell]:
    """Every detector x dtype x batch size."""
    from quantfake.detectors import get_detector

    for d in dtypes:
        detector_dtype(d)
    return [DetectorEfficiencyCell(get_detector(d).id, t, b) for d in detectors for t in dtypes for b in batches]


def detector_dtype(name: str) -> torch.dtype:
    """``"bf16"`` -> ``torch.bfloat16``; unknown names list the accepted ones."""
    if name not in DETECTOR_DTYPES:
        raise ValueError(f"unknown detector dtype {name!r}; accepted: {', '.join(DETECTOR_DTYPES)}")
    return dtype_from_name(name)


# --------------------------------------------------------------------------------------------------
# shapes of one denoiser step


def latent_size_for(profile: str, size: int) -> int:
    """Latent side for an image of ``size`` pixels: /8 for real VAEs, /TINY_VAE_FACTOR for the tiny one."""
    factor = vae_factor(profile)
    if size % factor:
        raise ValueError(f"image size {size} is not a multiple of the {profile} VAE factor {factor}")
    return size // factor


def denoiser_inputs(generator_id: str, denoiser: nn.Module, batch: int, latent_size: int,
                    device: DeviceLike | str, dtype: torch.dtype, seed: int = 0) -> dict[str, Any]:
    """Forward kwargs of one denoiser step of ``generator_id`` at ``batch`` rows and ``latent_size`` latents.

    Widths come from ``denoiser.config``, so the same function serves the tiny and the full-size model.
    ``device`` may be ``"meta"`` (shapes only, for FLOP counting).
    """
    spec = get_generator(generator_id)
    cfg = denoiser.config
    dev = torch.device(device)
    gen = torch.Generator(device="cpu").manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        if dev.type == "meta":
            return torch.empty(shape, device=dev, dtype=dtype)
        return torch.randn(shape, generator=gen, dtype=torch.float32).to(device=dev, dtype=dtype)

    def full(value: float, *shape: int, dt: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.full(shape, value, dtype=dt, device=dev)

    seq = text_sequence_length(spec)
    if spec.family in ("sd", "sdxl"):
        out: dict[str, Any] = dict(
            sample=randn(batch, cfg.in_channels, latent_size, latent_size),
            timestep=full(DENOISE_TIMESTEP, batch),
            encoder_hidden_states=randn(batch, seq, cfg.cross_attention_dim),
        )
        if spec.family == "sdxl":
            text_embeds_dim = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
            pixels = float(latent_size * REAL_VAE_FACTOR)  # original size, crop (0, 0), target size
            time_ids = torch.tensor([pixels, pixels, 0.0, 0.0, pixels, pixels], dtype=dtype).repeat(batch, 1)
            out["added_cond_kwargs"] = {"text_embeds": randn(batch, text_embeds_dim), "time_ids": time_ids.to(dev)}
        return out
    if spec.family == "sd3":
        return dict(
            hidden_states=randn(batch, cfg.in_channels, latent_size, latent_size),
            encoder_hidden_states=randn(batch, seq, cfg.joint_attention_dim),
            pooled_projections=randn(batch, cfg.pooled_projection_dim),
            timestep=full(DENOISE_TIMESTEP, batch),
        )
    if spec.family == "flux":
        if latent_size % 2:
            raise ValueError(f"Flux packs 2x2 latent patches: latent_size must be even, got {latent_size}")
        side = latent_size // 2
        rows = torch.arange(side, dtype=torch.float32)
        img_ids = torch.stack(torch.meshgrid(rows, rows, indexing="ij"), dim=-1).reshape(side * side, 2)
        img_ids = torch.cat([torch.zeros(side * side, 1), img_ids], dim=1)
        out = dict(
            hidden_states=randn(batch, side * side, cfg.in_channels),
            encoder_hidden_states=randn(batch, seq, cfg.joint_attention_dim),
            pooled_projections=randn(batch, cfg.pooled_projection_dim),
            timestep=full(DENOISE_TIMESTEP / 1000.0, batch),  # Flux pipelines pass t / 1000
            img_ids=img_ids.to(device=dev, dtype=dtype),
            txt_ids=torch.zeros(seq, 3, device=dev, dtype=dtype),
        )
        if cfg.guidance_embeds:
            out["guidance"] = full(spec.default_guidance, batch)
        return out
    raise AssertionError(f"unhandled generator family {spec.family!r}")


# --------------------------------------------------------------------------------------------------
# FLOPs on a meta twin

_FLOPS_CACHE: dict[tuple[Any, ...], int] = {}


def _meta(value: Any) -> Any:
    """Inputs moved to ``meta``, floating tensors in bf16 to match the twin."""
    if isinstance(value, torch.Tensor):
        return value.to(device="meta", dtype=torch.bfloat16 if value.is_floating_point() else value.dtype)
    if isinstance(value, dict):
        return {k: _meta(v) for k, v in value.items()}
    return value


def _shapes(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return tuple(value.shape)
    if isinstance(value, dict):
        return tuple(sorted((k, _shapes(v)) for k, v in value.items()))
    return repr(value)


def reference_step_flops(model: nn.Module, inputs: dict[str, Any]) -> int:
    """FLOPs of ``model(**inputs)`` counted on a bf16 ``meta`` twin built from ``model.config``.

    Why a twin: quantized kernels hide their matmuls from FlopCounterMode, and a real forward of a
    12B model just to count would cost a GPU step. Cached per (class, config, input shapes).
    """
    config = getattr(model, "config", None)
    if config is None or not hasattr(type(model), "from_config"):
        raise TypeError(f"reference_step_flops needs a diffusers model with .config, got {type(model).__name__}")
    key = (type(model).__name__, repr(sorted(dict(config).items())), _shapes(inputs))
    if key not in _FLOPS_CACHE:
        prev = torch.get_default_dtype()
        torch.set_default_dtype(torch.bfloat16)
        try:
            with torch.device("meta"):
                twin = type(model).from_config(dict(config)).eval()
        finally:
            torch.set_default_dtype(prev)
        meta_inputs = _meta(inputs)
        with torch.no_grad():
            _FLOPS_CACHE[key] = count_flops(lambda: twin(**meta_inputs, return_dict=False))
        del twin
    return _FLOPS_CACHE[key]


# --------------------------------------------------------------------------------------------------
# measurements


def oom_guarded(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``fn()`` with ``oom: False`` added, or ``{"oom": True, "oom_error": ...}`` after an out-of-memory error.

    Other errors propagate. Memory is freed after the exception (and its traceback's tensors) is dropped.
    """
    error: str | None = None
    try:
        return {**fn(), "oom": False}
    except BaseException as exc:  # noqa: BLE001 - re-raised unless it is an OOM
        if not is_oom(exc):
            raise
        error = f"{type(exc).__name__}: {str(exc)[:300]}"
    free_cached_memory()
    return {"oom": True, "oom_error": error}


def memory_fields(mem: PeakMemory, prefix: str = "") -> dict[str, Any]:
    """Flat report fields of a peak-memory reading (GPU allocator + NVML, or process RSS)."""
    return {
        f"{prefix}peak_vram_gib": mem.max_allocated_gib,
        f"{prefix}peak_reserved_gib": mem.max_reserved_gib,
        f"{prefix}nvml_used_gib": mem.nvml_used_gib_at_exit,
        f"{prefix}peak_rss_gib": mem.process_peak_rss_gib,
        f"{prefix}peak_rss_windowed": mem.peak_rss_is_windowed,
    }


#: dtype of the matmul whose measured peak is the roofline (one ceiling per device, whatever the cell's dtype)
PEAK_DTYPE = {"cuda": "bfloat16", "cpu": "float32"}


def device_peak_tflops(device: DeviceLike) -> float:
    """Measured dense matmul peak of ``device`` (bf16 on GPU, fp32 on CPU); cached per process."""
    return measure_matmul_peak_tflops(device)


def throughput_fields(flops: int, seconds: float, peak_tflops: float, device: torch.device) -> dict[str, Any]:
    """Achieved TFLOP/s and its fraction of the measured matmul peak."""
    achieved = achieved_tflops(flops, seconds)
    return {"tflops_per_s": achieved, "device_peak_tflops": peak_tflops, "device_peak_dtype": PEAK_DTYPE[device.type],
            "roofline_fraction": roofline_fraction(achieved, peak_tflops)}


def latency_fields(stats: TimingStats, of: str) -> dict[str, Any]:
    """The latency fields every timed cell shares: the run record's ``latency_ms`` (median), its samples (the CI
    and the compare gate's test) and what one sample is."""
    return {"latency_ms": stats.median_ms, "latency_samples_ms": list(stats.samples_ms), "latency_of": of,
            "clock": stats.clock}


def measure_denoiser_step(model: nn.Module, inputs: dict[str, Any], device: DeviceLike, repeats: int = 5,
                          warmup: int = 2, compile: bool = False, *, flops_per_step: int | None = None,
                          peak_tflops: float | None = None, sampler: Sampler | None = None) -> dict[str, Any]:
    """Latency, FLOPs, roofline fraction, peak memory and weight bytes of one denoiser step.

    ``flops_per_step`` defaults to :func:`reference_step_flops` (useful FLOPs of the architecture). Peak
    memory covers the warm-up and timed rounds (steady state after compilation). ``compile`` compiles
    ``model`` in place (``nn.Module.compile``), so later calls of ``model`` run compiled too; the first
    call's time is reported as ``compile_s``. ``sampler`` times the rounds (default: :func:`timer_sampler`).
    """
    dev = as_device(device)
    if flops_per_step is None:
        flops_per_step = reference_step_flops(model, inputs)

    def step() -> Any:
        with torch.inference_mode():
            return model(**inputs, return_dict=False)

    compile_s = compile_kernels = compile_tuning = None
    if compile:
        from torch._inductor import config as inductor_config
        from torch._inductor import metrics as inductor_metrics

        compile_tuning = {"max_autotune": inductor_config.max_autotune,
                          "coordinate_descent_tuning": inductor_config.coordinate_descent_tuning}

        kernels_before = inductor_metrics.generated_kernel_count
        model.compile()
        start = time.perf_counter()
        step()
        synchronize(dev)
        compile_s = time.perf_counter() - start
        compile_kernels = inductor_metrics.generated_kernel_count - kernels_before
    with peak_memory(dev) as mem:
        stats = (sampler or timer_sampler(dev))(step, warmup, repeats)
    peak = device_peak_tflops(dev) if peak_tflops is None else peak_tflops
    n_bytes = weights_bytes(model)
    return {
        "step_ms": stats.median_ms, "step_iqr_ms": stats.iqr_ms, "step_min_ms": stats.min_ms,
        "step_repeats": len(stats.samples_ms), **latency_fields(stats, "one denoiser step"),
        "compile": compile, "compile_s": compile_s, "compile_kernels": compile_kernels,
        "compile_tuning": compile_tuning,
        "flops_per_step": flops_per_step, "flops_source": "meta twin of the architecture (bf16), useful FLOPs",
        **throughput_fields(flops_per_step, stats.median_ms / 1e3, peak, dev),
        **memory_fields(mem), "weights_bytes": n_bytes, "weights_gib": n_bytes / GIB,
    }


def pipeline_call_kwargs(spec: GeneratorSpec, steps: int, size: int, images: int = 1,
                         seed: int = 0) -> dict[str, Any]:
    """The txt2img call quantfake.generate makes (same prompts, per-seed generators, guidance, PIL output)."""
    from quantfake.prompts import PROMPTS

    seeds = range(seed, seed + images)
    return dict(prompt=[PROMPTS[s % len(PROMPTS)] for s in seeds], num_inference_steps=steps,
                guidance_scale=spec.default_guidance, height=size, width=size,
                generator=[torch.Generator(device="cpu").manual_seed(s) for s in seeds], output_type="pil",
                **spec.call_kwargs)


def measure_pipeline_e2e(loaded: Any, steps: int, size: int, device: DeviceLike, repeats: int = 3,
                         warmup: int = 1, images: int = 1, *, sampler: Sampler | None = None) -> dict[str, Any]:
    """End-to-end latency of ``images`` images (prompt encoding + ``steps`` denoising steps + VAE decode).

    ``loaded`` is a :class:`quantfake.loading.LoadedPipeline` (tiny or pretrained profile); ``sampler`` times
    the calls (default: :func:`timer_sampler`). A timing of NaN images is no result, yet the PIL output the call
    returns (as ``quantfake.generate`` calls it) can no longer show NaN: numpy's invalid-value flag, raised when
    diffusers casts them to uint8, marks those calls instead (:class:`~quantfake.measure.nonfinite.NonFiniteCalls`,
    no extra work in the timed call). ``e2e_nonfinite_calls`` of ``e2e_calls`` (warm-up included) had them.
    """
    dev = as_device(device)
    pipe = loaded.pipe
    checked = NonFiniteCalls()

    def call() -> Any:
        with torch.inference_mode():
            return pipe(**pipeline_call_kwargs(loaded.generator, steps, size, images))

    with peak_memory(dev) as mem:
        stats = (sampler or timer_sampler(dev))(checked.watch(call), warmup, repeats)
    components = component_weights_bytes(pipe)
    return {
        "e2e_ms": stats.median_ms, "e2e_iqr_ms": stats.iqr_ms, "e2e_repeats": len(stats.samples_ms),
        **latency_fields(stats, f"{images} image(s) end to end, {steps} steps at {size} px"), "e2e_images": images,
        "e2e_ms_per_image": stats.median_ms / images, "images_per_hour": 3.6e6 * images / stats.median_ms,
        "e2e_steps": steps, "e2e_size": size,
        "load_s": loaded.load_seconds, "pipeline_weights_bytes": sum(components.values()),
        "component_weights_bytes": components, **memory_fields(mem, prefix="e2e_"), **checked.fields("e2e_"),
    }


def measure_generation_overhead(loaded: Any, steps: int, size: int, device: DeviceLike, pairs: int = 6,
                                warmup: int = 1, images: int = 1, *, sampler: Sampler | None = None) -> dict[str, Any]:
    """Suite generation path (``quantfake.generate.generate`` into a fresh store) vs a bare pipeline call.

    Same prompts, seeds, steps, guidance and size; calls alternate A, B so drift hits both. The suite side
    includes everything it really does per image (latent callback, PNG + latent + manifest writes, locks).
    ``sampler`` times the alternating calls (default: :func:`timer_sampler`). Both sides are watched for NaN
    images as :func:`measure_pipeline_e2e` watches its calls (``overhead_nonfinite_calls`` of ``overhead_calls``).
    """
    from quantfake.generate import GenerationRequest, generate
    from quantfake.store import Store

    spec = loaded.generator
    # ``images`` one-image chunks against ``images`` one-image bare calls: what a real set costs, with the store's
    # writes overlapping the next chunk's denoising as they do in a run
    req = GenerationRequest(mode="txt2img", n_images=images, steps=steps, guidance=spec.default_guidance,
                            size=size, batch_size=1)
    root = Path(tempfile.mkdtemp(prefix="quantfake-overhead-"))
    calls = iter(range(10**9))
    checked = NonFiniteCalls()

    def suite() -> Any:
        return generate(loaded, req, Store(root / f"run{next(calls)}"), progress=False)

    def bare() -> Any:
        with torch.inference_mode():
            return [loaded.pipe(**pipeline_call_kwargs(spec, steps, size, 1)) for _ in range(images)]

    try:
        comparison = compare_overhead(checked.watch(suite), checked.watch(bare), pairs=pairs, warmup=warmup,
                                      device=device, sampler=sampler)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    summary = comparison.as_dict()
    return {"overhead_ratio_median": summary["ratio_median"], "overhead_ratio_ci95": summary["ratio_ci95"],
            "overhead_pct": summary["overhead_pct"], "overhead_pairs": summary["pairs"],
            "suite_median_ms": summary["a_median_ms"], "bare_median_ms": summary["b_median_ms"],
            # the fixed cost the suite adds (store writes with fsync, manifest, lock), whatever the model's speed
            "overhead_ms_per_image": (summary["a_median_ms"] - summary["b_median_ms"]) / images,
            **checked.fields("overhead_")}


# --------------------------------------------------------------------------------------------------
# detectors


def detector_input_size(spec: Any, tiny: bool) -> int:
    """Square input side a detector sees: its crop / native size; full-resolution detectors get 512 (64 tiny)."""
    policy = spec.tiny_preprocess if tiny else spec.preprocess
    if policy.crop:
        return int(policy.crop)
    if isinstance(policy.resize, tuple) and policy.resize[0] == policy.resize[1]:
        return int(policy.resize[0])
    if tiny:
        return TINY_DETECTOR_SIZE
    return int(spec.native_input_size or FULL_RES_DETECTOR_SIZE)


def measure_detector(module: nn.Module, batch: int, input_size: int, device: DeviceLike, dtype: torch.dtype,
                     repeats: int = 5, warmup: int = 2, *, peak_tflops: float | None = None,
                     sampler: Sampler | None = None) -> dict[str, Any]:
    """Images/s and peak memory of ``module`` at ``batch`` x 3 x ``input_size``^2 in ``dtype``.

    Casts ``module`` in place. ``flop_bound_images_per_s`` is the ceiling if every FLOP ran at the measured
    matmul peak: the gap to it says how far the detector is from compute-bound. ``sampler`` times the forwards
    (default: :func:`timer_sampler`).
    """
    dev = as_device(device)
    module = module.to(device=dev, dtype=dtype).eval()
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(batch, 3, input_size, input_size, generator=gen).to(device=dev, dtype=dtype)
    # fused attention kernels (CPU flash SDPA) are invisible to FlopCounterMode; the math path is counted
    with torch.inference_mode(), sdpa_kernel(SDPBackend.MATH):
        flops_per_image = count_flops(module, x[:1])

    def forward() -> Any:
        with torch.inference_mode():
            return module(x)

    with peak_memory(dev) as mem:
        stats = (sampler or timer_sampler(dev))(forward, warmup, repeats)
    peak = device_peak_tflops(dev) if peak_tflops is None else peak_tflops
    seconds = stats.median_ms / 1e3
    n_bytes = weights_bytes(module)
    return {
        "batch": batch, "input_size": input_size, "dtype": str(dtype).removeprefix("torch."),
        "batch_ms": stats.median_ms, "batch_iqr_ms": stats.iqr_ms, "images_per_s": batch / seconds,
        **latency_fields(stats, f"one forward of {batch} image(s)"),
        "flops_per_image": flops_per_image,
        "flop_bound_images_per_s": peak * 1e12 / flops_per_image if flops_per_image else None,
        **throughput_fields(flops_per_image * batch, seconds, peak, dev),
        **memory_fields(mem), "weights_bytes": n_bytes, "weights_gib": n_bytes / GIB,
    }
