"""Fidelity of a quantized generator: paired drift against the reference precision, and distribution metrics.

Paired drift: the same seed and prompt at two precisions should give the same image; PSNR / SSIM / mean
absolute difference of the decoded images and relative L2 / cosine of the final latents measure how far
quantization moved it.

Distribution metrics: FID and KID from feature sets (closed form here, so they are testable on synthetic
features), Inception features from torch-fidelity's TF-ported InceptionV3 (the fidelity cell loads it once per
session: :mod:`quantfake.session.inception`).

Why torch-fidelity, loaded oddly: torchmetrics' FID, pytorch-fid and clean-fid all need torchvision (which
cannot be installed beside this torch), and ``import torch_fidelity`` does too, but only because its package
``__init__`` eagerly imports its CLIP / VGG / DINOv2 extractors. Its InceptionV3 module itself needs only torch,
so :func:`_torch_fidelity_inception_class` imports that one submodule without running the package ``__init__``.
Install it with ``pip install --no-deps torch-fidelity`` where torchvision is unavailable.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image
from scipy import linalg
from skimage.metrics import structural_similarity

from quantfake.errors import MissingWeightsError

ImageLike = Any  # PIL.Image.Image or uint8 HWC numpy array

# --------------------------------------------------------------------------------------------------
# paired drift


def as_uint8_hwc(image: ImageLike) -> NDArray[np.uint8]:
    """uint8 HxWxC array from a PIL image or array (grayscale gets a channel axis)."""
    arr = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    if arr.dtype != np.uint8:
        raise TypeError(f"images must be uint8 (0-255) or PIL, got dtype {arr.dtype}; accepted: uint8 HWC, PIL")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise ValueError(f"image must be HxW or HxWxC, got shape {arr.shape}")
    return arr


def psnr(ref: ImageLike, test: ImageLike) -> float:
    """Peak signal-to-noise ratio in dB on the 0-255 scale (inf for identical images)."""
    a, b = _pair(ref, test)
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def ssim(ref: ImageLike, test: ImageLike) -> float:
    """scikit-image SSIM over channels with data_range 255 (7x7 window, or the largest odd one that fits)."""
    a, b = _pair(ref, test)
    win = min(7, *(s if s % 2 else s - 1 for s in a.shape[:2]))
    if win < 3:
        raise ValueError(f"images of shape {a.shape} are too small for SSIM (need at least 3x3)")
    return float(structural_similarity(a, b, channel_axis=-1, data_range=255, win_size=win))


def mean_abs_diff(ref: ImageLike, test: ImageLike) -> float:
    """Mean absolute pixel difference on the 0-255 scale."""
    a, b = _pair(ref, test)
    return float(np.mean(np.abs(a.astype(np.float64) - b.astype(np.float64))))


def _pair(ref: ImageLike, test: ImageLike) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    a, b = as_uint8_hwc(ref), as_uint8_hwc(test)
    if a.shape != b.shape:
        raise ValueError(f"paired images differ in shape: reference {a.shape} vs quantized {b.shape}")
    return a, b


def latent_drift(ref_latent: torch.Tensor | NDArray, test_latent: torch.Tensor | NDArray) -> tuple[float, float]:
    """(relative L2 ‖test-ref‖/‖ref‖, cosine similarity) of two final latents, in float64."""
    a = torch.as_tensor(np.asarray(ref_latent.float() if isinstance(ref_latent, torch.Tensor) else ref_latent),
                        dtype=torch.float64).flatten()
    b = torch.as_tensor(np.asarray(test_latent.float() if isinstance(test_latent, torch.Tensor) else test_latent),
                        dtype=torch.float64).flatten()
    if a.shape != b.shape:
        raise ValueError(f"paired latents differ in size: {a.numel()} vs {b.numel()}")
    rel = float((b - a).norm() / a.norm().clamp_min(1e-30))
    cos = float(torch.nn.functional.cosine_similarity(a, b, dim=0))
    return rel, cos


def paired_drift(ref_images: Sequence[ImageLike], q_images: Sequence[ImageLike],
                 ref_latents: Sequence[Any] | None = None, q_latents: Sequence[Any] | None = None) -> dict[str, Any]:
    """Per-image arrays (``psnr_db``, ``ssim``, ``mad_255``, and ``latent_rel_l2`` / ``latent_cos`` when latents
    are given) plus ``*_mean``. Image i of each list must come from the same seed and prompt."""
    if len(ref_images) != len(q_images) or not ref_images:
        raise ValueError(f"need equally many (>0) paired images, got {len(ref_images)} and {len(q_images)}")
    out: dict[str, Any] = {
        "psnr_db": np.array([psnr(r, q) for r, q in zip(ref_images, q_images, strict=True)]),
        "ssim": np.array([ssim(r, q) for r, q in zip(ref_images, q_images, strict=True)]),
        "mad_255": np.array([mean_abs_diff(r, q) for r, q in zip(ref_images, q_images, strict=True)]),
    }
    if (ref_latents is None) != (q_latents is None):
        raise ValueError("give both ref_latents and q_latents, or neither")
    if ref_latents is not None and q_latents is not None:
        if len(ref_latents) != len(ref_images) or len(q_latents) != len(ref_images):
            raise ValueError(f"latent counts {len(ref_latents)}/{len(q_latents)} != image count {len(ref_images)}")
        pairs = [latent_drift(r, q) for r, q in zip(ref_latents, q_latents, strict=True)]
        out["latent_rel_l2"] = np.array([p[0] for p in pairs])
        out["latent_cos"] = np.array([p[1] for p in pairs])
    for key in list(out):
        out[f"{key}_mean"] = float(np.mean(out[key]))
    out["n"] = len(ref_images)
    return out


# --------------------------------------------------------------------------------------------------
# FID / KID on feature sets


def _features(x: Any, name: str) -> NDArray[np.float64]:
    arr = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] < 2:
        raise ValueError(f"{name} must be [n_samples >= 2, n_features], got shape {arr.shape}")
    return arr


def feature_stats(features: Any) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Mean and (unbiased) covariance of an [n, d] feature set."""
    f = _features(features, "features")
    return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


