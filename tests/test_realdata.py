"""Tests for quantfake.realdata: packaged photo patches and user folders."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from quantfake.image_io import image_sha256
from quantfake.realdata import (
    DEFAULT_SOURCE_KEYS,
    PHOTO_SOURCES,
    RealSet,
    load_real_dir,
    tiny_real_set,
)


@pytest.fixture(scope="module")
def tiny64() -> RealSet:
    return tiny_real_set(size=64, n=300, seed=0)


def test_packaged_sources_exist_without_download() -> None:
    for source in PHOTO_SOURCES.values():
        assert source.path().is_file(), source


def test_tiny_set_is_distinct_rgb_and_sized(tiny64: RealSet) -> None:
    assert len(tiny64) == 300
    assert len(set(tiny64.ids)) == 300
    assert all(im.mode == "RGB" and im.size == (64, 64) for im in tiny64.images)
    assert {row["source"] for row in tiny64.manifest} == set(DEFAULT_SOURCE_KEYS)
    assert len({row["scale"] for row in tiny64.manifest}) >= 3


def test_tiny_set_ids_match_pixels(tiny64: RealSet) -> None:
    for image, digest, row in zip(tiny64.images[:20], tiny64.ids[:20], tiny64.manifest[:20], strict=True):
        assert image_sha256(image) == digest == row["id"]


def test_tiny_set_manifest_has_provenance(tiny64: RealSet) -> None:
    for row in tiny64.manifest:
        left, top, right, bottom = row["crop_box"]
        width, height = row["source_size"]
        assert 0 <= left < right <= width and 0 <= top < bottom <= height
        assert right - left == pytest.approx(64 * row["scale"], abs=1)
        assert row["licence"] and row["file"].endswith((".png", ".jpg"))
        assert row["grayscale_converted"] is False  # default sources are colour
    assert any(row["is_jpeg"] for row in tiny64.manifest)
    assert not all(row["is_jpeg"] for row in tiny64.manifest)


def test_tiny_set_is_deterministic_and_seeded() -> None:
    a = tiny_real_set(32, 12, seed=3)
    b = tiny_real_set(32, 12, seed=3)
    c = tiny_real_set(32, 12, seed=4)
    assert a.ids == b.ids
    assert a.ids != c.ids


def test_grayscale_sources_are_flagged() -> None:
    gray = tiny_real_set(32, 4, seed=0, sources=["camera"])
    assert all(row["grayscale_converted"] for row in gray.manifest)
    assert all(im.mode == "RGB" for im in gray.images)


def test_large_patch_is_flagged_upsampled() -> None:
    big = tiny_real_set(600, 2, seed=0, sources=["chelsea"])  # chelsea is 451x300
    assert all(row["upsampled"] for row in big.manifest)


def test_bad_arguments_name_accepted_values() -> None:
    with pytest.raises(ValueError, match="accepted"):
        tiny_real_set(32, 2, sources=["nope"])
    with pytest.raises(ValueError, match="distinct"):
        tiny_real_set(600, 2, sources=["astronaut"])  # 512x512: one crop only


def test_split_has_no_overlap_and_is_deterministic(tiny64: RealSet) -> None:
    calibration, evaluation = tiny64.split(0.25, seed=1)
    assert len(calibration) == 75 and len(evaluation) == 225
    assert not set(calibration.ids) & set(evaluation.ids)
    assert {r["subset"] for r in calibration.manifest} == {"calibration"}
    again, _ = tiny64.split(0.25, seed=1)
    other, _ = tiny64.split(0.25, seed=2)
    assert again.ids == calibration.ids
    assert set(other.ids) != set(calibration.ids)
    with pytest.raises(ValueError, match="calibration_fraction"):
        tiny64.split(1.0)


def test_split_keeps_duplicates_on_one_side() -> None:
    base = tiny_real_set(16, 6, seed=0)
    doubled = RealSet(base.images * 2, base.ids * 2, base.manifest * 2)
    calibration, evaluation = doubled.split(0.5, seed=0)
    assert not set(calibration.ids) & set(evaluation.ids)
    assert len(calibration) + len(evaluation) == 12


def _write_user_dir(root: Path) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(40, 60, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(root / "a.png")
    (root / "sub").mkdir()
    Image.fromarray(pixels[:, :50]).save(root / "sub" / "b.JPG", quality=90)
    Image.fromarray(pixels[:, :, 0]).save(root / "gray.bmp")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    jpeg = (root / "sub" / "b.JPG").read_bytes()
    (root / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (root / "notes.txt").write_text("not an image")


def test_load_real_dir_excludes_corrupt_files(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _write_user_dir(tmp_path)
    with caplog.at_level(logging.WARNING, logger="quantfake.realdata"):
        real = load_real_dir(tmp_path, size=32, policy="center_crop")
    assert sorted(row["file"] for row in real.manifest) == ["a.png", "gray.bmp", "sub/b.JPG"]
    assert sorted(Path(p).name for p, _ in real.excluded) == ["broken.png", "truncated.jpg"]
    assert all(error for _, error in real.excluded)
    assert "broken.png" in caplog.text
    assert all(im.size == (32, 32) and im.mode == "RGB" for im in real.images)
    by_file = {row["file"]: row for row in real.manifest}
    assert by_file["sub/b.JPG"]["is_jpeg"] and by_file["sub/b.JPG"]["source_format"] == "JPEG"
    assert not by_file["a.png"]["is_jpeg"]
    assert by_file["gray.bmp"]["grayscale_converted"]


def test_load_real_dir_policies(tmp_path: Path) -> None:
    _write_user_dir(tmp_path)
    native = load_real_dir(tmp_path, policy="none")
    assert {im.size for im in native.images} == {(60, 40), (50, 40)}
    squashed = load_real_dir(tmp_path, size=80, policy="resize")
    assert {im.size for im in squashed.images} == {(80, 80)}
    assert all(row["upsampled"] for row in squashed.manifest)
    with pytest.raises(ValueError, match="accepted"):
        load_real_dir(tmp_path, size=32, policy="stretch")
    with pytest.raises(ValueError, match="size=None"):
        load_real_dir(tmp_path, size=32, policy="none")
    with pytest.raises(NotADirectoryError):
        load_real_dir(tmp_path / "missing")


def test_write_manifest_round_trips(tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    _write_user_dir(tmp_path / "imgs")
    real = load_real_dir(tmp_path / "imgs", size=16)
    out = real.write_manifest(tmp_path / "out" / "manifest.json")
    payload = json.loads(out.read_text())
    assert payload["n"] == len(real) == 3
    assert [row["id"] for row in payload["rows"]] == real.ids
    assert len(payload["excluded"]) == 2
