"""NPR: Neighbouring Pixel Relationships (Tan et al., "Rethinking the Up-Sampling Operations
in CNN-based Generative Network for Generalizable Deepfake Detection", CVPR 2024).

Upstream: github.com/chuangchuangtan/NPR-DeepfakeDetection, ``networks/resnet.py`` and
``test.py``/``data/datasets.py``.  What we reproduce:

* architecture: torchvision-style ResNet-50 truncated after ``layer2`` (``layer3``/``layer4``
  removed), stem ``conv1`` 3x3 stride 2 padding 1 (not 7x7), maxpool kept, global average
  pool, head ``fc1 = Linear(512, 1)`` (512 = 128 * Bottleneck expansion);
* input: ``NPR = x - up2(down2(x))`` with nearest-neighbour ``F.interpolate`` (scale 0.5,
  then 2, ``recompute_scale_factor=True``), fed to ``conv1`` as ``NPR * 2/3``;
* test preprocessing: ``Resize((256, 256))`` (bilinear, PIL) with no crop, ImageNet mean/std.
  Upstream uses ``no_resize=False, no_crop=True`` for the diffusion benchmarks
  (DiffusionForensics, UniversalFakeDetect), the closest to our generators;
* decision: ``sigmoid(logit) > 0.5``, i.e. the score is the raw logit and the fixed threshold 0.
* checkpoint: ``NPR.pth`` (plain state dict, loaded ``strict=True`` upstream).

Upstream fails on odd image sides (the two interpolations give a size mismatch); we drop
the last row/column first, as the commented-out lines of upstream ``forward`` do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .registry import DETECTORS
from .resnet import ResNet
from .split import FeaturesThenHead

# the preprocessing policies and architecture configs are registry data (no torch to read them)
UPSTREAM_POLICY, TINY_POLICY = DETECTORS["npr"].preprocess, DETECTORS["npr"].tiny_preprocess
FULL_CONFIG: dict[str, Any] = dict(DETECTORS["npr"].full_config)
TINY_CONFIG: dict[str, Any] = dict(DETECTORS["npr"].tiny_config)


def npr_residual(x: torch.Tensor) -> torch.Tensor:
    """``x - nearest_up2(nearest_down2(x))``: the neighbouring-pixel residual (even sides)."""
    h, w = x.shape[-2:]
    x = x[..., : h - h % 2, : w - w % 2]
    down = F.interpolate(x, scale_factor=0.5, mode="nearest", recompute_scale_factor=True)
    up = F.interpolate(down, scale_factor=2.0, mode="nearest", recompute_scale_factor=True)
    return x - up


class NPR(FeaturesThenHead, ResNet):
    """Truncated ResNet-50 on the NPR residual; output (N, 1) logits."""

    def __init__(self, width: int = 64, layers: tuple[int, ...] = (3, 4)) -> None:
        super().__init__("bottleneck", layers, width, conv1_kernel=3, conv1_stride=2, maxpool_stride=2, fc=None)
        self.fc1 = nn.Linear(self.num_features, 1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward_features(npr_residual(x) * 2.0 / 3.0)

    def forward_head(self, feats: torch.Tensor) -> torch.Tensor:
        return self.fc1(feats)

    def head_modules(self) -> list[nn.Module]:
        return [self.fc1]


def build(tiny: bool, backbone_dir: object = None) -> NPR:
    cfg = TINY_CONFIG if tiny else FULL_CONFIG
    return NPR(width=int(cfg["width"]), layers=tuple(cfg["layers"]))  # type: ignore[arg-type]


def load_upstream(module: NPR, state_dict: Mapping[str, torch.Tensor]) -> None:
    """``NPR.pth`` keys are exactly ours (``conv1.weight`` ... ``fc1.bias``)."""
    module.load_state_dict(dict(state_dict), strict=True)
