"""One efficiency benchmark cell, start to finish: skip rules, rounds, load, measure, time, report fields, record.

Library logic behind ``bench/test_efficiency.py`` so that the bench module stays a few lines per test
(no pytest here). A cell that cannot run raises :class:`CellSkipped`; the bench module turns that into a
pytest skip. ``benchmark`` arguments are pytest-benchmark fixtures, used only through ``pedantic`` and
``extra_info``. ``options`` are the validated bench options (``quantfake.options.build_options``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import torch

from quantfake.errors import MemoryBudgetError, MissingWeightsError
from quantfake.generators import get_generator, step_batch, uses_cfg
from quantfake.loading import load_pipeline, resolve_device
from quantfake.measure.devices import device_info, synchronize
from quantfake.measure.oom import free_cached_memory
from quantfake.measure.residency import register_holder, release_others
from quantfake.measure.timing import Sampler, TimingStats
from quantfake.memory_placement import enforce_budget, load_within_budget, reoffload
from quantfake.precisions import get_precision, reference_precision, unavailable_reason
from quantfake.results import CellResult
from quantfake.session.efficiency import record
from quantfake.session.efficiency.cells import (
    DETECTOR_BATCHES,
    DETECTOR_DTYPES,
    DetectorEfficiencyCell,
    EfficiencyCell,
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
)

E2E_BATCHES: tuple[int, ...] = (4,)  # larger batches timed end to end on a GPU, besides batch 1
IMAGES_PER_STEP = 1  # one image per denoiser step (two rows under CFG): the per-image cost
#: (warmup rounds, timed rounds) of each measurement per device type. Every timed round is a pytest-benchmark
#: round, and enough of them give the latency a confidence interval (the compare gate tests these samples).
ROUNDS: dict[str, dict[str, tuple[int, int]]] = {
    "cpu": {"step": (1, 5), "e2e": (1, 3), "detector": (1, 5)},
    # one full-size step is 50 ms .. 3 s, one image 1.5 .. 10 s: a 45-cell H100 run stays inside its time box
    "cuda": {"step": (1, 5), "e2e": (1, 3), "e2e_batch": (1, 2), "detector": (1, 5)},
}
#: the overhead guard's alternating suite / bare pairs and images per call, per device type
# 20 overhead pairs on a CPU: with 8, a 2-core box alone gave upper CI bounds of 1.08-1.37 for the same cell
OVERHEAD_PAIRS: dict[str, dict[str, int]] = {"cpu": {"pairs": 20, "images": 2}, "cuda": {"pairs": 4, "images": 8}}
#: the guard fails when the suite may be slower than this (upper bound of the paired ratio's 95 % CI):
#: 3 % on a GPU (the target), 25 % on a shared 2-core CPU runner where neighbours add noise of that size
OVERHEAD_TOLERANCE: dict[str, float] = {"cpu": 0.25, "cuda": 0.03}
#: the overhead guard's tiny pipelines run at least this many steps: real pipelines run 28-50, and the guard asks
#: what the store costs next to a realistic call, not next to a 4-step toy (recorded in the cell as ``steps``)
TINY_OVERHEAD_MIN_STEPS = 20
DEADLINE_ENV = "QUANTFAKE_EFFIC_DEADLINE"  # epoch seconds after which remaining cells skip (time-boxed runs)
TF32_ENV = "QUANTFAKE_TF32"  # "1": fp32 matmuls may use TF32 on GPU; recorded per cell
E2E_BATCHES_ENV = "QUANTFAKE_E2E_BATCHES"  # comma-separated batches after batch 1 ("" none): time-boxed runs
#: the bench module's parametrized fixtures; :func:`cell_params` lists each one's (id, value) pairs
PARAMETRIZED_FIXTURES = ("effic_cell", "overhead_generator", "det_cell")
#: what the pytest-benchmark rounds are timed with (the wall clock after a device synchronize on GPU)
BENCHMARK_CLOCK = "pytest-benchmark perf_counter (device synchronized)"


class CellSkipped(Exception):
    """This cell cannot run here (device, precision, profile or time budget); the message says why."""


# ------------------------------------------------------------------ cell lists and per-cell setup


def cell_params(fixture: str, options: Any) -> list[tuple[str, Any]]:
    """``(test id, value)`` pairs for one parametrized fixture, from the registries filtered by the options.

    Each generator x precision has a step cell and end-to-end cells (batch 1, and :data:`E2E_BATCHES` on a GPU).
    A covering grid (``--grid ci``) times each generator and precision's step once (the covering plan's pairs plus
    the reference of the cheapest generator), end to end only that reference, the overhead guard on the cheapest
    generator, and each detector once with dtypes and batch sizes in turn.
    """
    from quantfake.cells import cheapest_generator, is_covering, plan_for

    covering = is_covering(options)
    if fixture == "effic_cell":
        compile_modes = (bool(options.compile),)
        batches = e2e_batches(resolve_device(options.device))
        if not covering:
            cells = efficiency_cells(options.generators, options.precisions, compile_modes, batches)
            return [(c.id, c) for c in cells]
        ref = reference_precision(options.precisions)
        pairs = [(cheapest_generator(options), ref), *plan_for(options).generator_precisions()]
        # every generator and precision's step once; the end-to-end path once, on the cheapest pipeline
        return [(c.id, c) for i, (g, p) in enumerate(pairs)
                for c in efficiency_cells((g,), (p,), compile_modes, batches if i == 0 else ())]
    if fixture == "overhead_generator":
        gens = [] if options.compile else list(options.generators)  # whole pipeline
        gens = [cheapest_generator(options)] if covering and gens else gens
        return [(f"effic-overhead-{g}", g) for g in gens]
    if fixture == "det_cell":
        if options.compile:
            return []
        if not covering:
            return [(c.id, c) for c in detector_cells(options.detectors)]
        dtypes, batches = tuple(DETECTOR_DTYPES), DETECTOR_BATCHES
        return [(c.id, c) for i, d in enumerate(options.detectors)
                for c in detector_cells((d,), (dtypes[i % len(dtypes)],), (batches[i % len(batches)],))]
    raise ValueError(f"unknown efficiency fixture {fixture!r}; accepted: {', '.join(PARAMETRIZED_FIXTURES)}")


def e2e_batches(device: str) -> tuple[int, ...]:
    """Batch sizes of the end-to-end cells: one image, and on a GPU also :data:`E2E_BATCHES`, or the batches
    ``QUANTFAKE_E2E_BATCHES`` names (empty: none)."""
    value = os.environ.get(E2E_BATCHES_ENV)
    larger = E2E_BATCHES
    if value is not None:
        try:
            larger = tuple(int(b) for b in value.split(",") if b.strip())
        except ValueError:
            larger = (0,)
        if any(b < 2 for b in larger):
            raise ValueError(f"{E2E_BATCHES_ENV}={value!r}: expected comma-separated batch sizes >= 2, or empty for none")
    return (IMAGES_PER_STEP, *(larger if device.startswith("cuda") else ()))


def xdist_group(cell_id: str, value: Any) -> str:
    """The pytest-xdist group of an efficiency cell: a generator x precision's cells share one worker (and one
    loaded pipeline); other cells go alone. (``quantfake.scheduling.group_of_nodeid`` reads the same name back
    from the cell id where pytest drops xdist's group suffix.)"""
    if isinstance(value, EfficiencyCell):
        return f"effic-{value.generator}-{value.precision}"
    return cell_id


def efficiency_device(requested: str | None, vram_budget_gib: float | None = None) -> str:
    """The resolved device; on GPU with ``QUANTFAKE_TF32=1``, fp32 matmuls may run on TF32 tensor cores, and with
    ``--vram-budget`` torch's allocator is capped there for every cell (detectors and the overhead guard too)."""
    device = resolve_device(requested)
    if device.startswith("cuda") and os.environ.get(TF32_ENV) == "1":
        torch.set_float32_matmul_precision("high")
    if vram_budget_gib:
        enforce_budget(vram_budget_gib, device)
    return device


def load_for_cell(generator: str, precision: str, options: Any, device: str) -> Any:
    """The whole pipeline of an efficiency cell: placed on ``device``, or under ``--vram-budget`` by the least
    costly memory fit for one image a call (:class:`quantfake.errors.MemoryBudgetError` when none fits)."""
    where = dict(device=device, store=store_for(options), model_root=options.model_root, gguf_dir=options.gguf_dir)
    if not options.vram_budget_gib:
        return load_pipeline(generator, precision, options.profile, **where)
    size = options.size or get_generator(generator).native_size
    return load_within_budget(generator, precision, options.profile, budget_gib=options.vram_budget_gib, size=size,
                              batch=IMAGES_PER_STEP, guidance=options.guidance, **where)


def deadline_skip_reason(now: float | None = None) -> str | None:
    """Why the remaining cells skip (``QUANTFAKE_EFFIC_DEADLINE`` passed), so a time-boxed run still ends; else None."""
    deadline = os.environ.get(DEADLINE_ENV)
    if deadline and (time.time() if now is None else now) > float(deadline):
        return f"time budget spent ({DEADLINE_ENV}={deadline})"
    return None


def start_cell() -> None:
    """Before each cell: skip once the time budget is spent, then seed so random inputs repeat."""
    reason = deadline_skip_reason()
    if reason:
        raise CellSkipped(reason)
    torch.manual_seed(0)


def end_cell() -> None:
    """After each cell: hand cached device memory back, so the next cell's peak is its own."""
    free_cached_memory()


def rounds_for(device: str, measure: str) -> tuple[int, int]:
    """``(warmup, rounds)`` of one measurement on a device string (``cuda:1`` -> cuda; see :data:`ROUNDS`)."""
    table = ROUNDS[torch.device(device).type]
    if measure == "e2e_batch" and measure not in table:  # no larger batches on this device type
        measure = "e2e"
    if measure not in table:
        raise ValueError(f"unknown efficiency measurement {measure!r}; accepted: {', '.join(table)}")
    return table[measure]


def store_for(options: Any) -> Any:
    """The options carry the store folder (a Path); loaders want a Store."""
    from quantfake.store import Store

    return options.store if isinstance(options.store, Store) else Store(options.store)


def common_fields(device: str, profile: str) -> dict[str, Any]:
    """Report fields every cell records: where and with what it ran."""
    info = device_info(device)
    return {"profile": profile, "device": device, "device_name": info.get("name"),
            "worker": os.environ.get("PYTEST_XDIST_WORKER", "main"),
            "float32_matmul_precision": torch.get_float32_matmul_precision(), "torch_version": torch.__version__}


def efficiency_result(cell_id: str, extra: dict[str, Any]) -> CellResult:
    """The cell's run-record entry (:mod:`quantfake.session.efficiency.record`); an end-to-end cell's memory is its
    ``e2e_`` peak."""
    return record.efficiency_result(cell_id, extra, memory_prefix="e2e_" if extra.get("measure") == "e2e" else "")


def benchmark_sampler(benchmark: Any, device: str) -> Sampler:
    """A :data:`~quantfake.measure.timing.Sampler` that is pytest-benchmark itself: ``benchmark.pedantic``
    times the rounds (each synchronized, so the wall clock covers GPU work) and its own samples come back. The
    cell's fields and the benchmark JSON's stats are then the same numbers: one timer."""
    def sample(fn: Callable[[], Any], warmup: int, rounds: int) -> TimingStats:
        def timed() -> None:
            fn()
            synchronize(device)

        synchronize(device)
        benchmark.pedantic(timed, rounds=rounds, warmup_rounds=warmup)
        seconds = benchmark.stats.stats.data  # pytest-benchmark's per-round durations
        return TimingStats.from_samples([s * 1e3 for s in seconds], clock=BENCHMARK_CLOCK, device=device)

    return sample


def require_benchmark(benchmark: Any) -> None:
    """Efficiency cells time through pytest-benchmark; with it disabled they have nothing to measure with."""
    if not getattr(benchmark, "enabled", True):
        raise CellSkipped("pytest-benchmark is disabled (--benchmark-disable): efficiency cells time through it")


def finish_benchmark(benchmark: Any, extra: dict[str, Any]) -> None:
    """The cell's report fields into ``benchmark.extra_info``. An out-of-memory cell still gets a JSON entry: an
    empty round when nothing was timed, else the rounds that finished (pytest-benchmark drops errored ones)."""
    benchmark.extra_info.update(extra)
    if not (extra.get("oom") or extra.get("memory_fit_refused")):
        return
    benchmark.extra_info["timed"] = "nothing: the cell " + (
        "ran out of memory" if extra.get("oom") else "does not fit --vram-budget")
    if benchmark.stats is None:
        benchmark.pedantic(lambda: None, rounds=1)
    elif benchmark.stats.stats.data:
        benchmark.has_error = False


# ------------------------------------------------------------------ the loaded pipeline, shared by neighbours

#: the last pipeline loaded: a generator x precision's step and end-to-end cells run one after another and share
#: it; another pipeline replaces it (one full-size pipeline in memory at a time)
_PIPELINE: dict[tuple[Any, ...], Any] = {}


def shared_pipeline(generator: str, precision: str, options: Any, device: str) -> Any:
    """The loaded pipeline of ``generator`` x ``precision`` (loading it, after releasing any other)."""
    key = (generator, precision, options.profile, device, str(options.model_root), str(options.store),
           str(options.gguf_dir))
    if key not in _PIPELINE:
        release_pipeline()
        if device.startswith("cuda"):  # the peak this cell records must not hold the session's pipelines too
            release_others(HOLDER)
        _PIPELINE[key] = load_for_cell(generator, precision, options, device)
    return _PIPELINE[key]


def release_pipeline() -> None:
    """Drop the shared pipeline and its device memory (before another loads, and after an out-of-memory error)."""
    _PIPELINE.clear()
    free_cached_memory()


#: this module's name among the pipeline holders (:mod:`quantfake.measure.residency`)
HOLDER = "efficiency cells"
register_holder(HOLDER, release_pipeline)


# ------------------------------------------------------------------ generator cells


def generator_skip_reason(cell: EfficiencyCell, device: str, profile: str) -> str | None:
    """Why a generator cell cannot run on ``device`` under ``profile``; None when it can."""
    reason = unavailable_reason(get_precision(cell.precision), device)
    if reason:
        return reason
    if profile == "random" and not device.startswith("cuda"):
        return "the random profile builds full-size pipelines (up to 17B parameters): GPU only"
    if cell.compile and not device.startswith("cuda"):
        return "torch.compile cells are GPU only (CPU inductor compile is minutes per model)"
    return None


def run_generator_cell(cell: EfficiencyCell, options: Any, device: str, benchmark: Any) -> dict[str, Any]:
    """One denoiser step, or ``cell.images`` images end to end, at one precision; the report fields."""
    spec, prec = get_generator(cell.generator), get_precision(cell.precision)
    profile = options.profile
    reason = generator_skip_reason(cell, device, profile)
    if reason:
        raise CellSkipped(reason)
    require_benchmark(benchmark)
    size = options.size or spec.native_size
    extra: dict[str, Any] = {
        **common_fields(device, profile), "generator": spec.id, "precision": prec.id, "compile": cell.compile,
        "measure": cell.measure, "images": cell.images, "size": size, "cfg": uses_cfg(spec),
        "compute_dtype": str(prec.torch_dtype).removeprefix("torch."),
    }
    sampler = benchmark_sampler(benchmark, device)
    try:
        try:
            loaded = oom_guarded(lambda: {"pipeline": shared_pipeline(spec.id, prec.id, options, device)})
        except MemoryBudgetError as exc:
            loaded = {"oom": False, "memory_fit_refused": str(exc)}
        except MissingWeightsError as exc:  # a cell whose weights are missing skips naming the path it sought
            raise CellSkipped(str(exc)) from None
        if "pipeline" in loaded:
            extra.update(loaded["pipeline"].weights_source)  # a GGUF file's path, sha256, origin, types
        fit = None if "pipeline" not in loaded else loaded["pipeline"].memory_fit
        if fit is not None:
            extra["memory_fit"] = fit.record()
        if loaded["oom"] or "memory_fit_refused" in loaded:
            extra.update(loaded)
        elif cell.measure == "step":
            extra.update(_step_fields(cell, loaded["pipeline"], profile, size, device, sampler))
        else:
            extra.update(_e2e_fields(cell, loaded["pipeline"], options.steps or spec.default_steps, size, device,
                                     sampler))
    finally:
        if extra.get("oom"):
            release_pipeline()
    finish_benchmark(benchmark, extra)
    return extra


def _step_fields(cell: EfficiencyCell, loaded: Any, profile: str, size: int, device: str,
                 sampler: Sampler) -> dict[str, Any]:
    """One denoiser step at the batch the pipeline runs, fed dummy inputs of the real shapes."""
    spec, prec = get_generator(cell.generator), get_precision(cell.precision)
    latent, rows = latent_size_for(profile, size), step_batch(spec, IMAGES_PER_STEP)
    warmup, rounds = rounds_for(device, "step")
    fields = {"latent_size": latent, "images_per_step": IMAGES_PER_STEP, "step_batch": rows,
              "load_s": loaded.load_seconds}

    def step() -> dict[str, Any]:
        inputs = denoiser_inputs(spec.id, loaded.denoiser, rows, latent, device, prec.torch_dtype)
        return measure_denoiser_step(loaded.denoiser, inputs, device, repeats=rounds, warmup=warmup,
                                     compile=cell.compile and not is_compiled(loaded.denoiser), sampler=sampler)

    return {**fields, **oom_guarded(step)}


def _e2e_fields(cell: EfficiencyCell, loaded: Any, steps: int, size: int, device: str,
                sampler: Sampler) -> dict[str, Any]:
    """``cell.images`` images end to end (prompt encoding, every denoising step, VAE decode)."""
    fit = loaded.memory_fit
    if fit is not None and cell.images > IMAGES_PER_STEP and not fit.batch_fits(cell.images):
        raise CellSkipped(f"estimated {fit.batch_estimate_gib(cell.images):.2f} GiB at batch {cell.images} with the "
                          f"cell's recipe ({fit.recipe.summary}), over the {fit.fit.limit_gib:.2f} GiB usable under "
                          "--vram-budget")
    if cell.compile and not is_compiled(loaded.denoiser):
        loaded.denoiser.compile()  # the step cell compiles in place; alone (e.g. another worker), compile here
    reoffload(loaded.pipe)  # a model-offloaded denoiser called directly (the step cell) stays on the device
    warmup, rounds = rounds_for(device, "e2e" if cell.images == IMAGES_PER_STEP else "e2e_batch")
    return oom_guarded(lambda: measure_pipeline_e2e(loaded, steps, size, device, repeats=rounds, warmup=warmup,
                                                    images=cell.images, sampler=sampler))


def is_compiled(model: Any) -> bool:
    """Whether ``nn.Module.compile`` was already called on ``model`` (it compiles in place)."""
    return getattr(model, "_compiled_call_impl", None) is not None


# ------------------------------------------------------------------ overhead guard


def run_overhead_cell(generator: str, options: Any, device: str, benchmark: Any) -> dict[str, Any]:
    """The suite's generation path against a bare diffusers call at the reference precision; the report fields.

    The alternating suite / bare calls are pytest-benchmark's rounds (suite on even rounds, bare on odd)."""
    spec = get_generator(generator)
    profile = options.profile
    available = [p for p in options.precisions if unavailable_reason(get_precision(p), device) is None]
    if not available:
        raise CellSkipped(f"none of the precisions {options.precisions} runs on {device}")
    require_benchmark(benchmark)
    precision = reference_precision(available)
    plan = OVERHEAD_PAIRS[torch.device(device).type]
    size = options.size or spec.native_size
    steps = options.steps or spec.default_steps
    if profile == "tiny":  # at 4 steps a tiny image is ~30 ms, so the store's ~4 ms would read as 12 %
        steps = max(steps, TINY_OVERHEAD_MIN_STEPS)
    extra: dict[str, Any] = {**common_fields(device, profile), "generator": spec.id, "precision": precision,
                             "size": size, "steps": steps, "images": plan["images"],
                             "rounds": "suite and bare calls alternating (suite on even rounds)"}
    try:
        loaded = shared_pipeline(spec.id, precision, options, device)
    except MemoryBudgetError as exc:
        extra["memory_fit_refused"] = str(exc)
        finish_benchmark(benchmark, extra)
        return extra
    if loaded.memory_fit is not None:
        extra["memory_fit"] = loaded.memory_fit.record()
    extra.update(oom_guarded(lambda: measure_generation_overhead(
        loaded, steps, size, device, pairs=plan["pairs"], warmup=1, images=plan["images"],
        sampler=benchmark_sampler(benchmark, device))))
    extra["overhead_tolerance"] = overhead_tolerance(device)
    if extra.get("oom"):
        release_pipeline()
    finish_benchmark(benchmark, extra)
    return extra


def overhead_tolerance(device: str) -> float:
    """The :data:`OVERHEAD_TOLERANCE` of a device string (``cuda:1`` -> cuda)."""
    return OVERHEAD_TOLERANCE[torch.device(device).type]


def overhead_inconclusive(extra: dict[str, Any]) -> str | None:
    """Why the guard cannot judge: its CI is wider than the whole tolerance band (a noisy, shared machine), else None.

    Such a run is not evidence either way; it is reported (and recorded in the JSON), not passed or failed.
    """
    low, high = extra["overhead_ratio_ci95"]
    tol = extra["overhead_tolerance"]
    if high - low > 2 * tol:
        return (f"{extra['generator']}: overhead inconclusive on this machine: 95 % CI of the ratio "
                f"{low:.3f}..{high:.3f} is wider than the tolerance band 1 +/- {tol:.0%} (other load on the CPU?)")
    return None


def overhead_message(extra: dict[str, Any]) -> str:
    """The guard's failure message: how much slower, with the ratio's 95 % CI and the tolerance."""
    low, high = extra["overhead_ratio_ci95"]
    return (f"{extra['generator']}: the suite's generation path is slower than a bare pipeline call by "
            f"{extra['overhead_pct']:.1f} % (95 % CI of the ratio {low:.3f}..{high:.3f}, tolerance "
            f"{extra['overhead_tolerance']:.0%})")


# ------------------------------------------------------------------ detector cells


def detector_skip_reason(cell: DetectorEfficiencyCell, device: str, profile: str) -> str | None:
    """Why a detector cell cannot run on ``device`` under ``profile``; None when it can."""
    on_gpu = device.startswith("cuda")
    if profile != "tiny" and not on_gpu:
        return "full-size detectors (CLIP ViT-L, ResNet-50 at full resolution) are timed on GPU only"
    if cell.dtype == "fp16" and not on_gpu:
        return (f"fp16 detectors are timed on GPU only (CPU float16 kernels are not a deployment path); "
                f"CPU dtypes: {', '.join(d for d in DETECTOR_DTYPES if d != 'fp16')}")
    return None


def run_detector_cell(cell: DetectorEfficiencyCell, options: Any, device: str, benchmark: Any) -> dict[str, Any]:
    """Images/s and peak memory of one detector at one dtype and batch size, next to its FLOP-bound limit.

    Weights are a seeded random init: throughput does not depend on their values, so no checkpoint is needed.
    """
    from quantfake.detectors import get_detector
    from quantfake.detectors.loaded import build_module

    spec = get_detector(cell.detector)
    profile = options.profile
    tiny = profile == "tiny"
    reason = detector_skip_reason(cell, device, profile)
    if reason:
        raise CellSkipped(reason)
    require_benchmark(benchmark)
    release_pipeline()  # detector cells come after the generators': their pipeline is no longer needed
    warmup, rounds = rounds_for(device, "detector")
    size = detector_input_size(spec, tiny)
    dtype = detector_dtype(cell.dtype)
    extra: dict[str, Any] = {**common_fields(device, profile), "detector": spec.id, "precision": cell.dtype,
                             "batch": cell.batch, "architecture": "tiny" if tiny else "full", "weights": "random init"}
    holder: dict[str, Any] = {}

    def run() -> dict[str, Any]:
        holder["module"] = build_module(spec, tiny=tiny).to(device)
        return measure_detector(holder["module"], cell.batch, size, device, dtype, repeats=rounds, warmup=warmup,
                                sampler=benchmark_sampler(benchmark, device))

    try:
        extra.update(oom_guarded(run))
    finally:
        holder.clear()
    finish_benchmark(benchmark, extra)
    return extra
