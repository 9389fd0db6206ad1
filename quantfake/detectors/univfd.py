"""UnivFD (Ojha et al., "Towards Universal Fake Image Detectors that Generalize Across
Generative Models", CVPR 2023).

Upstream: github.com/WisconsinAIVision/UniversalFakeDetect: ``models/clip_models.py``
(``CLIPModel('ViT-L/14')``: ``fc = Linear(768, 1)`` on ``encode_image``), ``validate.py``.
What we reproduce:

* backbone: OpenAI CLIP ViT-L/14, frozen; the feature is ``encode_image(x)``, the projected
  768-d embedding NOT L2-normalised, i.e. ``image_embeds`` of
  ``transformers.CLIPVisionModelWithProjection`` (``openai/clip-vit-large-patch14``);
* head: ``fc = Linear(768, 1)`` from ``pretrained_weights/fc_weights.pth``
  (keys ``weight``/``bias``, loaded upstream with ``model.fc.load_state_dict``);
* test preprocessing: ``CenterCrop(224)`` with NO resize (torchvision zero-pads smaller
  images), ``ToTensor``, CLIP mean/std;
* decision: ``sigmoid(logit) > 0.5`` -> score is the logit, threshold 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .clip_backbone import FEATURE_FIELDS, CLIPLinearProbe, build_tower
from .registry import DETECTORS

# the preprocessing policies and architecture configs are registry data (no torch to read them)
UPSTREAM_POLICY, TINY_POLICY = DETECTORS["univfd"].preprocess, DETECTORS["univfd"].tiny_preprocess
FULL_CONFIG: dict[str, Any] = dict(DETECTORS["univfd"].full_config)
TINY_CONFIG: dict[str, Any] = dict(DETECTORS["univfd"].tiny_config)
#: the tower config fields a folder is checked on: the feature is the projected embedding, so its width too
TOWER_FIELDS: tuple[str, ...] = (*FEATURE_FIELDS, "projection_dim")


class UnivFD(CLIPLinearProbe):
    """Frozen-by-default CLIP tower -> projected image embedding -> linear; (N, 1)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__(backbone, backbone.config.projection_dim)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(pixel_values=x).image_embeds


def build(tiny: bool, backbone_dir: Path | None = None, config: Mapping[str, object] | None = None) -> UnivFD:
    """The tower is random from ``config`` or read from ``backbone_dir`` and checked against it.

    ``config`` defaults to the upstream tower (``FULL_CONFIG``); a recorded random tower passes its own.
    The projection width is checked too: the feature is the projected embedding.
    """
    cfg = dict(config if config is not None else TINY_CONFIG if tiny else FULL_CONFIG)
    return UnivFD(build_tower(True, cfg, None if tiny else backbone_dir, fields=TOWER_FIELDS))


def load_upstream(module: UnivFD, state_dict: Mapping[str, torch.Tensor]) -> None:
    """``fc_weights.pth`` is ``fc.state_dict()``: keys ``weight`` and ``bias`` (``fc.`` tolerated)."""
    head = {k.removeprefix("fc."): v for k, v in state_dict.items()}
    if set(head) != {"weight", "bias"}:
        raise KeyError(f"UnivFD fc_weights should hold weight and bias, found keys {sorted(state_dict)}")
    module.fc.load_state_dict(head, strict=True)
