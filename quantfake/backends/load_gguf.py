"""A whole pipeline whose denoiser comes through diffusers' GGUF loader; the rest at the compute dtype.

Weights folder (tiny, pretrained): quantfake writes ``<store>/models/gguf/<generator>-<weights key>-<id>.gguf`` once
from the folder's denoiser in float32 (quantized on the device it will run on), or takes the user's ``--gguf-dir`` file, and ``from_single_file`` reads it.
Random profile: the full-size denoiser is built on the device, quantized there and handed to ``from_single_file``
as a state dict (no multi-GB file per run); the loader, its ``GGUFLinear`` layers and the check are the same.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from quantfake.backends.gguf import (
    GGUFSource,
    ensure_gguf_file,
    find_user_gguf,
    load_gguf_model,
    quantized_state_dict,
    user_gguf_source,
)
from quantfake.errors import QuantizationNotApplied
from quantfake.generators import GeneratorSpec
from quantfake.precisions import PrecisionSpec
from quantfake.store import Store, config_hash


def check_gguf_request(gen: GeneratorSpec, prec: PrecisionSpec, components: list[str]) -> None:
    """GGUF covers the denoiser only (diffusers' single-file loader); refuse anything else before loading."""
    from diffusers.loaders.single_file_model import SINGLE_FILE_LOADABLE_CLASSES

    others = [c for c in components if c != gen.denoiser]
    if others:
        raise QuantizationNotApplied(f"{prec.id}: GGUF weights cover the denoiser only, not {others} "
                                     "(drop --quantize-text-encoders for GGUF precisions)")
    if gen.denoiser_class not in SINGLE_FILE_LOADABLE_CLASSES:
        raise QuantizationNotApplied(f"{prec.id}: diffusers cannot load {gen.denoiser_class} from a single file")


def user_gguf(gguf_dir: Path | None, generator: str) -> GGUFSource:
    """The user's file for ``generator`` under ``--gguf-dir``, hashed (a missing one raises MissingWeightsError)."""
    return user_gguf_source(find_user_gguf(gguf_dir, generator))


def load_gguf_pipeline(gen: GeneratorSpec, prec: PrecisionSpec, folder: Path | None, device: str, store: Store,
                       model_key: str, user_file: GGUFSource | None) -> tuple[Any, GGUFSource]:
    """The pipeline of ``gen`` with a GGUF denoiser on ``device``, and where its GGUF weights came from."""
    import diffusers

    from quantfake.environment import quiet_libraries

    quiet_libraries()
    cls = getattr(diffusers, gen.txt2img_class)
    den_cls = getattr(diffusers, gen.denoiser_class)
    if folder is None:
        return _random_in_memory(gen, prec, den_cls, device, user_file)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    source = user_file or ensure_gguf_file(  # quantized where it will run: gguf's numpy on CPU, its torch port on GPU
        lambda: den_cls.from_pretrained(folder, subfolder=gen.denoiser, torch_dtype=torch.float32,
                                        local_files_only=True).to(device),
        prec.gguf_type, store.models_dir / "gguf", f"{gen.id}-{config_hash(model_key)}-{prec.id}.gguf")
    model = load_gguf_model(den_cls, source.path, folder, gen.denoiser, prec.torch_dtype, device)
    pipe = cls.from_pretrained(folder, torch_dtype=prec.torch_dtype, local_files_only=True,
                               **{gen.denoiser: model})
    return pipe.to(device), source


def _random_in_memory(gen: GeneratorSpec, prec: PrecisionSpec, den_cls: type, device: str,
                      user_file: GGUFSource | None) -> tuple[Any, GGUFSource]:
    from quantfake.fullsize import build_random_pipeline

    pipe = build_random_pipeline(gen.id, device, prec.torch_dtype)
    reference = getattr(pipe, gen.denoiser)
    setattr(pipe, gen.denoiser, None)
    if user_file:
        weights: Path | dict[str, torch.Tensor] = user_file.path
        source = user_file
    else:
        weights = quantized_state_dict(reference, prec.gguf_type)
        types = Counter(getattr(t, "quant_type", None).name if hasattr(t, "quant_type") else "F32"
                        for t in weights.values())
        source = GGUFSource(None, None, "quantfake (in memory, from the random reference)", dict(types))
    with tempfile.TemporaryDirectory() as config_root:
        reference.save_config(Path(config_root) / gen.denoiser)
        del reference
        model = load_gguf_model(den_cls, weights, Path(config_root), gen.denoiser, prec.torch_dtype, device)
    setattr(pipe, gen.denoiser, model)
    return pipe, source
