"""Weight profiles and their defaults: the one place that says what ``tiny``, ``random`` and ``pretrained`` are.

Data only (no torch): the option parser, the pipeline and detector loaders and the tiny factory all read it, so
the tiny world's 64 px / 4 steps and each profile's sample sizes are written once.
"""

from __future__ import annotations

from typing import Any

from quantfake.errors import UnknownIdError

#: tiny: our offline toy pipelines (CPU CI); random: full-size architectures, random weights, no download;
#: pretrained: local real weights.
PROFILES: tuple[str, ...] = ("tiny", "random", "pretrained")

TINY_SIZE = 64  # pixels: every tiny image, real or fake
TINY_STEPS = 4  # denoising steps of a tiny cell
#: VAE levels of the tiny factory: three (two downsamplings) give 16x16 latents at 64 px. With two levels (32x32
#: latents) the UNets' full-resolution self-attention over 1,024 tokens cost 10-20x the tiny transformers per image.
TINY_VAE_BLOCKS = 3
TINY_VAE_FACTOR = 2 ** (TINY_VAE_BLOCKS - 1)
#: Pixel -> latent downsampling of the real SD/SDXL/SD3/Flux VAEs (4 stages).
REAL_VAE_FACTOR = 8

#: Per-profile defaults: the tiny world is sized to run the whole grid on 2 CPU cores in CI.
PROFILE_DEFAULTS: dict[str, dict[str, Any]] = {
    "tiny": {"n_images": 32, "n_real": 64, "n_calibration": 32, "n_train": 12, "steps": TINY_STEPS,
             "size": TINY_SIZE, "batch_size": 16, "n_boot": 200},
    # the full-size rehearsal: whole pipelines at native size and steps, few images (they take seconds each)
    "random": {"n_images": 8, "n_real": 16, "n_calibration": 8, "n_train": 0, "steps": None, "size": None,
               "batch_size": 1, "n_boot": 200},
    "pretrained": {"n_images": 200, "n_real": 400, "n_calibration": 200, "n_train": 0, "steps": None,
                   "size": None, "batch_size": 4, "n_boot": 1000},
}


def check_profile(profile: str) -> str:
    """Validate a profile id (an unknown one raises listing the valid ids)."""
    if profile not in PROFILES:
        raise UnknownIdError("profile", profile, PROFILES)
    return profile


def vae_factor(profile: str) -> int:
    """Pixels per latent of the profile's VAE: the tiny factory's, else the real models'."""
    return TINY_VAE_FACTOR if check_profile(profile) == "tiny" else REAL_VAE_FACTOR
