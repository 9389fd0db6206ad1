"""Offline factory of tiny pipelines: the real diffusers / transformers classes at toy width.

Every generator id gets a randomly initialised pipeline of the *same classes* as the real one (same
denoiser class, AutoencoderKL, CLIP / T5 text encoders, scheduler) with tokenizers built locally, so CI
exercises every code path with no download. Pipelines are saved with ``save_pretrained`` into the store and
loaded back through :func:`quantfake.loading.load_pipeline`, exactly like real weights.
Same seed, same weights: the build is deterministic.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import torch

from quantfake.generators import GeneratorSpec, get_generator
from quantfake.profiles import TINY_SIZE, TINY_VAE_BLOCKS, TINY_VAE_FACTOR
from quantfake.store import atomic_dir, check_saved_pipeline, config_hash

TINY_LATENT = TINY_SIZE // TINY_VAE_FACTOR
TINY_SEED = 0
_TEXT_HIDDEN = 32
_T5_HIDDEN = 64
_MAX_LEN = 77
FACTORY_VERSION = 2  # bump when the tiny architectures change: the store key changes with it


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP byte-level alphabet (transformers 5 no longer exports it)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def build_clip_tokenizer(folder: Path) -> Any:
    """A CLIPTokenizer over a byte-level vocab with no merges: every prompt tokenizes, nothing downloads."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    chars = list(_bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=_MAX_LEN)


def build_t5_tokenizer() -> Any:
    """A T5TokenizerFast over a small Unigram model of the byte alphabet."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import T5TokenizerFast

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(chr(c), -3.0) for c in range(32, 127)]
    tok = Tokenizer(models.Unigram(pieces, unk_id=2, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    return T5TokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                           model_max_length=512, extra_ids=0)


def _clip_text(with_projection: bool, vocab_size: int, seed: int) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    cfg = CLIPTextConfig(hidden_size=_TEXT_HIDDEN, intermediate_size=37, num_attention_heads=4,
                         num_hidden_layers=2, vocab_size=vocab_size, max_position_embeddings=_MAX_LEN,
                         projection_dim=_TEXT_HIDDEN, bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1,
                         pad_token_id=vocab_size - 1, hidden_act="gelu")
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(cfg).eval()


def _t5(vocab_size: int, seed: int) -> Any:
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    cfg = T5Config(vocab_size=vocab_size, d_model=_T5_HIDDEN, d_kv=16, d_ff=64, num_layers=2, num_heads=4,
                   relative_attention_num_buckets=8, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    return T5EncoderModel(cfg).eval()


def _vae(latent_channels: int, seed: int, flow: bool) -> Any:
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    extra = {"shift_factor": 0.0609, "scaling_factor": 1.5035} if flow else {"scaling_factor": 0.18215}
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=latent_channels, block_out_channels=(32,) * TINY_VAE_BLOCKS,
        down_block_types=("DownEncoderBlock2D",) * TINY_VAE_BLOCKS, up_block_types=("UpDecoderBlock2D",) * TINY_VAE_BLOCKS,
        layers_per_block=1, norm_num_groups=32, sample_size=TINY_SIZE, **extra,
    ).eval()


def _scheduler(spec: GeneratorSpec) -> Any:
    import diffusers

    return getattr(diffusers, spec.scheduler_class)(**spec.scheduler_config)


def tiny_denoiser_config(spec: GeneratorSpec) -> dict[str, Any]:
    """The toy-width config of ``spec``'s denoiser: same class and block types as the real one."""
    real = spec.denoiser_config
    if spec.family in ("sd", "sdxl"):
        n = len(real["block_out_channels"])
        cfg: dict[str, Any] = dict(
            sample_size=TINY_LATENT, in_channels=4, out_channels=4, layers_per_block=1,
            block_out_channels=(32,) * n, down_block_types=real["down_block_types"],
            up_block_types=real["up_block_types"], norm_num_groups=32,
            cross_attention_dim=_TEXT_HIDDEN * (2 if spec.family == "sdxl" else 1),
            attention_head_dim=(2, 4, 4, 4)[:n] if isinstance(real["attention_head_dim"], (tuple, list)) else 4,
            use_linear_projection=real.get("use_linear_projection", False),
        )
        if spec.family == "sdxl":
            cfg.update(addition_embed_type="text_time", addition_time_embed_dim=8,
                       projection_class_embeddings_input_dim=8 * 6 + _TEXT_HIDDEN,
                       transformer_layers_per_block=(1, 1, 2)[:n])
        return cfg
    if spec.family == "sd3":
        cfg = dict(sample_size=TINY_LATENT, patch_size=2, in_channels=16, out_channels=16, num_layers=2,
                   attention_head_dim=8, num_attention_heads=4, joint_attention_dim=_T5_HIDDEN,
                   caption_projection_dim=32, pooled_projection_dim=2 * _TEXT_HIDDEN, pos_embed_max_size=32)
        if "qk_norm" in real:
            cfg["qk_norm"] = real["qk_norm"]
        if real.get("dual_attention_layers"):
            cfg["dual_attention_layers"] = (0,)
        return cfg
    return dict(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
                num_attention_heads=2, joint_attention_dim=_T5_HIDDEN, pooled_projection_dim=_TEXT_HIDDEN,
                guidance_embeds=real["guidance_embeds"], axes_dims_rope=(4, 6, 6))


