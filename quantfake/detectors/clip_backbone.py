"""CLIP ViT vision towers via ``transformers``, loaded only from local folders.

No hub access: a pretrained tower is read with ``local_files_only=True`` from a folder in
Hugging Face format (a full ``CLIPModel`` checkpoint folder works too: the vision part is
picked out).  Random towers (``random`` and ``tiny`` profiles) are built from an explicit
``CLIPVisionConfig`` so their shape is recorded and reproducible.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoints import MissingWeights
from .split import FeaturesThenHead

# ViT-L/14 geometry shared by OpenAI CLIP and open_clip ViT-L-14; the activation differs
# (OpenAI: quick_gelu; open_clip "ViT-L-14" as used by CLIP-D's CommonPool weights: gelu).
VIT_L14: dict[str, Any] = {
    "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
    "image_size": 224, "patch_size": 14, "projection_dim": 768, "layer_norm_eps": 1e-5,
}


def vision_config(**overrides: Any) -> Any:
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(**overrides)


def build_tower(with_projection: bool, config: dict[str, Any] | None = None, folder: Path | None = None) -> nn.Module:
    """A ``CLIPVisionModel[WithProjection]`` from ``folder`` (local only) or random from ``config``."""
    from transformers import CLIPVisionModel, CLIPVisionModelWithProjection

    cls = CLIPVisionModelWithProjection if with_projection else CLIPVisionModel
    if folder is not None:
        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise MissingWeights("CLIP vision tower", [folder / "config.json"],
                                 hint="put the Hugging Face-format CLIP folder there or pass backbone_dir")
        return cls.from_pretrained(str(folder), local_files_only=True)
    if config is None:
        raise ValueError("build_tower needs a local folder or a CLIPVisionConfig dict")
    return cls(vision_config(**config))


class CLIPLinearProbe(FeaturesThenHead, nn.Module):
    """A CLIP tower plus one linear layer ``fc`` (CLIP-D and UnivFD differ only in the feature they probe)."""

    def __init__(self, backbone: nn.Module, in_features: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.fc = nn.Linear(in_features, 1)

    def forward_head(self, feats: torch.Tensor) -> torch.Tensor:
        return self.fc(feats)

    def head_modules(self) -> list[nn.Module]:
        return [self.fc]
