"""Full-size random pipelines: every generator's real architecture, whole, with seeded random weights.

Why: the ``random`` profile rehearses a real run (latency, VRAM, images per hour, the ``pretrained`` loader)
with no download. Two ways, one builder:

* :func:`build_random_pipeline` builds the whole pipeline straight on the target device (``meta`` for shape
  checks, ``cuda`` on a GPU: no CPU copy, one init pass, seconds for Flux's 12B);
* :func:`ensure_random_model_root` saves it once as a diffusers folder at ``<root>/<hub id>``, so
  ``load_pipeline(..., profile="pretrained", model_root=root)`` reads it exactly like real weights.

Architectures come from the generator registry (:mod:`quantfake.generators`); tokenizers are the tiny
factory's local builders with the real maximum lengths. Weights are always drawn in bfloat16 (the dtype
real checkpoints ship in) and cast afterwards, so every precision of one generator starts from the same
weights, in memory or from a saved root built on the same device type.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from quantfake.generators import (
    TEXT_ENCODER_CONFIGS,
    VAE_CONFIGS,
    get_generator,
    text_encoder_parts,
    tokenizer_max_lengths,
    vae_config_name,
)
from quantfake.store import atomic_dir, atomic_write_json, check_saved_pipeline, config_hash

RANDOM_SEED = 0
BUILD_DTYPE = torch.bfloat16  # weights are drawn (and saved) in this dtype, whatever precision runs later
FULLSIZE_VERSION = 1  # bump when the builder changes the weights it draws: model keys change with it
MARKER_FILE = "quantfake_random.json"  # written into a saved random root: says what made it


@dataclass(frozen=True)
class PipelineConfigs:
    """Every architecture config of one whole pipeline: what the builder builds and what the model key hashes.

    The full-size values come from the registry (:func:`full_size_configs`); tests pass shrunken ones
    through the same builder.
    """

    denoiser: dict[str, Any]
    text_encoders: dict[str, tuple[str, dict[str, Any]]]  # component -> (transformers class, config kwargs)
    vae: dict[str, Any]
    tokenizer_max_lengths: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """A JSON-able view (for hashing and for the marker file)."""
        return {"denoiser": self.denoiser, "text_encoders": {k: list(v) for k, v in self.text_encoders.items()},
                "vae": self.vae, "tokenizer_max_lengths": self.tokenizer_max_lengths}


def full_size_configs(generator_id: str) -> PipelineConfigs:
    """The real configs of ``generator_id``'s denoiser, text encoders, VAE and tokenizer lengths."""
    spec = get_generator(generator_id)
    encoders = {c: (cls, dict(TEXT_ENCODER_CONFIGS[name])) for c, (cls, name) in text_encoder_parts(spec).items()}
    return PipelineConfigs(dict(spec.denoiser_config), encoders, dict(VAE_CONFIGS[vae_config_name(spec)]),
                           tokenizer_max_lengths(spec))


def random_model_key(generator_id: str, device: torch.device | str, configs: PipelineConfigs | None = None,
                     seed: int = RANDOM_SEED) -> str:
    """``random:<generator>:<hash>``: changes with the architecture, the seed and the RNG's device type.

    The device type is in the hash because CPU and CUDA draw different numbers from the same seed.
    """
    spec = get_generator(generator_id)
    configs = configs or full_size_configs(generator_id)
    digest = config_hash({"configs": configs.as_json(), "seed": seed, "v": FULLSIZE_VERSION,
                          "rng": torch.device(device).type, "dtype": str(BUILD_DTYPE)})
    return f"random:{spec.id}:{digest}"


@contextlib.contextmanager
def building_on(device: torch.device | str, dtype: torch.dtype) -> Iterator[None]:
    """New tensors land on ``device`` in ``dtype`` (restored afterwards): no CPU copy, no second init pass."""
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(prev)


def build_text_encoder(class_name: str, config: dict[str, Any], seed: int) -> torch.nn.Module:
    """A transformers text encoder of ``class_name`` from config kwargs (under the caller's device / dtype)."""
    import transformers

    cls = getattr(transformers, class_name)
    torch.manual_seed(seed)
    return cls(cls.config_class(**config)).eval()


def _diffusers_model(class_name: str, config: dict[str, Any], seed: int) -> torch.nn.Module:
    import diffusers

    torch.manual_seed(seed)
    return getattr(diffusers, class_name).from_config(dict(config)).eval()


