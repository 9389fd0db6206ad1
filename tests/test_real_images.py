"""Real images (issue 21): modes converted correctly, tiny images rejected with the reason, pools split by image
identity, exclusions and shrinkage reported, and too few reals fail the run."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from quantfake.options import build_options
from quantfake.realdata import load_real_dir, tiny_real_set
from quantfake.session.reals import RealImages


def _photo(i: int, size: int = 96) -> Image.Image:
    rng = np.random.default_rng(i)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def test_16_bit_greyscale_is_scaled_not_clipped(tmp_path: Path) -> None:
    ramp = np.tile(np.linspace(0, 65535, 96).astype(np.uint16), (96, 1))  # mid-grey on average
    Image.fromarray(ramp).save(tmp_path / "ramp16.png")
    (pixels,) = load_real_dir(tmp_path, size=64).images
    assert np.asarray(pixels).mean() == pytest.approx(127.5, abs=2)  # convert("RGB") clips it to ~253


def test_alpha_and_palette_are_composited_and_exif_orientation_applied(tmp_path: Path) -> None:
    Image.new("RGBA", (64, 64), (0, 0, 0, 0)).save(tmp_path / "clear.png")  # fully transparent black
    palette = Image.new("P", (64, 64), 0)
    palette.putpalette([0, 0, 0] * 256)
    palette.save(tmp_path / "palette.png", transparency=0)
    tall = Image.new("RGB", (64, 96), (200, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: shown 90 degrees clockwise, i.e. 96 x 64
    tall.save(tmp_path / "rotated.jpg", exif=exif)
    real = load_real_dir(tmp_path, policy="none")
    rows = {row["file"]: (row, np.asarray(im)) for row, im in zip(real.manifest, real.images, strict=True)}
    for name in ("clear.png", "palette.png"):
        row, pixels = rows[name]
        assert (pixels == 255).all() and row["alpha_background"] == [255, 255, 255], name
    row, pixels = rows["rotated.jpg"]
    assert pixels.shape[:2] == (64, 96) and row["exif_orientation"] == 6


def test_tiny_images_are_excluded_with_the_reason(tmp_path: Path) -> None:
    Image.new("RGB", (1, 1), (200, 30, 30)).save(tmp_path / "dot.png")
    _photo(0).save(tmp_path / "photo.png")
    real = load_real_dir(tmp_path, size=64)
    assert [row["file"] for row in real.manifest] == ["photo.png"]
    ((path, reason),) = real.excluded
    assert path.endswith("dot.png") and "too small: 1x1 px" in reason and ">= 32 px" in reason


def _pools(tmp_path: Path, real_dir: Path, **raw: str) -> RealImages:
    reals = RealImages(build_options({"generators": "fluxs", "store": str(tmp_path / "store"), "real_dir": str(real_dir),
                                      "n_real": "8", "n_calibration": "8", **raw}), notices=[])
    reals.pools()
    return reals


def test_duplicates_never_cross_pools(tmp_path: Path) -> None:
    folder = tmp_path / "dups"
    folder.mkdir()
    for i in range(40):  # every photograph twice, under two names
        _photo(i).save(folder / f"a{i:02d}.png")
        _photo(i).save(folder / f"b{i:02d}.png")
    pools = _pools(tmp_path, folder).pools()
    for a, b in itertools.combinations(pools, 2):
        assert not set(pools[a].ids) & set(pools[b].ids), f"an image is in both {a} and {b}"
    assert len(pools["evaluation"]) == len(pools["calibration"]) == 8


def test_exclusions_and_short_pools_are_noticed_and_too_few_fail(tmp_path: Path) -> None:
    folder = tmp_path / "few"
    folder.mkdir()
    for i in range(48):
        _photo(i).save(folder / f"p{i:02d}.png")
    (folder / "broken.png").write_bytes((folder / "p00.png").read_bytes()[:200])
    with pytest.raises(ValueError, match=r"calibration 0 of 8 \(--n-calibration; floor 4\)"):  # InsufficientRealImages
        _pools(tmp_path, folder, n_real="56")
    reals = _pools(tmp_path, folder, n_real="16")  # 48 usable: evaluation 16, calibration 8, init 16, train 8 of 192
    kinds = {n["kind"]: n for n in reals.notices}
    assert "broken.png" in kinds["real_images_excluded"]["message"]
    assert kinds["real_pools_short"]["pools"] == {"train": {"used": 8, "asked": 192}}
    assert reals.shortfall and "train 8 of 192" in reals.shortfall


def test_tiny_pools_are_the_permutation_they_always_were(tmp_path: Path) -> None:
    """Pools split by identity give the shipped tiny world the same pools as before (baselines unchanged; a guard
    that passes before and after the change)."""
    pools = RealImages(build_options({"generators": "fluxs", "store": str(tmp_path)}), notices=[]).pools()
    sizes = {"evaluation": 64, "calibration": 32, "init": 16, "train": 12 * 8 * 2}
    full = tiny_real_set(64, sum(sizes.values()), seed=0)
    order, start = np.random.default_rng(0).permutation(len(full)), 0
    for name, n in sizes.items():
        assert pools[name].ids == [full.ids[int(i)] for i in order[start:start + n]], name
        start += n
