"""Memory fit (``--vram-budget GIB``): the least costly way to run a cell inside a VRAM budget, chosen before it runs.

Why: a 24 GB card cannot hold Flux-dev in bf16 (31.4 GiB of weights with its T5-XXL), yet diffusers runs it with
components offloaded to CPU, slower. Which recipe a cell needs follows from its weight bytes and its activations,
so it is chosen up front from an estimate, recorded in the cell, and a cell no recipe fits is refused with the
numbers instead of crashing half-way. Pure arithmetic here (no torch import): :mod:`quantfake.memory_placement` reads a
loaded pipeline into a :class:`PipelineMemory`, applies the chosen :class:`Recipe` and caps the CUDA allocator.

**The estimate** is the peak of torch's allocated memory during one pipeline call: the largest, over the call's
three phases, of the weights resident in that phase plus the phase's activations.

* text encoding: the text encoders' weights (activations are negligible: T5-XXL at 512 tokens is ~10 MiB a row);
* denoising: the denoiser's weights, plus ``rows x DENOISE_UNITS[family] x tokens x width x bytes`` (rows: two per
  image under classifier-free guidance; tokens: latent positions after patching; width: attention width of a
  transformer, first block's channels of a UNet; bytes: the compute dtype's element size), plus, for LLM.int8 and
  torchao fp8 dynamic quantization, :data:`STEP_EXTRA_OF_WEIGHTS` times the denoiser's bytes;
* decoding: the VAE's weights, plus ``(VAE_FIXED_UNITS + images x VAE_PER_IMAGE_UNITS) x side^2 x c0 x bytes``
  (side: the image, or the VAE's tile when tiling applies; c0: the decoder's first block's channels; images: one
  with VAE slicing, else the batch). img2img's encoding of its init images is taken to need no more: the encoder
  is the decoder's smaller mirror (two layers a block instead of three).

Which weights are resident: all of them with no offload; one component at a time with model offload (diffusers
moves each model to the GPU when it runs and the previous one back); one module's own parameters at a time with
sequential offload.

**Where the constants come from** (``python scripts/memory_fit_calibration.py`` refits them from the records and
checks every recorded peak against the estimate; ``tests/test_memory_fit.py`` runs that check):

* decode: ``benchmarks/rehearsal/effic_e2e_h200.json``, whole full-size pipelines on an H200 at 1024 px, bf16
  compute (sd3, sdxl, flux x bf16, nf4): end-to-end peak minus pipeline weights, at batch 1 and 4. The three
  families share one VAE decoder (c0 = 128) and the six pairs agree within 0.1 GiB: 0.60 GiB + 1.88 GiB an image,
  i.e. the decoder's peak holds about 7.5 full-resolution copies of its last stage per image. In-sample: no record
  at another size exists, so scaling with the pixel count (convolutions, memory-efficient attention) is assumed.
* denoise: ``benchmarks/h100/effic_random_<generator>.json``, the bare full-size denoiser on an H100, one step at
  native size: step peak minus denoiser weights, per row, at bf16 (flux 0.49 GiB a row, sd3 0.19, sd35 0.19, sdxl
  0.23, sd15 0.09 at 512 px); a family takes the larger of its members. sd21, sd35l and fluxs were not measured:
  they take their family's constant at their own width. fp32 is estimated at twice bf16 (measured 1.7x: the
  estimate errs high). The whole-pipeline step peaks of the H200 file check these constants out of sample.
* LLM.int8 held 0.23-1.01x its int8 weight bytes again during a step, torchao fp8dq 0.04-0.24x, in the same H100
  files; the largest is used (int8 1.01, fp8dq 0.24): those estimates err high (sd15 int8 by 57 %).
* :data:`HEADROOM_FRACTION` (5 % of the budget kept free for the caching allocator's fragmentation) is a judgement,
  not a measurement: ``scripts/vram_budget_rehearsal.sh`` reports estimate and measured peak side by side.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from quantfake.errors import MemoryBudgetError
from quantfake.validation import check_budget

GIB = 2**30
OFFLOADS: tuple[str, ...] = ("none", "model", "sequential")  # least costly first
#: share of the budget kept free for allocator fragmentation (a judgement; see the module docstring)
HEADROOM_FRACTION = 0.05
VAE_FIXED_UNITS = 2.39  # decode activations independent of the batch, in side^2 x c0 x bytes units
VAE_PER_IMAGE_UNITS = 7.52  # decode activations per image decoded at once, same units
#: denoiser activations per row, in tokens x width x bytes units, per generator family (bf16 records, see above)
DENOISE_UNITS: dict[str, float] = {"flux": 21.1, "sd3": 16.4, "sdxl": 23.1, "sd": 35.2}
#: memory a step holds beyond weights and activations, as a multiple of the denoiser's weight bytes
STEP_EXTRA_OF_WEIGHTS: dict[str, float] = {"int8": 1.01, "fp8dq": 0.24}


@dataclass(frozen=True)
class ActivationModel:
    """The constants of the estimate, together, so the calibration script can refit and compare them."""

    vae_fixed_units: float = VAE_FIXED_UNITS
    vae_per_image_units: float = VAE_PER_IMAGE_UNITS
    denoise_units: Mapping[str, float] = field(default_factory=lambda: dict(DENOISE_UNITS))
    step_extra_of_weights: Mapping[str, float] = field(default_factory=lambda: dict(STEP_EXTRA_OF_WEIGHTS))


DEFAULT_MODEL = ActivationModel()


@dataclass(frozen=True)
class Recipe:
    """How a cell runs: offload mode, VAE slicing / tiling, images per pipeline call."""

    offload: str = "none"  # one of OFFLOADS
    vae_slicing: bool = False
    vae_tiling: bool = False
    batch: int = 1

    def __post_init__(self) -> None:
        if self.offload not in OFFLOADS:
            raise ValueError(f"unknown offload {self.offload!r}; accepted: {', '.join(OFFLOADS)}")
        if self.batch < 1:
            raise ValueError(f"batch must be >= 1, got {self.batch}")

    @property
    def vae_mode(self) -> str:
        """``""`` (plain decode), ``"slicing"``, ``"tiling"`` or ``"tiling+slicing"``: what changes decoded pixels."""
        return "+".join(name for name, on in (("tiling", self.vae_tiling), ("slicing", self.vae_slicing)) if on)

    @property
    def summary(self) -> str:
        """``"model offload + VAE slicing, batch 2"``; ``"as is, batch 1"`` when nothing is needed."""
        parts = [f"{self.offload} offload"] if self.offload != "none" else []
        parts += [f"VAE {self.vae_mode}"] if self.vae_mode else []
        return f"{' + '.join(parts) or 'as is'}, batch {self.batch}"


@dataclass(frozen=True)
class PipelineMemory:
    """What the estimate needs to know of one loaded (quantized) pipeline; built by ``memory_placement``."""

    generator: str
    precision: str
    family: str
    component_bytes: Mapping[str, int]  # weight bytes as stored (quantized ones packed)
    denoiser: str  # component name of the denoiser
    denoiser_width: int  # attention width (transformer) or first block's channels (UNet)
    denoiser_patch: int  # latent positions per token side (SD3 2, Flux 2 after packing, UNet 1)
    latent_factor: int  # image pixels per latent position (8 for real VAEs)
    compute_bytes: int  # element size of the denoiser's activations
    vae_c0: int  # channels of the decoder's first (full-resolution) block
    vae_tile_px: int  # tile side of tiled decoding (the VAE's sample_size): tiling helps only above it
    vae_compute_bytes: int  # element size of the decode (fp16 VAEs that upcast decode in fp32)
    rows_per_image: int = 1  # 2 under classifier-free guidance
    largest_module_bytes: int | None = None  # one module's own parameters, the most (sequential offload)
    sequential_unsupported: str | None = None  # why sequential offload is not offered, if it is not

    @property
    def vae(self) -> str:
        return "vae"

    def weights(self, component: str) -> int:
        return int(self.component_bytes.get(component, 0))

    @property
    def text_encoder_bytes(self) -> list[int]:
        return [int(b) for c, b in self.component_bytes.items() if c not in (self.denoiser, self.vae)]


@dataclass(frozen=True)
class Estimate:
    """Peak allocated GiB of one pipeline call under a recipe, per phase (resident weights + activations)."""

    recipe: Recipe
    size: int
    phases_gib: Mapping[str, float]
    weights_gib: float  # resident at the peak phase
    activations_gib: float  # at the peak phase

    @property
    def peak_gib(self) -> float:
        return max(self.phases_gib.values())

    @property
    def peak_phase(self) -> str:
        return max(self.phases_gib, key=lambda k: self.phases_gib[k])


def denoise_activation_bytes(mem: PipelineMemory, rows: int, size: int, model: ActivationModel = DEFAULT_MODEL) -> float:
    """Activations of one denoiser step at ``rows`` rows and ``size`` pixels (see the module docstring)."""
    if mem.family not in model.denoise_units:
        raise ValueError(f"no denoiser activation constant for family {mem.family!r}; "
                         f"known: {', '.join(model.denoise_units)}")
    tokens = (size // mem.latent_factor // mem.denoiser_patch) ** 2
    return model.denoise_units[mem.family] * rows * tokens * mem.denoiser_width * mem.compute_bytes


def decode_activation_bytes(mem: PipelineMemory, images: int, size: int, tiling: bool,
                            model: ActivationModel = DEFAULT_MODEL) -> float:
    """Activations of decoding ``images`` images at once; tiling decodes tiles of ``vae_tile_px`` when smaller."""
    side = mem.vae_tile_px if tiling and size > mem.vae_tile_px else size
    unit = side * side * mem.vae_c0 * mem.vae_compute_bytes
    return (model.vae_fixed_units + model.vae_per_image_units * images) * unit


def estimate(mem: PipelineMemory, recipe: Recipe, size: int, model: ActivationModel = DEFAULT_MODEL) -> Estimate:
    """Peak allocated memory of one call of ``recipe.batch`` images at ``size`` pixels."""
    den_act = denoise_activation_bytes(mem, recipe.batch * mem.rows_per_image, size, model)
    dec_act = decode_activation_bytes(mem, 1 if recipe.vae_slicing else recipe.batch, size, recipe.vae_tiling, model)
    extra = model.step_extra_of_weights.get(mem.precision, 0.0) * mem.weights(mem.denoiser)
    if recipe.offload == "none":
        every = sum(int(b) for b in mem.component_bytes.values()) + extra
        resident = {"text": every, "denoise": every, "decode": every}
    elif recipe.offload == "model":
        resident = {"text": max(mem.text_encoder_bytes, default=0), "denoise": mem.weights(mem.denoiser) + extra,
                    "decode": mem.weights(mem.vae)}
    else:
        if mem.largest_module_bytes is None:
            raise ValueError("sequential offload needs largest_module_bytes (read it from the loaded pipeline)")
        resident = dict.fromkeys(("text", "denoise", "decode"), float(mem.largest_module_bytes))
    activations = {"text": 0.0, "denoise": den_act, "decode": dec_act}
    phases = {k: (resident[k] + activations[k]) / GIB for k in resident}
    peak = max(phases, key=lambda k: phases[k])
    return Estimate(recipe, size, phases, resident[peak] / GIB, activations[peak] / GIB)


def _halvings(batch: int) -> list[int]:
    out = [batch]
    while out[-1] > 1:
        out.append(out[-1] // 2)
    return out


def candidate_recipes(mem: PipelineMemory, batch: int) -> Iterator[Recipe]:
    """Recipes from least to most costly: as is; VAE slicing, then tiling; smaller batches; model offload;
    sequential offload (not for pipelines that cannot take it). A VAE option that saves nothing at this size or
    batch never comes first: the cheaper recipe before it has the same estimate."""
    for offload in OFFLOADS:
        if offload == "sequential" and (mem.sequential_unsupported or mem.largest_module_bytes is None):
            continue
        for b in _halvings(batch):
            for slicing, tiling in ((False, False), (True, False), (True, True)):
                yield Recipe(offload, slicing, tiling, b)


@dataclass(frozen=True)
class MemoryFit:
    """The recipe chosen for a cell, with the estimate and budget that chose it (recorded in the cell)."""

    recipe: Recipe
    estimate: Estimate
    budget_gib: float
    limit_gib: float  # the budget less the headroom: what the estimate had to stay under
    requested_batch: int

    def as_record(self) -> dict[str, Any]:
        return {"summary": self.recipe.summary, **asdict(self.recipe), "budget_gib": self.budget_gib,
                "limit_gib": round(self.limit_gib, 3), "estimate_gib": round(self.estimate.peak_gib, 3),
                "estimate_phase": self.estimate.peak_phase,
                "estimate_phases_gib": {k: round(v, 3) for k, v in self.estimate.phases_gib.items()},
                "requested_batch": self.requested_batch, "size": self.estimate.size}


def denoiser_geometry(family: str, config: Mapping[str, Any]) -> tuple[int, int]:
    """``(width, patch)`` of a denoiser config: attention width and patch side of a transformer (Flux packs 2x2
    latents per token), first block's channels and 1 for a UNet."""
    if "block_out_channels" in config:
        return int(config["block_out_channels"][0]), 1
    width = int(config["num_attention_heads"]) * int(config["attention_head_dim"])
    return width, 2 if family == "flux" else int(config.get("patch_size", 1))


