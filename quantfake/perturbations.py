"""Robustness axis (post-processing applied identically to real and fake images)
and the file-format confound check.

A detector can score "fake" simply because fakes are PNG at 512x512 while reals
are camera JPEGs of other sizes.  :func:`format_confound` warns about such
differences and :func:`match_format` re-encodes both sides the same way, so a
measured effect comes from the image content rather than the container.

Every perturbation is deterministic (fixed JPEG settings, fixed resampling
filter) and returns an RGB image.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageFilter

if TYPE_CHECKING:
    from quantfake.realdata import RealSet

__all__ = [
    "Perturbation",
    "PERTURBATIONS",
    "get_perturbation",
    "apply_perturbation",
    "jpeg_reencode",
    "estimate_jpeg_quality",
    "image_meta",
    "real_set_meta",
    "format_confound",
    "match_format",
]

#: libjpeg 4:2:0 chroma subsampling, written explicitly so Pillow defaults cannot drift.
_SUBSAMPLING_420 = 2
ACCEPTED_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP")


def _rgb(img: Image.Image) -> Image.Image:
    return img if img.mode == "RGB" else img.convert("RGB")


def jpeg_reencode(img: Image.Image, quality: int) -> Image.Image:
    """Encode to JPEG in memory at ``quality`` (4:2:0) and decode again."""
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality!r}")
    buf = io.BytesIO()
    _rgb(img).save(buf, format="JPEG", quality=quality, subsampling=_SUBSAMPLING_420, optimize=False)
    buf.seek(0)
    out = Image.open(buf)
    out.load()
    return out


def _resize(img: Image.Image, factor: float) -> Image.Image:
    w, h = img.size
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    return _rgb(img).resize(size, resample=Image.Resampling.BICUBIC)


def _center_crop(img: Image.Image, fraction: float) -> Image.Image:
    w, h = img.size
    cw, ch = max(1, round(w * fraction)), max(1, round(h * fraction))
    left, top = (w - cw) // 2, (h - ch) // 2
    return _rgb(img).crop((left, top, left + cw, top + ch))


@dataclass(frozen=True)
class Perturbation:
    """A named PIL -> PIL transform of the robustness axis."""

    id: str
    description: str
    fn: Callable[[Image.Image], Image.Image]

    def __call__(self, img: Image.Image) -> Image.Image:
        return self.fn(img)


PERTURBATIONS: dict[str, Perturbation] = {
    p.id: p
    for p in (
        Perturbation("none", "unchanged (converted to RGB)", lambda im: _rgb(im).copy()),
        Perturbation("jpeg95", "JPEG re-encode, quality 95, 4:2:0", lambda im: jpeg_reencode(im, 95)),
        Perturbation("jpeg75", "JPEG re-encode, quality 75, 4:2:0", lambda im: jpeg_reencode(im, 75)),
        Perturbation("resize0.5", "downscale to half width and height (bicubic)", lambda im: _resize(im, 0.5)),
        Perturbation("blur1", "Gaussian blur, sigma 1 px", lambda im: _rgb(im).filter(ImageFilter.GaussianBlur(radius=1.0))),
        Perturbation("crop0.9", "center crop keeping 90% of width and height", lambda im: _center_crop(im, 0.9)),
    )
}


def get_perturbation(perturbation_id: str) -> Perturbation:
    """Registry lookup with an error that lists the accepted ids."""
    try:
        return PERTURBATIONS[perturbation_id]
    except KeyError:
        raise KeyError(f"unknown perturbation {perturbation_id!r}; accepted: {list(PERTURBATIONS)}") from None


def apply_perturbation(perturbation_id: str, images: Sequence[Image.Image]) -> list[Image.Image]:
    """Apply one perturbation to a batch (use the same id for reals and fakes)."""
    p = get_perturbation(perturbation_id)
    return [p(im) for im in images]


# IJG (libjpeg) standard luminance quantization table, natural order.
_IJG_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
], dtype=np.int64)


def _ijg_table(quality: int) -> np.ndarray:
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return np.clip((_IJG_LUMA * scale + 50) // 100, 1, 255)


def estimate_jpeg_quality(img: Image.Image) -> int | None:
    """IJG quality whose luminance table best matches the image's, or None if not a JPEG.

    Compares sorted table values, so it does not depend on zigzag vs natural order.
    """
    tables = getattr(img, "quantization", None)
    if not tables:
        return None
    luma = np.sort(np.asarray(tables[min(tables)], dtype=np.int64))
    errors = [np.abs(np.sort(_ijg_table(q)) - luma).sum() for q in range(1, 101)]
    return int(np.argmin(errors)) + 1


def image_meta(img: Image.Image) -> dict[str, Any]:
    """What the format-confound check needs to know about one decoded image."""
    fmt = (img.format or "unknown").upper()
    return {
        "format": fmt,
        "size": tuple(img.size),
        "mode": img.mode,
        "jpeg_quality": estimate_jpeg_quality(img) if fmt == "JPEG" else None,
    }


def real_set_meta(reals: RealSet, limit: int) -> list[dict[str, Any]]:
    """:func:`image_meta` of the first ``limit`` images of a real set, with the source file's format and JPEG history from its manifest (a patch cut from a JPEG decodes as PNG)."""
    metas = []
    for row, img in list(zip(reals.manifest, reals.images, strict=True))[:limit]:
        meta = image_meta(img)
        meta["format"] = row.get("format") or ("PNG" if img.format is None else meta["format"])
        if row.get("is_jpeg") and meta["jpeg_quality"] is None:
            meta["jpeg_quality"] = "cut from a JPEG source"
        metas.append(meta)
    return metas


