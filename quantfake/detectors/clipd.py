"""CLIP-D (Cozzolino et al., "Raising the Bar of AI-generated Image Detection with CLIP",
CVPR Workshops 2024).

Upstream: github.com/grip-unina/ClipBased-SyntheticImageDetection: ``networks/openclipnet.py``
(``OpenClipLinear(next_to_last=True, normalize=True)``), ``main.py``,
``weights/clipdet_latent10k_plus/config.yaml``.  What we reproduce:

* backbone: open_clip ``ViT-L-14`` with the ``laion/CLIP-ViT-L-14-CommonPool.XL-s13B-b90K``
  weights (``clipL14commonpool``), frozen.  "next to last" means the visual projection is
  removed: the feature is the 1024-d ``ln_post`` CLS token, which is ``pooler_output`` of
  ``transformers.CLIPVisionModel``; it is L2-normalised (``encode_image(normalize=True)``);
* head: ``fc`` = ``ChannelLinear(1024, 1)`` (same parameters as ``nn.Linear``);
* test preprocessing (``patch_size: Clip224``): ``Resize(224, bicubic)`` on the shorter side,
  ``CenterCrop(224)``, CLIP mean/std;
* decision: logit > 0 is synthetic, so the score is the logit, threshold 0;
* checkpoint: ``clipdet_latent10k_plus/weights.pth`` holds only the head (``fc.*``, possibly
  under ``model`` with a ``module.`` prefix); the tower is read from a local HF-format folder
  (``CLIP-ViT-L-14-CommonPool.XL-s13B-b90K`` under the weights dir, converted from
  open_clip if needed: its activation is ``gelu``, not OpenAI's ``quick_gelu``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .clip_backbone import FEATURE_FIELDS, CLIPLinearProbe, build_tower
from .registry import DETECTORS

# the preprocessing policies and architecture configs are registry data (no torch to read them)
UPSTREAM_POLICY, TINY_POLICY = DETECTORS["clipd"].preprocess, DETECTORS["clipd"].tiny_preprocess
FULL_CONFIG: dict[str, Any] = dict(DETECTORS["clipd"].full_config)
TINY_CONFIG: dict[str, Any] = dict(DETECTORS["clipd"].tiny_config)
TOWER_FIELDS: tuple[str, ...] = FEATURE_FIELDS  # the feature is the pooled CLS token before the projection


class ClipD(CLIPLinearProbe):
    """Frozen-by-default CLIP tower -> L2-normalised pooled feature -> linear; (N, 1)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__(backbone, backbone.config.hidden_size)
        nn.init.normal_(self.fc.weight, 0.0, 0.02)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.backbone(pixel_values=x).pooler_output
        return F.normalize(pooled, dim=-1)


def build(tiny: bool, backbone_dir: Path | None = None, config: Mapping[str, object] | None = None) -> ClipD:
    """The tower is random from ``config`` or read from ``backbone_dir`` and checked against it.

    ``config`` defaults to the upstream tower (``FULL_CONFIG``); a recorded random tower passes its own.
    """
    cfg = dict(config if config is not None else TINY_CONFIG if tiny else FULL_CONFIG)
    return ClipD(build_tower(False, cfg, None if tiny else backbone_dir, fields=TOWER_FIELDS))


def load_upstream(module: ClipD, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load the head from ``fc.weight``/``fc.bias`` (the tower is not in the checkpoint)."""
    head = {k[len("fc."):]: v for k, v in state_dict.items() if k.startswith("fc.")}
    if set(head) != {"weight", "bias"}:
        raise KeyError(f"CLIP-D checkpoint should hold fc.weight and fc.bias, found keys {sorted(state_dict)}")
    module.fc.load_state_dict(head, strict=True)