def frechet_distance(mu1: NDArray, sigma1: NDArray, mu2: NDArray, sigma2: NDArray, eps: float = 1e-6) -> float:
    """‖μ1-μ2‖² + Tr(Σ1 + Σ2 - 2(Σ1Σ2)^½), with the usual guards.

    Guards: a singular product (too few samples for d) gets ``eps`` added to both diagonals; a numerically
    complex square root with an imaginary part negligible next to its real diagonal (1e-3 relative: covariances
    of few samples are rank-deficient, their square root ill-conditioned at any scale) is taken as real, a large
    one raises.
    """
    diff = np.asarray(mu1, np.float64) - np.asarray(mu2, np.float64)
    s1, s2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        offset = np.eye(s1.shape[0]) * eps
        covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        scale = max(1.0, float(np.abs(np.diagonal(covmean).real).max()))
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3 * scale):
            raise ValueError(f"sqrtm has imaginary component {np.max(np.abs(covmean.imag)):.3g}; covariances broken")
        covmean = covmean.real
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))


def fid_from_features(features_a: Any, features_b: Any) -> float:
    """FID between two [n, d] feature sets (e.g. Inception pool3, d=2048)."""
    return frechet_distance(*feature_stats(features_a), *feature_stats(features_b))


def _polynomial_mmd2_unbiased(x: NDArray[np.float64], y: NDArray[np.float64]) -> float:
    """Unbiased MMD² with k(a, b) = (a·b / d + 1)³ (the KID kernel)."""
    d = x.shape[1]
    kxx, kyy, kxy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3
    m, n = x.shape[0], y.shape[0]
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * kxy.mean())


def kid_from_features(features_a: Any, features_b: Any, n_subsets: int = 100, subset_size: int = 1000,
                      seed: int = 0) -> tuple[float, float]:
    """KID (mean, std over random subsets). ``subset_size`` is capped at the smaller set's size."""
    a, b = _features(features_a, "features_a"), _features(features_b, "features_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sizes differ: {a.shape[1]} vs {b.shape[1]}")
    m = min(subset_size, a.shape[0], b.shape[0])
    rng = np.random.default_rng(seed)
    vals = [_polynomial_mmd2_unbiased(a[rng.choice(a.shape[0], m, replace=False)],
                                      b[rng.choice(b.shape[0], m, replace=False)]) for _ in range(n_subsets)]
    return float(np.mean(vals)), float(np.std(vals))