def build_tiny_pipeline(generator_id: str, seed: int = TINY_SEED, tokenizer_dir: Path | None = None) -> Any:
    """Build the tiny txt2img pipeline of ``generator_id`` in memory (float32, CPU)."""
    import diffusers

    spec = get_generator(generator_id)
    with tempfile.TemporaryDirectory() as tmp:
        clip_tok = build_clip_tokenizer(Path(tokenizer_dir or tmp) / "clip_tokenizer")
    vocab = len(clip_tok)
    torch.manual_seed(seed)
    denoiser = getattr(diffusers, spec.denoiser_class)(**tiny_denoiser_config(spec)).eval()
    parts: dict[str, Any] = {spec.denoiser: denoiser, "scheduler": _scheduler(spec)}
    if spec.family == "sd":
        parts.update(vae=_vae(4, seed + 1, flow=False), text_encoder=_clip_text(False, vocab, seed + 2),
                     tokenizer=clip_tok, safety_checker=None, feature_extractor=None,
                     requires_safety_checker=False)
    elif spec.family == "sdxl":
        parts.update(vae=_vae(4, seed + 1, flow=False), text_encoder=_clip_text(False, vocab, seed + 2),
                     text_encoder_2=_clip_text(True, vocab, seed + 3), tokenizer=clip_tok, tokenizer_2=clip_tok)
    elif spec.family == "sd3":
        t5_tok = build_t5_tokenizer()
        parts.update(vae=_vae(16, seed + 1, flow=True), text_encoder=_clip_text(True, vocab, seed + 2),
                     text_encoder_2=_clip_text(True, vocab, seed + 3), text_encoder_3=_t5(len(t5_tok), seed + 4),
                     tokenizer=clip_tok, tokenizer_2=clip_tok, tokenizer_3=t5_tok)
    else:
        t5_tok = build_t5_tokenizer()
        parts.update(vae=_vae(4, seed + 1, flow=True), text_encoder=_clip_text(False, vocab, seed + 2),
                     text_encoder_2=_t5(len(t5_tok), seed + 4), tokenizer=clip_tok, tokenizer_2=t5_tok)
    return getattr(diffusers, spec.txt2img_class)(**parts)


def tiny_pipeline_key(generator_id: str, seed: int = TINY_SEED) -> str:
    """Store key of a saved tiny pipeline: changes when its architecture or seed changes."""
    spec = get_generator(generator_id)
    return f"{generator_id}-{config_hash({'cfg': tiny_denoiser_config(spec), 'seed': seed, 'v': FACTORY_VERSION})}"


def ensure_tiny_pipeline(generator_id: str, models_dir: Path, seed: int = TINY_SEED) -> Path:
    """Save the tiny pipeline of ``generator_id`` under ``models_dir`` once; return its folder."""
    folder = Path(models_dir) / tiny_pipeline_key(generator_id, seed)
    if (folder / "model_index.json").exists():
        return folder
    with atomic_dir(folder) as tmp:
        build_tiny_pipeline(generator_id, seed).save_pretrained(tmp, safe_serialization=True)
        check_saved_pipeline(tmp)
    return folder
