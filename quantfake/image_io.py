"""Decode any image file to the 8-bit RGB a detector sees, saying what was done to it.

Pillow's ``convert("RGB")`` is wrong for several real-world files: it clips 16-bit greyscale (``I;16``) to 255,
so a normal photograph turns near-white; it drops alpha, so transparent pixels show whatever colour they hold;
and it ignores the EXIF orientation, so a phone photo lies on its side. Here 16-bit and 32-bit integer images are
scaled to 8 bits, float images from [0, 1], transparency is composited on :data:`ALPHA_BACKGROUND`, and the EXIF
orientation is applied (``PIL.ImageOps.exif_transpose``). The returned ``info`` records each step.
"""

from __future__ import annotations

import hashlib
import io
from typing import Any

import numpy as np
from PIL import Image, ImageOps

#: Transparent pixels are composited on white (recorded in each row as ``alpha_background``).
ALPHA_BACKGROUND: tuple[int, int, int] = (255, 255, 255)
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F", "P;L"})


def to_rgb(image: Image.Image) -> tuple[Image.Image, dict[str, Any]]:
    """8-bit RGB of ``image`` (fully loaded) and what the conversion did (``source_mode``, ``scaled_from_bits``,
    ``alpha_background``, ``exif_orientation``)."""
    info: dict[str, Any] = {"source_mode": image.mode}
    orientation = image.getexif().get(0x0112, 1)  # EXIF Orientation tag
    if orientation not in (None, 1):
        image = ImageOps.exif_transpose(image)
        info["exif_orientation"] = int(orientation)
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES or mode in ("I", "F"):
        grey, bits = _scaled_grey(image)
        info["scaled_from_bits"] = bits
        return Image.merge("RGB", [grey] * 3), info
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*ALPHA_BACKGROUND, 255))
        info["alpha_background"] = list(ALPHA_BACKGROUND)
        return Image.alpha_composite(background, rgba).convert("RGB"), info
    return image.convert("RGB"), info


def _scaled_grey(image: Image.Image) -> tuple[Image.Image, int]:
    """An 8-bit greyscale image from a 16-bit, 32-bit integer or float one, and the source bit depth.

    ``I`` (32-bit) holds 16-bit files in older Pillow versions, so its scale is the smallest of 8 / 16 / 32 bits
    that holds its maximum; floats are read as [0, 1].
    """
    values = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        scaled, bits = values * 255.0, 32
    else:
        peak = float(values.max(initial=0))
        bits = 8 if peak <= 255 else (16 if peak <= 65535 else 32)
        scaled = values * (255.0 / (2.0**bits - 1))
    return Image.fromarray(np.clip(np.round(scaled), 0, 255).astype(np.uint8)), bits


def image_sha256(image: Image.Image | np.ndarray) -> str:
    """SHA-256 of the PNG encoding (PIL, compress_level 6, no metadata) of the RGB image: the id of an image in
    the score cache, the detector-training cache and the real-image manifests (one definition for all three;
    real images are RGB already, so converting first changes none of their ids)."""
    img = Image.fromarray(image) if isinstance(image, np.ndarray) else image.convert("RGB")
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=6)
    return hashlib.sha256(buf.getvalue()).hexdigest()
