"""Known answers for paired drift, FID / KID closed forms, and clean missing-weights errors."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from quantfake.errors import MissingWeightsError
from quantfake.fidelity import (
    INCEPTION_WEIGHT_FILES,
    InceptionFeatures,
    fid_from_features,
    frechet_distance,
    kid_from_features,
    latent_drift,
    mean_abs_diff,
    paired_drift,
    psnr,
    ssim,
)


def _img(seed: int, size: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def test_psnr_and_mad_hand_computed():
    a = np.full((8, 8, 3), 100, np.uint8)
    b = a.copy()
    b[0, 0, 0] = 110  # one pixel off by 10 -> mse = 100 / 192
    assert psnr(a, b) == pytest.approx(10 * np.log10(255**2 / (100 / 192)))
    assert mean_abs_diff(a, b) == pytest.approx(10 / 192)
    assert psnr(a, a) == float("inf")


def test_psnr_ssim_match_skimage_and_accept_pil():
    a, noise = _img(0), np.random.default_rng(1).integers(-20, 21, (32, 32, 3))
    b = np.clip(a.astype(int) + noise, 0, 255).astype(np.uint8)
    assert psnr(a, b) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=255))
    expected = structural_similarity(a, b, channel_axis=-1, data_range=255)
    assert ssim(Image.fromarray(a), Image.fromarray(b)) == pytest.approx(expected)
    assert ssim(a, a) == pytest.approx(1.0)
    with pytest.raises(TypeError, match="uint8"):
        psnr(a.astype(np.float32), b)


def test_paired_drift_orders_noise_levels_and_latents():
    torch.manual_seed(0)
    refs = [_img(s) for s in range(3)]
    small = [np.clip(r.astype(int) + 2, 0, 255).astype(np.uint8) for r in refs]
    large = [np.clip(r.astype(int) + np.random.default_rng(9).integers(-60, 61, r.shape), 0, 255).astype(np.uint8)
             for r in refs]
    lat = [torch.randn(4, 8, 8) for _ in refs]
    lat_q = [x + 0.1 * torch.randn_like(x) for x in lat]
    d_small = paired_drift(refs, small, lat, lat_q)
    d_large = paired_drift(refs, large)
    assert d_small["psnr_db"].shape == (3,) and d_small["n"] == 3
    assert d_small["psnr_db_mean"] > d_large["psnr_db_mean"]
    assert d_small["ssim_mean"] > d_large["ssim_mean"]
    assert d_small["mad_255_mean"] < d_large["mad_255_mean"]
    assert 0.05 < d_small["latent_rel_l2_mean"] < 0.2 and d_small["latent_cos_mean"] > 0.98
    assert "latent_rel_l2" not in d_large
    rel, cos = latent_drift(torch.ones(4), 2 * torch.ones(4))
    assert rel == pytest.approx(1.0) and cos == pytest.approx(1.0)


def test_fid_identical_and_mean_shift_closed_form():
    rng = np.random.default_rng(0)
    d = 8
    assert frechet_distance(np.zeros(d), np.eye(d), np.zeros(d), np.eye(d)) == pytest.approx(0, abs=1e-8)
    shift = rng.normal(size=d)
    assert frechet_distance(np.zeros(d), np.eye(d), shift, np.eye(d)) == pytest.approx(shift @ shift)
    feats = rng.normal(size=(4000, d))
    assert fid_from_features(feats, feats) == pytest.approx(0, abs=1e-6)
    other = rng.normal(size=(4000, d)) + shift
    assert fid_from_features(feats, other) == pytest.approx(shift @ shift, rel=0.05, abs=0.05)
    # a covariance difference: N(0, I) vs N(0, 4I) -> Tr(I + 4I - 2*2I) = d
    assert frechet_distance(np.zeros(d), np.eye(d), np.zeros(d), 4 * np.eye(d)) == pytest.approx(d)


def test_fid_guard_for_singular_covariance():
    rng = np.random.default_rng(1)
    few = rng.normal(size=(5, 16))  # rank-deficient covariance
    value = fid_from_features(few, rng.normal(size=(5, 16)) + 1)
    assert np.isfinite(value) and value > 0


def test_kid_zero_for_same_distribution_positive_for_shift():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(400, 16)), rng.normal(size=(400, 16))
    same_mean, same_std = kid_from_features(a, a, n_subsets=20, subset_size=100)
    assert abs(same_mean) < 3 * same_std + 1e-3
    iid_mean, _ = kid_from_features(a, b, n_subsets=20, subset_size=100)
    shift_mean, _ = kid_from_features(a, b + 1.0, n_subsets=20, subset_size=100)
    assert abs(iid_mean) < 0.05 and shift_mean > 10 * max(abs(iid_mean), 1e-3)


def test_inception_missing_weights_names_every_path(tmp_path):
    with pytest.raises(MissingWeightsError) as info:
        InceptionFeatures.from_dir(tmp_path)
    assert isinstance(info.value, FileNotFoundError)
    for name in INCEPTION_WEIGHT_FILES:
        assert str(tmp_path / name) in str(info.value)


@pytest.mark.skipif(importlib.util.find_spec("torch_fidelity") is None, reason="torch-fidelity not installed")
def test_inception_loads_local_file_and_extracts(tmp_path, monkeypatch):
    """Random weights in the real file format: proves the offline load path and 2048-d output shape."""
    from quantfake.fidelity import _torch_fidelity_inception_class

    cls = _torch_fidelity_inception_class()
    torch.manual_seed(0)
    with monkeypatch.context() as m:  # build once with random init to get a state dict in the right layout
        m.setitem(cls.__init__.__globals__, "load_state_dict_from_url", lambda *a, **k: {})
        m.setattr(cls, "load_state_dict", lambda self, sd, *a, **k: None)
        state = cls("probe", ["2048"]).state_dict()
    torch.save(state, tmp_path / INCEPTION_WEIGHT_FILES[1])
    feats = InceptionFeatures.from_dir(tmp_path, batch_size=2)
    out = feats([_img(0, 40), _img(1, 40)])
    assert out.shape == (2, 2048) and np.isfinite(out).all()
    assert not np.allclose(out[0], out[1])