def build_tokenizers(configs: PipelineConfigs, folder: Path) -> dict[str, Any]:
    """Local tokenizers (no download), one per text encoder, with the real maximum lengths."""
    from quantfake.tiny import build_clip_tokenizer, build_t5_tokenizer

    out: dict[str, Any] = {}
    for component, (cls, _) in configs.text_encoders.items():
        name = component.replace("text_encoder", "tokenizer")
        tok = build_t5_tokenizer() if cls.startswith("T5") else build_clip_tokenizer(folder / name)
        length = configs.tokenizer_max_lengths.get(name, tok.model_max_length)
        tok.model_max_length = length
        tok.init_kwargs["model_max_length"] = length  # what save_pretrained writes
        out[name] = tok
    return out


def build_random_pipeline(generator_id: str, device: torch.device | str = "cpu", dtype: torch.dtype = BUILD_DTYPE,
                          *, configs: PipelineConfigs | None = None, seed: int = RANDOM_SEED,
                          finish: Callable[[str, torch.nn.Module], torch.nn.Module] | None = None) -> Any:
    """The whole txt2img pipeline of ``generator_id`` at full size, random weights, built on ``device``.

    Weights are drawn in :data:`BUILD_DTYPE` and then cast to ``dtype``, so the values do not depend on
    the precision that will run. ``device="meta"`` builds shapes only (parameter counts, no memory).
    ``finish(component, module)``, when given, takes each component as soon as it is built (and replaces the
    cast to ``dtype``): a memory-fitted load casts, quantizes and parks each on the CPU before the next is built,
    so only one component at a time occupies ``device``, with the same weights as a whole build.
    """
    import diffusers

    spec = get_generator(generator_id)
    configs = configs or full_size_configs(generator_id)
    cls = getattr(diffusers, spec.txt2img_class)
    with tempfile.TemporaryDirectory() as tmp:
        parts: dict[str, Any] = build_tokenizers(configs, Path(tmp))
    builders: list[tuple[str, Callable[[], torch.nn.Module]]] = [
        (spec.denoiser, lambda: _diffusers_model(spec.denoiser_class, configs.denoiser, seed)),
        ("vae", lambda: _diffusers_model("AutoencoderKL", configs.vae, seed + 1)),
        *((component, lambda c=class_name, k=cfg, s=seed + 2 + i: build_text_encoder(c, k, s))
          for i, (component, (class_name, cfg)) in enumerate(configs.text_encoders.items())),
    ]
    for component, build in builders:
        with building_on(device, BUILD_DTYPE):
            module = build()
        parts[component] = finish(component, module) if finish else module
    parts["scheduler"] = getattr(diffusers, spec.scheduler_class)(**spec.scheduler_config)
    expected, optional = cls._get_signature_keys(cls)
    parts.update({k: None for k in expected if k not in parts})  # safety checker, image encoder, ...
    if "requires_safety_checker" in optional:
        parts["requires_safety_checker"] = False
    pipe = cls(**parts)
    if finish is None:
        pipe.to(dtype=dtype)  # floating buffers too (SD3's pos_embed is made in fp32), as from_pretrained casts them
    return pipe


def read_marker(folder: Path) -> dict[str, Any] | None:
    """What made a saved random root (None when ``folder`` holds weights quantfake did not make)."""
    marker = Path(folder) / MARKER_FILE
    return json.loads(marker.read_text()) if marker.exists() else None


def ensure_random_model_root(generator_id: str, root: Path, device: torch.device | str = "cpu", *,
                             configs: PipelineConfigs | None = None, seed: int = RANDOM_SEED) -> Path:
    """Save ``generator_id``'s random pipeline once as ``<root>/<hub id>`` (diffusers folder, bf16 safetensors).

    Returns the folder. An existing folder is kept when it was made with the same key; one that holds
    other weights (real ones, or another config) raises instead of being overwritten.
    """
    spec = get_generator(generator_id)
    folder = Path(root) / spec.hub_id
    key = random_model_key(generator_id, device, configs, seed)
    if (folder / "model_index.json").exists():
        recorded = read_marker(folder)
        if recorded is None:
            raise FileExistsError(f"{folder} holds weights quantfake did not make; not overwriting them")
        if recorded.get("model_key") != key:
            raise FileExistsError(f"{folder} holds random weights {recorded.get('model_key')}, not {key}; "
                                  "delete it to rebuild")
        return folder
    with atomic_dir(folder) as tmp:
        pipe = build_random_pipeline(generator_id, device, BUILD_DTYPE, configs=configs, seed=seed)
        pipe.save_pretrained(tmp, safe_serialization=True)
        del pipe
        check_saved_pipeline(tmp)
        atomic_write_json(tmp / MARKER_FILE, {
            "model_key": key, "generator": spec.id, "hub_id": spec.hub_id, "seed": seed,
            "device_type": torch.device(device).type, "dtype": str(BUILD_DTYPE).removeprefix("torch."),
            "configs": (configs or full_size_configs(generator_id)).as_json(),
            "note": "random weights: images are meaningless; for rehearsals of the pretrained loader only",
        })
    return folder
