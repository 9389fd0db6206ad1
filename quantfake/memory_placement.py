"""Putting a memory fit into effect: read a loaded pipeline's memory facts, place it by the chosen recipe, cap CUDA.

:mod:`quantfake.memory_fit` chooses (pure arithmetic); this module touches torch and diffusers. The recipe's parts
are diffusers' own switches: ``vae.enable_slicing()`` / ``vae.enable_tiling()``, ``enable_model_cpu_offload`` /
``enable_sequential_cpu_offload`` (given the cell's device: they need an accelerator, so on a CPU the offload is
recorded as not applicable and the pipeline simply stays where it was loaded). On CUDA the budget is made real with
``torch.cuda.set_per_process_memory_fraction``, so a cell cannot take more than it was given: that is how a 24 GiB
card is rehearsed on an 80 GiB H100.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from quantfake.generators import uses_cfg
from quantfake.loading import LoadedPipeline, load_pipeline
from quantfake.measure.devices import synchronize
from quantfake.measure.weights import component_weights_bytes
from quantfake.memory_fit import (
    ELEMENT_BYTES,
    GIB,
    MemoryFit,
    PipelineMemory,
    Recipe,
    choose_recipe,
    denoiser_geometry,
    estimate,
    vae_compute_bytes,
    vae_geometry,
)
from quantfake.validation import check_budget

#: why sequential offload is not offered for bitsandbytes weights (4-bit params re-quantized on dispatch)
BNB_SEQUENTIAL = "bitsandbytes weights break under sequential offload (huggingface/diffusers#10800)"


@dataclass
class Placement:
    """A pipeline's memory facts, the fit chosen for it and what was really applied (recorded in every cell)."""

    memory: PipelineMemory
    fit: MemoryFit
    applied: dict[str, Any] = field(default_factory=dict)

    @property
    def recipe(self) -> Recipe:
        return self.fit.recipe

    def record(self) -> dict[str, Any]:
        return {**self.fit.as_record(), "vae_mode": self.recipe.vae_mode, **self.applied}

    def batch_estimate_gib(self, batch: int) -> float:
        """The estimate of this placement at another batch (the same offload and VAE options)."""
        return estimate(self.memory, replace(self.recipe, batch=batch), self.fit.estimate.size).peak_gib

    def batch_fits(self, batch: int) -> bool:
        return self.batch_estimate_gib(batch) <= self.fit.limit_gib


def largest_module_bytes(pipe: Any) -> int:
    """The most bytes any one module holds in its own parameters and buffers: what sequential offload keeps on the
    device at a time."""
    best = 0
    for comp in pipe.components.values():
        if isinstance(comp, torch.nn.Module):
            for module in comp.modules():
                own = [*module.parameters(recurse=False), *module.buffers(recurse=False)]
                best = max(best, sum(t.numel() * t.element_size() for t in own))
    return best


def pipeline_memory(loaded: LoadedPipeline, guidance: float | None = None) -> PipelineMemory:
    """The memory facts of a loaded (quantized) pipeline: its components' weight bytes and architecture widths."""
    spec, prec, pipe = loaded.generator, loaded.precision, loaded.pipe
    width, patch = denoiser_geometry(spec.family, dict(getattr(pipe, spec.denoiser).config))
    c0, tile, factor = vae_geometry(dict(pipe.vae.config))
    vae_dtype = str(next(pipe.vae.parameters()).dtype).removeprefix("torch.")
    compute = str(prec.torch_dtype).removeprefix("torch.")
    return PipelineMemory(
        spec.id, prec.id, spec.family, component_weights_bytes(pipe), spec.denoiser, width, patch, factor,
        ELEMENT_BYTES[compute], c0, tile, vae_compute_bytes(vae_dtype, bool(pipe.vae.config.get("force_upcast"))),
        rows_per_image=2 if uses_cfg(spec, guidance) else 1, largest_module_bytes=largest_module_bytes(pipe),
        sequential_unsupported=BNB_SEQUENTIAL if prec.kind == "bnb" else None)


def apply_recipe(pipe: Any, recipe: Recipe, device: str) -> dict[str, Any]:
    """Switch the recipe's parts on in ``pipe`` and place it; what was applied (offload needs an accelerator)."""
    if recipe.vae_slicing:
        pipe.vae.enable_slicing()
    if recipe.vae_tiling:
        pipe.vae.enable_tiling()
    dev = torch.device(device)
    if recipe.offload == "none":
        pipe.to(dev)
        return {"offload_applied": recipe.offload}
    if dev.type == "cpu":
        return {"offload_applied": "none", "offload_note": f"{recipe.offload} offload not applicable on the CPU "
                "(it needs an accelerator): the pipeline runs on the CPU as loaded"}
    if recipe.offload == "model":
        pipe.enable_model_cpu_offload(device=dev)
    else:
        pipe.enable_sequential_cpu_offload(device=dev)
    return {"offload_applied": recipe.offload}


def reoffload(pipe: Any) -> None:
    """Send every model-offloaded component back to the CPU, e.g. after calling the denoiser directly (its hook
    brought it to the device and only the next pipeline model would send it back)."""
    if getattr(pipe, "_all_hooks", None):
        pipe.maybe_free_model_hooks()


def enforce_budget(budget_gib: float, device: str) -> dict[str, Any]:
    """Cap torch's CUDA allocator at ``budget_gib`` on ``device`` (a no-op, recorded, on a CPU)."""
    budget_gib = check_budget(budget_gib)
    dev = torch.device(device)
    if dev.type != "cuda":
        return {"cap": f"none on {dev.type}: the budget only chooses the recipe"}
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    total_gib = props.total_memory / GIB
    if budget_gib > total_gib:
        raise ValueError(f"--vram-budget {budget_gib:g} GiB exceeds the {total_gib:.1f} GiB of cuda:{index} "
                         f"({props.name}); give at most {total_gib:.1f}")
    fraction = budget_gib / total_gib
    torch.cuda.set_per_process_memory_fraction(fraction, index)
    return {"cap": f"torch.cuda.set_per_process_memory_fraction({fraction:.4f}) of {total_gib:.1f} GiB on cuda:{index}"}


def load_within_budget(generator: str, precision: str, profile: str, *, budget_gib: float, size: int, batch: int,
                       device: str, guidance: float | None = None, **load_kwargs: Any) -> LoadedPipeline:
    """Load unplaced, choose the least costly recipe under ``budget_gib`` and place by it.

    Raises :class:`quantfake.errors.MemoryBudgetError` (with what it would need) when no recipe fits; the
    pipeline, still on the CPU, is dropped.
    """
    cap = enforce_budget(budget_gib, device)
    loaded = load_pipeline(generator, precision, profile, device=device, place=False, **load_kwargs)
    memory = pipeline_memory(loaded, guidance)
    fit = choose_recipe(memory, budget_gib, size, batch)
    start = time.perf_counter()
    applied = apply_recipe(loaded.pipe, fit.recipe, device)
    synchronize(device)
    loaded.load_seconds += time.perf_counter() - start  # placing is part of loading
    loaded.memory_fit = Placement(memory, fit, {**applied, **cap})
    return loaded