def vae_geometry(config: Mapping[str, Any]) -> tuple[int, int, int]:
    """``(c0, tile_px, latent_factor)`` of an AutoencoderKL config (diffusers tiles at its ``sample_size``)."""
    channels = list(config["block_out_channels"])
    size = config.get("sample_size", 512)
    tile = int(size[0] if isinstance(size, (list, tuple)) else size)
    return int(channels[0]), tile, 2 ** (len(channels) - 1)


def full_size_memory(generator: str, precision: str, component_bytes: Mapping[str, int],
                     guidance: float | None = None) -> PipelineMemory:
    """A :class:`PipelineMemory` from the registry's full-size configs and recorded weight bytes (no pipeline):
    how the calibration script and ``quantfake plan`` read benchmark records."""
    from quantfake.generators import VAE_CONFIGS, get_generator, uses_cfg, vae_config_name
    from quantfake.precisions import get_precision

    spec, prec = get_generator(generator), get_precision(precision)
    width, patch = denoiser_geometry(spec.family, spec.denoiser_config)
    vae_cfg = VAE_CONFIGS[vae_config_name(spec)]
    c0, tile, factor = vae_geometry(vae_cfg)
    dtype = str(prec.torch_dtype).removeprefix("torch.")
    return PipelineMemory(
        spec.id, prec.id, spec.family, dict(component_bytes), spec.denoiser, width, patch, factor,
        ELEMENT_BYTES[dtype], c0, tile, vae_compute_bytes(dtype, bool(vae_cfg.get("force_upcast"))),
        2 if uses_cfg(spec, guidance) else 1)


