"""One loader for every profile: tiny (our factory), random (full-size, no weights), pretrained (local weights).

``tiny`` and ``pretrained`` share one code path (``from_pretrained`` on a folder), so CI exercises the loader
that real weights go through. ``random`` builds the whole full-size pipeline with random weights straight on
the target device (:mod:`quantfake.fullsize`) and quantizes it in memory; :func:`load_denoiser` builds the
full-size denoiser alone, for latency / memory / FLOPs of the real shapes. A random model root saved by
:func:`quantfake.fullsize.ensure_random_model_root` loads through ``pretrained`` like real weights.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from quantfake.environment import quiet_libraries
from quantfake.errors import MissingWeightsError
from quantfake.generators import GeneratorSpec, check_mode, get_generator
from quantfake.precision_apply import check_components, pipeline_quantization_config, quantize_module_, verify
from quantfake.precisions import PrecisionSpec, get_precision, require_available
from quantfake.profiles import check_profile
from quantfake.store import Store


@dataclass
class LoadedPipeline:
    """A loaded, quantized and verified pipeline plus everything that identifies its weights."""

    generator: GeneratorSpec
    precision: PrecisionSpec
    profile: str
    pipe: Any
    source: str  # folder the weights came from
    model_key: str  # stable id of the weights (used in image keys)
    device: str
    components: list[str]
    load_seconds: float
    verification: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: the memory fit (``quantfake.memory_placement.Placement``) under ``--vram-budget``; None: placed whole on device
    memory_fit: Any = None
    compile_s: float | None = None  # the first compiled call's extra seconds, once measured (quantfake.recipes)
    weights_source: dict[str, Any] = field(default_factory=dict)  # a GGUF file's path, sha256, origin, types
    _modes: dict[str, Any] = field(default_factory=dict, repr=False)
    _eager: Any = field(default=None, repr=False)  # the denoiser as loaded
    _compiled: Any = field(default=None, repr=False)  # its torch.compile wrapper (compiles at its first call)

    def for_mode(self, mode: str) -> Any:
        """The pipeline for ``mode``; img2img shares every component with txt2img (``from_pipe``)."""
        check_mode(mode)
        if mode == "txt2img":
            return self.pipe
        if mode not in self._modes:
            import diffusers

            cls = getattr(diffusers, self.generator.img2img_class)
            # Not ``from_pipe``: it casts every component to its torch_dtype (float32 by default), which
            # would silently undo fp16/bf16/fp8 and break bitsandbytes modules. Share the modules as they are.
            expected, optional = cls._get_signature_keys(cls)
            parts = {k: v for k, v in self.pipe.components.items() if k in expected or k in optional}
            self._modes[mode] = cls(**parts)
            self._modes[mode].set_progress_bar_config(disable=True)
            if getattr(self.pipe, "_all_hooks", None):  # model offload: this pipeline re-offloads after its calls too
                self._modes[mode]._all_hooks = list(self.pipe._all_hooks)
                self._modes[mode]._offload_device = self.pipe._offload_device
        return self._modes[mode]

    @property
    def denoiser(self) -> torch.nn.Module:
        """The denoiser as loaded (never its compiled wrapper)."""
        return self._eager if self._eager is not None else getattr(self.pipe, self.generator.denoiser)

    @property
    def has_compiled(self) -> bool:
        """Whether a torch.compile wrapper of the denoiser was built (dynamo may hold its graphs)."""
        return self._compiled is not None

    @property
    def compiled(self) -> bool:
        """Whether the pipelines currently call the denoiser through torch.compile."""
        return self._compiled is not None and getattr(self.pipe, self.generator.denoiser) is self._compiled

    def set_compiled(self, on: bool) -> None:
        """Let every mode's pipeline call the denoiser through ``torch.compile`` (built once) or eagerly again.

        A swap of the pipeline attribute (as diffusers' docs do), not ``Module.compile`` in place, so eager stays
        one assignment away: a recipe refused by :mod:`quantfake.recipes` falls back without reloading.
        """
        if not on and self._compiled is None:
            return
        name = self.generator.denoiser
        if self._eager is None:
            self._eager = getattr(self.pipe, name)
        if on and self._compiled is None:
            self._compiled = torch.compile(self._eager)
        module = self._compiled if on else self._eager
        for pipe in (self.pipe, *self._modes.values()):
            if getattr(pipe, name) is not module:
                setattr(pipe, name, module)


def resolve_device(device: str | None = None) -> str:
    """``cuda`` when a GPU is visible (or as asked), else ``cpu``."""
    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def components_to_quantize(spec: GeneratorSpec, text_encoders: bool = False) -> list[str]:
    """The denoiser, plus the text encoders when asked."""
    return [spec.denoiser, *(spec.text_encoders if text_encoders else ())]


def find_pretrained(spec: GeneratorSpec, model_root: Path | None = None) -> Path:
    """Locate real weights for ``spec``: ``--model-root`` first, then the local Hugging Face cache.

    Never downloads; raises :class:`MissingWeightsError` listing every path searched.
    """
    searched: list[Path] = []
    if model_root:
        root = Path(model_root)
        for candidate in (root / spec.hub_id, root / spec.hub_id.split("/")[-1], root / spec.id):
            searched.append(candidate)
            if (candidate / "model_index.json").exists():
                return candidate
    try:
        from huggingface_hub import constants, snapshot_download

        cache = Path(constants.HF_HUB_CACHE) / f"models--{spec.hub_id.replace('/', '--')}"
        searched.append(cache)
        return Path(snapshot_download(spec.hub_id, local_files_only=True))
    except Exception:  # noqa: BLE001 - any failure of a cache lookup means "not here"
        pass
    raise MissingWeightsError(
        f"generator {spec.id!r} ({spec.hub_id})", searched,
        hint=f"Put a diffusers folder (with model_index.json) at {Path(model_root or '<model-root>') / spec.hub_id}"
        " and pass --model-root, or populate the Hugging Face cache on this machine.",
    )


@dataclass(frozen=True)
class PipelineIdentity:
    """What names a pipeline's images in the store (:func:`quantfake.generate.request_key`), found without
    building it: a set already whole in the store is read through this, and its pipeline is never loaded."""

    generator: GeneratorSpec
    precision: PrecisionSpec
    profile: str
    folder: Path | None  # the weights' folder; None for in-memory random weights
    model_key: str
    device: str
    components: list[str]
    user_gguf: Any = None  # a user's .gguf file for this generator (``--gguf-dir``), hashed
    memory_fit: Any = None  # only a loaded pipeline has one (``--vram-budget``)


def identify_pipeline(generator: str, precision: str, profile: str = "tiny", *, device: str | None = None,
                      store: Store | None = None, model_root: Path | None = None,
                      quantize_text_encoders: bool = False, gguf_dir: Path | None = None) -> PipelineIdentity:
    """The identity :func:`load_pipeline` would load: ids, device and precision checked, weights found."""
    gen, prec = get_generator(generator), get_precision(precision)
    check_profile(profile)
    device = resolve_device(device)
    require_available(prec, device)
    store = store or Store()
    if profile == "random":
        from quantfake.fullsize import random_model_key

        folder, model_key = None, random_model_key(generator, device)
    elif profile == "tiny":
        from quantfake.tiny import ensure_tiny_pipeline

        folder = ensure_tiny_pipeline(generator, store.models_dir)
        model_key = f"tiny:{folder.name}"
    else:
        folder = find_pretrained(gen, model_root)
        model_key = _random_root_key(folder) or f"pretrained:{gen.hub_id}@{folder.name}"
    comps = components_to_quantize(gen, quantize_text_encoders)
    user_file = None
    if prec.kind == "gguf":
        from quantfake.backends.load_gguf import check_gguf_request, user_gguf

        check_gguf_request(gen, prec, comps)
        user_file = None if prec.gguf_type else user_gguf(gguf_dir, gen.id)
        model_key = f"{model_key}+gguf:{user_file.sha256[:16]}" if user_file else model_key
    return PipelineIdentity(gen, prec, profile, folder, model_key, device, comps, user_file)


def load_pipeline(generator: str, precision: str, profile: str = "tiny", *, device: str | None = None,
                  store: Store | None = None, model_root: Path | None = None,
                  quantize_text_encoders: bool = False, place: bool = True,
                  gguf_dir: Path | None = None, identity: PipelineIdentity | None = None) -> LoadedPipeline:
    """Load ``generator`` at ``precision`` for ``profile``, quantize it and prove the quantization took.

    ``place=False`` leaves the components on the CPU (quantized as they would run; diffusers' quantize-at-load
    puts its quantized ones on ``device``) for :mod:`quantfake.memory_placement` to place by a memory fit.
    ``identity``: what :func:`identify_pipeline` already found for these arguments (not looked up again).
    """
    store = store or Store()
    ident = identity or identify_pipeline(generator, precision, profile, device=device, store=store,
                                          model_root=model_root, quantize_text_encoders=quantize_text_encoders,
                                          gguf_dir=gguf_dir)
    gen, prec, folder, device, comps = ident.generator, ident.precision, ident.folder, ident.device, ident.components
    start = time.perf_counter()
    weights_source: dict[str, Any] = {}
    if prec.kind == "gguf":
        from quantfake.backends.load_gguf import load_gguf_pipeline

        pipe, gguf_source = load_gguf_pipeline(gen, prec, folder, device, store, ident.model_key, ident.user_gguf)
        weights_source = gguf_source.record()
    elif folder is None:
        pipe = _random_in_memory(gen, prec, comps, device, place)
    else:
        pipe = _from_folder(gen, prec, folder, comps, device, place)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    pipe.set_progress_bar_config(disable=True)
    report = verify(pipe, prec, comps)
    source = str(folder) if folder else f"in memory: seeded random init on {device}"
    return LoadedPipeline(gen, prec, ident.profile, pipe, source, ident.model_key, device, comps, seconds, report,
                          weights_source=weights_source)


def _random_root_key(folder: Path) -> str | None:
    """The model key a random root records: its images must never pass for real weights' images in the store."""
    from quantfake.fullsize import read_marker

    marker = read_marker(folder)
    return str(marker["model_key"]) if marker else None


def _random_in_memory(gen: GeneratorSpec, prec: PrecisionSpec, comps: list[str], device: str,
                      place: bool = True) -> Any:
    """The full-size random pipeline built on ``device`` in ``prec``'s dtype, ``comps`` quantized in memory.

    Not placed: each component is built, cast and quantized on ``device`` and then parked on the CPU before the
    next one is built (same weights; the device holds one component at a time).
    """
    import diffusers

    from quantfake.fullsize import build_random_pipeline

    quiet_libraries()
    check_components(getattr(diffusers, gen.txt2img_class), comps)
    if not place:
        def park(name: str, module: torch.nn.Module) -> torch.nn.Module:
            module.to(dtype=prec.torch_dtype)
            module = quantize_module_(module, prec, device) if name in comps else module
            return module.to("cpu")

        return build_random_pipeline(gen.id, device, prec.torch_dtype, finish=park)
    pipe = build_random_pipeline(gen.id, device, prec.torch_dtype)
    for name in comps:
        setattr(pipe, name, quantize_module_(getattr(pipe, name), prec, device))
    return pipe


def _from_folder(gen: GeneratorSpec, prec: PrecisionSpec, folder: Path, comps: list[str], device: str,
                 place: bool = True) -> Any:
    import diffusers

    quiet_libraries()
    cls = getattr(diffusers, gen.txt2img_class)
    check_components(cls, comps)
    offline = {"local_files_only": True}
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    target = device if place else "cpu"  # not placed: the memory fit places the pipeline
    if device.startswith("cuda") and prec.kind in ("bnb", "torchao"):
        # diffusers' own quantize-at-load: weights never exist unquantized on the GPU
        qcfg = pipeline_quantization_config(prec, comps)
        pipe = cls.from_pretrained(folder, quantization_config=qcfg, torch_dtype=prec.torch_dtype, **offline)
        return pipe.to(device) if place else pipe
    if prec.kind == "quanto":
        # diffusers' QuantoConfig on every device for its own models; transformers' text encoders in memory
        at_load = [c for c in comps if c == gen.denoiser]
        qcfg = pipeline_quantization_config(prec, at_load)
        pipe = cls.from_pretrained(folder, quantization_config=qcfg, torch_dtype=prec.torch_dtype, **offline)
        pipe = pipe.to(device) if place else pipe
        from quantfake.backends.quanto import allow_inference_mode_

        allow_inference_mode_(getattr(pipe, gen.denoiser))
        for name in (c for c in comps if c not in at_load):
            setattr(pipe, name, quantize_module_(getattr(pipe, name), prec, device).to(target))
        return pipe
    if prec.kind in ("dtype", "layerwise"):
        pipe = cls.from_pretrained(folder, torch_dtype=prec.torch_dtype, **offline).to(target)
        if prec.kind == "layerwise":
            for name in comps:
                quantize_module_(getattr(pipe, name), prec, target)
        return pipe
    # CPU bitsandbytes / torchao, and PTQ anywhere: the same modules, swapped in by us
    pipe = cls.from_pretrained(folder, torch_dtype=prec.torch_dtype, **offline).to(target)
    for name in comps:
        setattr(pipe, name, quantize_module_(getattr(pipe, name), prec, device).to(target))
    return pipe


def load_denoiser(generator: str, precision: str, *, device: str | None = None,
                  dtype_build: torch.dtype | None = None) -> tuple[torch.nn.Module, float]:
    """Build the full-size denoiser of ``generator`` with random weights on ``device`` and quantize it.

    Built directly on the device (no CPU copy, no init kernels beyond one pass), so a 12B Flux takes
    seconds. Returns the module and the seconds it took.
    """
    import diffusers

    gen, prec = get_generator(generator), get_precision(precision)
    device = resolve_device(device)
    require_available(prec, device)
    cls = getattr(diffusers, gen.denoiser_class)
    start = time.perf_counter()
    build_dtype = dtype_build or (prec.torch_dtype if prec.kind == "dtype" else torch.bfloat16)
    with torch.device(device):
        prev = torch.get_default_dtype()
        torch.set_default_dtype(build_dtype)
        try:
            model = cls.from_config(dict(gen.denoiser_config))
        finally:
            torch.set_default_dtype(prev)
    model = quantize_module_(model.eval(), prec, device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return model, time.perf_counter() - start
