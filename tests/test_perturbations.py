"""Robustness perturbations and the format-confound check."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from quantfake import perturbations as P


@pytest.fixture()
def img() -> Image.Image:
    rng = np.random.default_rng(0)
    # smooth gradient plus noise, so blur and JPEG have something to change
    x = np.linspace(0, 255, 48)[None, :, None] * np.ones((40, 48, 3))
    return Image.fromarray(np.clip(x + rng.normal(0, 20, x.shape), 0, 255).astype(np.uint8))


def _arr(im: Image.Image) -> np.ndarray:
    return np.asarray(im, dtype=np.float64)


def test_registry_ids_and_error() -> None:
    assert {"none", "jpeg75", "jpeg95", "resize0.5", "blur1", "crop0.9"} <= set(P.PERTURBATIONS)
    with pytest.raises(KeyError, match="accepted.*jpeg75"):
        P.get_perturbation("jpeg50")


def test_none_is_identity(img) -> None:
    np.testing.assert_array_equal(_arr(P.get_perturbation("none")(img)), _arr(img))


def test_geometry(img) -> None:
    assert P.get_perturbation("resize0.5")(img).size == (24, 20)
    assert P.get_perturbation("crop0.9")(img).size == (43, 36)
    assert P.get_perturbation("blur1")(img).size == img.size


def test_jpeg_quality_orders_the_error_and_is_deterministic(img) -> None:
    err = {q: np.abs(_arr(P.get_perturbation(f"jpeg{q}")(img)) - _arr(img)).mean() for q in (75, 95)}
    assert 0 < err[95] < err[75]
    a, b = P.get_perturbation("jpeg75")(img), P.get_perturbation("jpeg75")(img)
    np.testing.assert_array_equal(_arr(a), _arr(b))
    assert P.estimate_jpeg_quality(a) == 75
    assert P.estimate_jpeg_quality(P.get_perturbation("jpeg95")(img)) == 95


def test_blur_reduces_high_frequencies(img) -> None:
    def hf(a: np.ndarray) -> float:
        return float(np.abs(np.diff(a, axis=1)).mean())

    assert hf(_arr(P.get_perturbation("blur1")(img))) < 0.6 * hf(_arr(img))


def test_rgba_and_grey_inputs_become_rgb(img) -> None:
    for mode in ("RGBA", "L"):
        out = P.get_perturbation("jpeg95")(img.convert(mode))
        assert out.mode == "RGB"


def test_apply_perturbation_batch(img) -> None:
    out = P.apply_perturbation("resize0.5", [img, img])
    assert [o.size for o in out] == [(24, 20), (24, 20)]


def test_format_confound_flags_png_fakes_vs_jpeg_reals(img) -> None:
    reals = [P.image_meta(P.match_format(img, "jpeg", quality=90, size=(s, s))) for s in (40, 56)]
    fakes = [P.image_meta(P.match_format(img, "png", size=(64, 64)))] * 2
    warnings = P.format_confound(reals, fakes)
    text = "\n".join(warnings)
    assert "file format differs" in text and "JPEG" in text and "PNG" in text
    assert "JPEG history differs" in text and "[90]" in text
    assert "image size differs" in text


def test_format_confound_quiet_after_matching(img) -> None:
    real = P.match_format(img, "jpeg", quality=90, size=(64, 64))
    fake = P.match_format(img.convert("RGBA"), "JPEG", quality=90, size=(64, 64))
    assert P.format_confound(P.image_meta(real), P.image_meta(fake)) == []
    q_diff = P.match_format(img, "jpg", quality=70, size=(64, 64))
    assert P.format_confound([P.image_meta(real)], [P.image_meta(q_diff)]) == ["JPEG quality differs: real [90] vs fake [70]"]


def test_match_format_errors_and_png_is_lossless(img) -> None:
    png = P.match_format(img, "png")
    assert png.format == "PNG"
    np.testing.assert_array_equal(_arr(png), _arr(img))
    with pytest.raises(ValueError, match="accepted.*PNG"):
        P.match_format(img, "tiff")
    with pytest.raises(ValueError, match="empty"):
        P.format_confound([], [P.image_meta(png)])
