"""Generator registry: the single list of image generators quantfake knows.

Every cell, CLI choice and doc table iterates :data:`GENERATORS`; nothing else lists ids.
Full-size denoiser configs are copied from the public ``config.json`` of each hub repo so the
``random`` profile can build the real architecture with no download.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from quantfake.errors import UnknownIdError

MODES: tuple[str, ...] = ("txt2img", "img2img")


@dataclass(frozen=True)
class GeneratorSpec:
    """What quantfake needs to know to build, load and run one generator."""

    id: str
    name: str
    hub_id: str
    family: str  # "sd" (UNet, one CLIP), "sdxl" (UNet, two CLIPs), "sd3" (MMDiT, 2 CLIP + T5), "flux"
    txt2img_class: str
    img2img_class: str
    denoiser: str  # pipeline component holding the denoiser ("unet" or "transformer")
    denoiser_class: str
    text_encoders: tuple[str, ...]
    native_size: int
    default_steps: int
    default_guidance: float
    scheduler_class: str
    denoiser_config: dict[str, Any] = field(repr=False)
    scheduler_config: dict[str, Any] = field(default_factory=dict, repr=False)
    call_kwargs: dict[str, Any] = field(default_factory=dict, repr=False)

    def pipeline_class_name(self, mode: str) -> str:
        """The diffusers pipeline class for ``mode`` (txt2img or img2img)."""
        check_mode(mode)
        return self.txt2img_class if mode == "txt2img" else self.img2img_class


_SD_UNET_DOWN = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
_SD_UNET_UP = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")

_SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280), down_block_types=_SD_UNET_DOWN, up_block_types=_SD_UNET_UP,
    cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32,
)
_SD21_UNET = dict(
    _SD15_UNET, sample_size=96, cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20),
    use_linear_projection=True,
)
_SDXL_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    cross_attention_dim=2048, attention_head_dim=(5, 10, 20), transformer_layers_per_block=(1, 2, 10),
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816, norm_num_groups=32,
)
_SD3_MEDIUM = dict(
    sample_size=128, patch_size=2, in_channels=16, out_channels=16, num_layers=24,
    attention_head_dim=64, num_attention_heads=24, joint_attention_dim=4096,
    caption_projection_dim=1536, pooled_projection_dim=2048, pos_embed_max_size=192,
)
_SD35_MEDIUM = dict(
    _SD3_MEDIUM, pos_embed_max_size=384, qk_norm="rms_norm", dual_attention_layers=tuple(range(13)),
)
_SD35_LARGE = dict(
    _SD3_MEDIUM, num_layers=38, num_attention_heads=38, caption_projection_dim=2432, qk_norm="rms_norm",
)
_FLUX_DEV = dict(
    patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
    num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
    axes_dims_rope=(16, 56, 56),
)
_FLUX_SCHNELL = dict(_FLUX_DEV, guidance_embeds=False)

_SD3_SCHED = dict(num_train_timesteps=1000, shift=3.0)
_FLUX_SCHED = dict(
    num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
    base_image_seq_len=256, max_image_seq_len=4096,
)
_SD_SCHED = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
)


def _sd(id_: str, name: str, hub: str, cfg: dict, size: int, scheduler: str, sched_cfg: dict) -> GeneratorSpec:
    return GeneratorSpec(
        id=id_, name=name, hub_id=hub, family="sd",
        txt2img_class="StableDiffusionPipeline", img2img_class="StableDiffusionImg2ImgPipeline",
        denoiser="unet", denoiser_class="UNet2DConditionModel", text_encoders=("text_encoder",),
        native_size=size, default_steps=50, default_guidance=7.5, scheduler_class=scheduler,
        denoiser_config=cfg, scheduler_config=sched_cfg,
    )


def _sd3(id_: str, name: str, hub: str, cfg: dict, steps: int, guidance: float) -> GeneratorSpec:
    return GeneratorSpec(
        id=id_, name=name, hub_id=hub, family="sd3",
        txt2img_class="StableDiffusion3Pipeline", img2img_class="StableDiffusion3Img2ImgPipeline",
        denoiser="transformer", denoiser_class="SD3Transformer2DModel",
        text_encoders=("text_encoder", "text_encoder_2", "text_encoder_3"),
        native_size=1024, default_steps=steps, default_guidance=guidance,
        scheduler_class="FlowMatchEulerDiscreteScheduler", denoiser_config=cfg, scheduler_config=_SD3_SCHED,
    )


def _flux(id_: str, name: str, hub: str, cfg: dict, steps: int, guidance: float, seq: int) -> GeneratorSpec:
    return GeneratorSpec(
        id=id_, name=name, hub_id=hub, family="flux",
        txt2img_class="FluxPipeline", img2img_class="FluxImg2ImgPipeline",
        denoiser="transformer", denoiser_class="FluxTransformer2DModel",
        text_encoders=("text_encoder", "text_encoder_2"),
        native_size=1024, default_steps=steps, default_guidance=guidance,
        scheduler_class="FlowMatchEulerDiscreteScheduler", denoiser_config=cfg, scheduler_config=_FLUX_SCHED,
        call_kwargs={"max_sequence_length": seq},
    )


GENERATORS: dict[str, GeneratorSpec] = {
    spec.id: spec
    for spec in (
        _sd("sd15", "Stable Diffusion 1.5", "stable-diffusion-v1-5/stable-diffusion-v1-5", _SD15_UNET, 512,
            "PNDMScheduler", dict(_SD_SCHED, skip_prk_steps=True, steps_offset=1)),
        _sd("sd21", "Stable Diffusion 2.1", "stabilityai/stable-diffusion-2-1", _SD21_UNET, 768,
            "DDIMScheduler", dict(_SD_SCHED, prediction_type="v_prediction", steps_offset=1, clip_sample=False,
                                  set_alpha_to_one=False)),
        GeneratorSpec(
            id="sdxl", name="Stable Diffusion XL 1.0", hub_id="stabilityai/stable-diffusion-xl-base-1.0",
            family="sdxl", txt2img_class="StableDiffusionXLPipeline",
            img2img_class="StableDiffusionXLImg2ImgPipeline", denoiser="unet",
            denoiser_class="UNet2DConditionModel", text_encoders=("text_encoder", "text_encoder_2"),
            native_size=1024, default_steps=50, default_guidance=5.0, scheduler_class="EulerDiscreteScheduler",
            denoiser_config=_SDXL_UNET, scheduler_config=dict(_SD_SCHED, steps_offset=1, timestep_spacing="leading"),
        ),
        _sd3("sd3", "Stable Diffusion 3 Medium", "stabilityai/stable-diffusion-3-medium-diffusers",
             _SD3_MEDIUM, 28, 7.0),
        _sd3("sd35", "Stable Diffusion 3.5 Medium", "stabilityai/stable-diffusion-3.5-medium",
             _SD35_MEDIUM, 40, 4.5),
        _sd3("sd35l", "Stable Diffusion 3.5 Large", "stabilityai/stable-diffusion-3.5-large",
             _SD35_LARGE, 28, 3.5),
        _flux("flux", "FLUX.1 [dev]", "black-forest-labs/FLUX.1-dev", _FLUX_DEV, 50, 3.5, 512),
        _flux("fluxs", "FLUX.1 [schnell]", "black-forest-labs/FLUX.1-schnell", _FLUX_SCHNELL, 4, 0.0, 256),
    )
}


def get_generator(generator_id: str) -> GeneratorSpec:
    """Look up a generator id, failing with the list of valid ids."""
    try:
        return GENERATORS[generator_id]
    except KeyError:
        raise UnknownIdError("generator", generator_id, GENERATORS) from None


def check_mode(mode: str) -> str:
    """Validate a generation mode id."""
    if mode not in MODES:
        raise UnknownIdError("mode", mode, MODES)
    return mode


# --------------------------------------------------------------------------------------------------
# Full-size components besides the denoiser (the ``random`` profile builds whole pipelines from these).
# Copied from the public ``config.json`` of each hub repo's text encoders and VAE; pure data, no torch.

#: Text-encoder architectures by name: transformers config kwargs that give the published sizes.
TEXT_ENCODER_CONFIGS: dict[str, dict[str, Any]] = {
    # openai/clip-vit-large-patch14 text tower (SD1.5, SDXL, SD3, Flux): 0.123e9 parameters
    "clip-l": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                   hidden_act="quick_gelu", vocab_size=49408, max_position_embeddings=77, projection_dim=768,
                   bos_token_id=0, eos_token_id=2, pad_token_id=1),
    # OpenCLIP ViT-H/14 text tower as SD2.1 ships it (23 of 24 layers: SD2 uses the penultimate one)
    "openclip-h": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
                       hidden_act="gelu", vocab_size=49408, max_position_embeddings=77, projection_dim=512,
                       bos_token_id=0, eos_token_id=2, pad_token_id=1),
    # OpenCLIP ViT-bigG/14 text tower (SDXL, SD3): 0.69e9 parameters with its 1280 projection
    "clip-bigg": dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
                      hidden_act="gelu", vocab_size=49408, max_position_embeddings=77, projection_dim=1280,
                      bos_token_id=0, eos_token_id=2, pad_token_id=1),
    # google/t5-v1_1-xxl encoder (SD3, SD3.5, Flux): 4.76e9 parameters
    "t5-xxl": dict(d_model=4096, d_ff=10240, num_layers=24, num_heads=64, d_kv=64, vocab_size=32128,
                   feed_forward_proj="gated-gelu", relative_attention_num_buckets=32,
                   relative_attention_max_distance=128, layer_norm_epsilon=1e-6, tie_word_embeddings=False,
                   decoder_start_token_id=0, pad_token_id=0, eos_token_id=1),
}

_VAE_BASE = dict(
    in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=2, norm_num_groups=32, act_fn="silu",
)
_VAE_16CH = dict(_VAE_BASE, latent_channels=16, use_quant_conv=False, use_post_quant_conv=False,
                 sample_size=1024, force_upcast=True)

#: AutoencoderKL configs by name: 83.7e6 parameters (4 latent channels), 83.8e6 (16, no quant convs)
VAE_CONFIGS: dict[str, dict[str, Any]] = {
    "sd": dict(_VAE_BASE, sample_size=512, scaling_factor=0.18215),
    "sdxl": dict(_VAE_BASE, sample_size=1024, scaling_factor=0.13025, force_upcast=True),
    "sd3": dict(_VAE_16CH, scaling_factor=1.5305, shift_factor=0.0609),
    "flux": dict(_VAE_16CH, scaling_factor=0.3611, shift_factor=0.1159),
}

#: Pipeline text-encoder components by family: component -> (transformers class, TEXT_ENCODER_CONFIGS key)
FAMILY_TEXT_ENCODERS: dict[str, dict[str, tuple[str, str]]] = {
    "sd": {"text_encoder": ("CLIPTextModel", "clip-l")},
    "sdxl": {"text_encoder": ("CLIPTextModel", "clip-l"),
             "text_encoder_2": ("CLIPTextModelWithProjection", "clip-bigg")},
    "sd3": {"text_encoder": ("CLIPTextModelWithProjection", "clip-l"),
            "text_encoder_2": ("CLIPTextModelWithProjection", "clip-bigg"),
            "text_encoder_3": ("T5EncoderModel", "t5-xxl")},
    "flux": {"text_encoder": ("CLIPTextModel", "clip-l"), "text_encoder_2": ("T5EncoderModel", "t5-xxl")},
}
#: Generators whose text encoders differ from their family's
TEXT_ENCODER_OVERRIDES: dict[str, dict[str, tuple[str, str]]] = {
    "sd21": {"text_encoder": ("CLIPTextModel", "openclip-h")},
}
CLIP_MAX_LENGTH = 77
T5_DEFAULT_MAX_LENGTH = 256  # StableDiffusion3Pipeline's max_sequence_length; Flux's comes from call_kwargs


def text_encoder_parts(spec: GeneratorSpec) -> dict[str, tuple[str, str]]:
    """``component -> (class name, text-encoder config name)`` of ``spec``'s full-size pipeline."""
    return {**FAMILY_TEXT_ENCODERS[spec.family], **TEXT_ENCODER_OVERRIDES.get(spec.id, {})}