ELEMENT_BYTES: dict[str, int] = {"float32": 4, "float16": 2, "bfloat16": 2}


def vae_compute_bytes(dtype: str, force_upcast: bool) -> int:
    """Element size of the decode for a VAE stored in ``dtype``: fp16 VAEs marked ``force_upcast`` decode in fp32
    (SDXL's pipeline upcasts them; counting SD3 / Flux fp16 VAEs the same errs high)."""
    if dtype not in ELEMENT_BYTES:
        raise ValueError(f"unknown VAE dtype {dtype!r}; accepted: {', '.join(ELEMENT_BYTES)}")
    return 4 if dtype == "float16" and force_upcast else ELEMENT_BYTES[dtype]


def usable_gib(budget_gib: float) -> float:
    """What the estimate may reach under ``budget_gib`` (the headroom kept free)."""
    return budget_gib * (1.0 - HEADROOM_FRACTION)


def choose_recipe(mem: PipelineMemory, budget_gib: float, size: int, batch: int,
                  model: ActivationModel = DEFAULT_MODEL) -> MemoryFit:
    """The least costly recipe whose estimate stays under the budget (less headroom).

    Raises :class:`MemoryBudgetError` when none does, naming the budget, the estimate as is, the least any recipe
    needs and the budget that would take it.
    """
    budget_gib = check_budget(budget_gib)
    limit = usable_gib(budget_gib)
    tried: list[Estimate] = []
    for recipe in candidate_recipes(mem, batch):
        est = estimate(mem, recipe, size, model)
        if est.peak_gib <= limit:
            return MemoryFit(recipe, est, budget_gib, limit, batch)
        tried.append(est)
    as_is, least = tried[0], min(tried, key=lambda e: e.peak_gib)
    not_offered = f"; sequential offload not offered: {mem.sequential_unsupported}" if mem.sequential_unsupported else ""
    raise MemoryBudgetError(
        f"{mem.generator}-{mem.precision} does not fit --vram-budget {budget_gib:g} GiB ({limit:.2f} GiB usable "
        f"after {HEADROOM_FRACTION:.0%} headroom) at {size} px: estimated {as_is.peak_gib:.2f} GiB as is at batch "
        f"{batch} ({as_is.weights_gib:.2f} GiB weights + {as_is.activations_gib:.2f} GiB activations, "
        f"{as_is.peak_phase}); the least any recipe needs is {least.peak_gib:.2f} GiB ({least.recipe.summary}), "
        f"which needs --vram-budget {least.peak_gib / (1.0 - HEADROOM_FRACTION):.1f} or more{not_offered}")
