"""TrueFake ResNet-50 "nodown" with a prototype scoring layer (Dell'Anna et al., TrueFake,
2025; truebees-ai Image-Deepfake-Detectors-Public-Library, ``detectors/R50_TF``).

Read from the public fork RickyZi/Image-Deepfake-Detectors-Public-Library (the truebees-ai
original was not in the stored corpus): ``networks.py``, ``test.py``, ``parser.py``,
``utils/dataset.py``, ``configs/R50_TF.yaml`` (``--arch nodown --prototype --freeze``).

* backbone: torchvision ResNet-50 whose ``conv1`` is replaced by a 7x7 stride-1 conv
  (the maxpool stays at stride 2), ``backbone.fc = Sequential(Linear(2048, 128), Dropout(0.5))``;
* ``proto = ScoresLayer(128, num_centers=1)`` with parameters ``centers`` (K, 128) and
  ``logsigmas`` (K,): for each centre ``d = f - c``,
  ``score = sum_k sign(sum(d)) * ||d||^2 / (2 exp(2 relu(logsigma_k))) + 128 * relu(logsigma_k)``;
* test preprocessing: none (full resolution; a centre crop only for some real sets),
  ``ToDtype(scale=True)`` and ImageNet mean/std;
* decision: ``score > 0`` (``test.py``), so the score is the raw output, threshold 0;
* checkpoint: ``R50_TF/checkpoint/pretrained/weights/best.pt``, plain state dict with keys
  ``backbone.*`` and ``proto.*``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .registry import DETECTORS
from .resnet import ResNet
from .split import FeaturesThenHead

# the preprocessing policies and architecture configs are registry data (no torch to read them)
UPSTREAM_POLICY, TINY_POLICY = DETECTORS["r50tf"].preprocess, DETECTORS["r50tf"].tiny_preprocess
FULL_CONFIG: dict[str, Any] = dict(DETECTORS["r50tf"].full_config)
TINY_CONFIG: dict[str, Any] = dict(DETECTORS["r50tf"].tiny_config)


class PrototypeScores(nn.Module):
    """Upstream ``ScoresLayer``: a signed, scaled squared distance to learned centres."""

    def __init__(self, input_dim: int, num_centers: int) -> None:
        super().__init__()
        self.input_dim = input_dim
        self.centers = nn.Parameter(torch.zeros(num_centers, input_dim))
        self.logsigmas = nn.Parameter(torch.zeros(num_centers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        diff = x.reshape(x.shape[0], 1, self.input_dim) - self.centers[None]  # (N, K, D)
        sign = torch.sign(diff.sum(dim=2))
        sq = (diff**2).sum(dim=2)
        logsig = torch.relu(self.logsigmas)
        scores = sign * sq / (2 * torch.exp(2 * logsig))[None] + (self.input_dim * logsig)[None]
        return scores.sum(dim=1, keepdim=True)


class R50TF(FeaturesThenHead, nn.Module):
    """``backbone`` (stride-1 stem ResNet-50 + 128-d fc) -> ``proto``; output (N, 1)."""

    def __init__(
        self, width: int = 64, layers: tuple[int, ...] = (3, 4, 6, 3), embed_dim: int = 128, num_centers: int = 1
    ) -> None:
        super().__init__()
        self.backbone = ResNet("bottleneck", layers, width, conv1_kernel=7, conv1_stride=1, maxpool_stride=2)
        self.backbone.fc = nn.Sequential(nn.Linear(self.backbone.num_features, embed_dim), nn.Dropout(0.5))
        self.proto = PrototypeScores(embed_dim, num_centers)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x)

    def forward_head(self, feats: torch.Tensor) -> torch.Tensor:
        return self.proto(self.backbone.fc(feats))

    def head_modules(self) -> list[nn.Module]:
        """What upstream ``--freeze`` leaves trainable: ``backbone.fc`` and ``proto``."""
        return [self.backbone.fc, self.proto]


def build(tiny: bool, backbone_dir: object = None) -> R50TF:
    cfg = TINY_CONFIG if tiny else FULL_CONFIG
    return R50TF(int(cfg["width"]), tuple(cfg["layers"]), int(cfg["embed_dim"]), int(cfg["num_centers"]))  # type: ignore[arg-type]


def load_upstream(module: R50TF, state_dict: Mapping[str, torch.Tensor]) -> None:
    """``best.pt`` keys are exactly ours (``backbone.conv1.weight`` ... ``proto.logsigmas``)."""
    module.load_state_dict(dict(state_dict), strict=True)
