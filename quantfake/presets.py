"""Presets: a published protocol in one flag (``--preset study``), as data.

A preset fills the options a user did not give; anything given on the command line wins. The ``study`` preset
is the original student study's protocol, with its precision names mapped to what they really are (its "FP8"
is bitsandbytes LLM.int8, its "FP4" is NF4). Mapping choices (the study does not say them): its two txt2img
prompts alternate by seed, its one img2img prompt serves every img2img image, and "seed 123" is the first
seed (image i uses seed 123 + i) so 500 images differ.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from quantfake.errors import UnknownIdError


@dataclass(frozen=True)
class Preset:
    """Option defaults (raw strings, as the command line gives them) plus what no option string carries."""

    id: str
    description: str
    options: dict[str, str] = field(default_factory=dict)
    prompts: tuple[str, ...] | None = None  # txt2img
    img2img_prompts: tuple[str, ...] | None = None
    first_seed: int = 0


PRESETS: dict[str, Preset] = {
    p.id: p
    for p in (
        Preset(
            "study", "the 2026 student study: 6 generators x FP16 / 'FP8' (LLM.int8) / 'FP4' (NF4) x txt2img 60 "
            "steps + img2img 30 steps at strength 0.6, seed 123, 500 images, npr / r50nodown / r50tf / clipd",
            options={"generators": "sd15,sd21,sdxl,sd3,sd35,flux", "precisions": "fp16,int8,nf4",
                     "modes": "txt2img,img2img", "detectors": "npr,r50nodown,r50tf,clipd", "steps": "60",
                     "img2img_steps": "30", "strength": "0.6", "n_images": "500"},
            prompts=("A futuristic cyberpunk city with neon lights",
                     "A high-resolution portrait photograph, realistic lighting, DSLR, shallow depth of field"),
            img2img_prompts=("oil painting, van gogh style, thick brushstrokes",),
            first_seed=123,
        ),
    )
}


def get_preset(preset_id: str) -> Preset:
    try:
        return PRESETS[preset_id]
    except KeyError:
        raise UnknownIdError("preset", preset_id, PRESETS) from None


def apply_preset(raw: dict) -> tuple[dict, Preset | None]:
    """``raw`` with the preset's defaults filled where the user gave nothing; the preset (or None)."""
    if not raw.get("preset"):
        return raw, None
    preset = get_preset(raw["preset"])
    filled = dict(raw)
    for key, value in preset.options.items():
        if filled.get(key) in (None, ""):
            filled[key] = value
    return filled, preset