def vae_config_name(spec: GeneratorSpec) -> str:
    """Key of ``spec``'s VAE in :data:`VAE_CONFIGS` (the family: SD1.5 and SD2.1 share one VAE)."""
    return spec.family


def tokenizer_max_lengths(spec: GeneratorSpec) -> dict[str, int]:
    """``tokenizer component -> model_max_length`` as the real pipeline calls them (CLIP 77; T5 256 or 512)."""
    out: dict[str, int] = {}
    for component, (cls, _) in text_encoder_parts(spec).items():
        tok = component.replace("text_encoder", "tokenizer")
        t5 = cls.startswith("T5")
        out[tok] = int(spec.call_kwargs.get("max_sequence_length", T5_DEFAULT_MAX_LENGTH)) if t5 else CLIP_MAX_LENGTH
    return out


# --------------------------------------------------------------------------------------------------
# architecture facts a denoiser step's shapes follow (efficiency cells, memory fit)

FLUX_T5_SEQUENCE_LENGTH = 512  # FluxPipeline's default; the registry's call_kwargs override it (schnell: 256)


def uses_cfg(spec: GeneratorSpec, guidance: float | None = None) -> bool:
    """Whether the pipeline runs classifier-free guidance (two denoiser rows per image).

    Flux takes guidance as an embedding (dev) or not at all (schnell): never two rows.
    """
    guidance = spec.default_guidance if guidance is None else guidance
    return spec.family != "flux" and guidance > 1.0


def step_batch(spec: GeneratorSpec, images: int, guidance: float | None = None) -> int:
    """Rows the denoiser sees per step when the pipeline makes ``images`` images."""
    if images < 1:
        raise ValueError(f"images must be >= 1, got {images}")
    return images * (2 if uses_cfg(spec, guidance) else 1)


def text_sequence_length(spec: GeneratorSpec) -> int:
    """Tokens of the text condition: CLIP 77; SD3 concatenates CLIP 77 + T5 256; Flux uses T5 alone."""
    if spec.family in ("sd", "sdxl"):
        return CLIP_MAX_LENGTH
    if spec.family == "sd3":
        return CLIP_MAX_LENGTH + int(spec.call_kwargs.get("max_sequence_length", T5_DEFAULT_MAX_LENGTH))
    return int(spec.call_kwargs.get("max_sequence_length", FLUX_T5_SEQUENCE_LENGTH))