def _summarise(meta: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> dict[str, set]:
    items = [meta] if isinstance(meta, Mapping) else list(meta)
    if not items:
        raise ValueError("empty metadata: give one dict or a list of dicts from image_meta()")
    keys = ("format", "size", "mode", "jpeg_quality")
    return {k: {tuple(m[k]) if isinstance(m.get(k), list) else m.get(k) for m in items} for k in keys}


def format_confound(
    real_meta: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    fake_meta: Mapping[str, Any] | Sequence[Mapping[str, Any]],
) -> list[str]:
    """Warnings when reals and fakes differ in file format, size, mode or JPEG history.

    Each side is one :func:`image_meta` dict or a list of them.  An empty list
    means no confound was detected (not that none exists: e.g. a PNG that was
    once a JPEG is not visible from metadata).
    """
    real, fake = _summarise(real_meta), _summarise(fake_meta)
    warnings: list[str] = []
    if real["format"] != fake["format"]:
        warnings.append(
            f"file format differs: real {sorted(map(str, real['format']))} vs fake {sorted(map(str, fake['format']))}; "
            "a detector may be separating formats, re-encode both with match_format()"
        )
    jpeg_real = {q for q in real["jpeg_quality"] if q is not None}
    jpeg_fake = {q for q in fake["jpeg_quality"] if q is not None}
    if bool(jpeg_real) != bool(jpeg_fake):
        side = "real" if jpeg_real else "fake"
        warnings.append(f"JPEG history differs: only the {side} images carry JPEG compression (qualities {sorted(jpeg_real or jpeg_fake)})")
    elif jpeg_real and jpeg_real != jpeg_fake:
        warnings.append(f"JPEG quality differs: real {sorted(jpeg_real)} vs fake {sorted(jpeg_fake)}")
    if real["size"] != fake["size"]:
        def show(sizes: set) -> str:
            s = sorted(sizes, key=str)
            return str(s[:4])[:-1] + (f", ... ({len(s)} sizes)]" if len(s) > 4 else "]")

        warnings.append(f"image size differs: real {show(real['size'])} vs fake {show(fake['size'])}; resizing or cropping can leave traces")
    if real["mode"] != fake["mode"]:
        warnings.append(f"colour mode differs: real {sorted(map(str, real['mode']))} vs fake {sorted(map(str, fake['mode']))}")
    return warnings


def match_format(img: Image.Image, fmt: str, *, quality: int = 95, size: tuple[int, int] | None = None) -> Image.Image:
    """Re-encode ``img`` as ``fmt`` (PNG lossless; JPEG/WEBP at ``quality``), optionally resized first.

    Apply it to reals and fakes alike so both share the container and its
    compression history.  The returned image reports the new ``format``.
    """
    name = fmt.upper().replace("JPG", "JPEG")
    if name not in ACCEPTED_FORMATS:
        raise ValueError(f"unknown format {fmt!r}; accepted: {list(ACCEPTED_FORMATS)}")
    src = _rgb(img)
    if size is not None:
        src = src.resize(tuple(size), resample=Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    if name == "JPEG":
        if not 1 <= quality <= 100:
            raise ValueError(f"JPEG quality must be in 1..100, got {quality!r}")
        src.save(buf, format="JPEG", quality=quality, subsampling=_SUBSAMPLING_420)
    elif name == "WEBP":
        src.save(buf, format="WEBP", quality=quality)
    else:
        src.save(buf, format="PNG")
    buf.seek(0)
    out = Image.open(buf)
    out.load()
    return out