# --------------------------------------------------------------------------------------------------
# Inception features (torch-fidelity)

INCEPTION_WEIGHT_FILES = (
    "weights-inception-2015-12-05-6726825d.pth",  # torch-fidelity's release asset
    "pt_inception-2015-12-05-6726825d.pth",  # pytorch-fid's release asset (same TF graph, same layer names)
)


def _torch_fidelity_inception_class() -> type:
    """``torch_fidelity.feature_extractor_inceptionv3.FeatureExtractorInceptionV3`` without the package
    ``__init__`` (which imports torchvision). sys.modules is restored afterwards, so a later plain
    ``import torch_fidelity`` behaves as it would have."""
    def ours(key: str) -> bool:
        return key == "torch_fidelity" or key.startswith("torch_fidelity.")

    saved = {k: v for k, v in sys.modules.items() if ours(k)}
    try:
        return importlib.import_module("torch_fidelity.feature_extractor_inceptionv3").FeatureExtractorInceptionV3
    except ModuleNotFoundError as exc:
        if exc.name != "torchvision":
            raise ImportError("Inception features need torch-fidelity: pip install --no-deps torch-fidelity "
                              "(or the 'fid' extra)") from exc
    spec = importlib.util.find_spec("torch_fidelity")
    assert spec is not None and spec.submodule_search_locations is not None
    stub = types.ModuleType("torch_fidelity")
    stub.__path__ = list(spec.submodule_search_locations)
    try:
        for key in [k for k in sys.modules if ours(k)]:  # half-imported leftovers of the failed attempt
            del sys.modules[key]
        sys.modules["torch_fidelity"] = stub
        return importlib.import_module("torch_fidelity.feature_extractor_inceptionv3").FeatureExtractorInceptionV3
    finally:
        for key in [k for k in sys.modules if ours(k)]:
            del sys.modules[key]
        sys.modules.update(saved)


def find_inception_weights(weights_dir: str | Path) -> Path:
    """The first of :data:`INCEPTION_WEIGHT_FILES` present in ``weights_dir``, else MissingWeightsError."""
    expected = [Path(weights_dir) / name for name in INCEPTION_WEIGHT_FILES]
    for path in expected:
        if path.is_file():
            return path
    raise MissingWeightsError("FID InceptionV3 (TF 2015-12-05 port)", expected,
                              hint="place either file (torch-fidelity or pytorch-fid release asset) there")


class InceptionFeatures:
    """2048-d pool3 features of the TF-FID InceptionV3, for FID / KID."""

    def __init__(self, extractor: torch.nn.Module, device: str | torch.device = "cpu", batch_size: int = 32) -> None:
        self.extractor, self.device, self.batch_size = extractor.to(device).eval(), torch.device(device), batch_size

    @classmethod
    def from_dir(cls, weights_dir: str | Path, device: str | torch.device = "cpu",
                 batch_size: int = 32) -> InceptionFeatures:
        """Load from a user-placed weights file; never downloads.

        The file is first opened with ``torch.load(weights_only=True)``, which refuses anything but tensors,
        before torch-fidelity re-reads it (its loader does not pass ``weights_only``).
        """
        path = find_inception_weights(weights_dir)
        torch.load(path, map_location="cpu", weights_only=True)  # data-only check; raises on pickled code
        extractor_cls = _torch_fidelity_inception_class()
        extractor = extractor_cls("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path))
        return cls(extractor, device, batch_size)

    @torch.no_grad()
    def __call__(self, images: Sequence[ImageLike]) -> NDArray[np.float64]:
        """[n, 2048] features of uint8 HWC images / PIL images (any size; resized inside to 299)."""
        feats = []
        for i in range(0, len(images), self.batch_size):
            batch = np.stack([as_uint8_hwc(im)[:, :, :3] for im in images[i:i + self.batch_size]])
            x = torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous().to(self.device)
            (out,) = self.extractor(x)
            feats.append(out.double().cpu().numpy())
        return np.concatenate(feats)
