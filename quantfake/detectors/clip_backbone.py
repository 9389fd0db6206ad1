"""CLIP ViT vision towers via ``transformers``, loaded only from local folders.

No hub access: a pretrained tower is read with ``local_files_only=True`` from a folder in
Hugging Face format (a full ``CLIPModel`` checkpoint folder works too: the vision part is
picked out).  Random towers (``random`` and ``tiny`` profiles) are built from an explicit
``CLIPVisionConfig`` so their shape is recorded and reproducible.

A folder is checked before its weights are read: the config fields that change the features
(:data:`FEATURE_FIELDS`: activation, input and patch size, the layer the feature is taken after,
width, LayerNorm epsilon) must equal the detector's, else :class:`TowerMismatch` names the field.
Whatever dtype the folder holds (transformers 5 loads ``dtype="auto"``: an fp16 folder would load
as fp16), the tower comes back in float32; lower precisions are detector precisions.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoints import MissingWeights
from .split import FeaturesThenHead

#: Config fields that change a tower's features without changing any weight shape check would catch:
#: a quick_gelu/gelu swap, another input or patch size, a truncated depth (the feature is read after the last
#: layer, so ``num_hidden_layers`` is the layer used for features), another width or LayerNorm epsilon.
FEATURE_FIELDS: tuple[str, ...] = ("hidden_act", "image_size", "patch_size", "num_hidden_layers", "hidden_size",
                                   "layer_norm_eps")


class TowerMismatch(ValueError):
    """A CLIP tower folder whose config differs from the detector's in a field that changes its features."""


def vision_config(**overrides: Any) -> Any:
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(**overrides)


def check_tower_config(found: Any, expected: Mapping[str, Any], fields: Sequence[str], where: object) -> None:
    """Raise :class:`TowerMismatch` naming every field of ``fields`` where ``found`` differs from ``expected``."""
    bad = [(f, getattr(found, f, None), expected[f]) for f in fields if f in expected and getattr(found, f, None) != expected[f]]
    if bad:
        detail = "; ".join(f"{f} is {got!r}, expected {want!r}" for f, got, want in bad)
        raise TowerMismatch(f"CLIP tower {where}: {detail} (these change the features; convert the upstream release "
                            "with `quantfake import-weights`, see `quantfake models`)")


def build_tower(with_projection: bool, config: Mapping[str, Any] | None = None, folder: Path | None = None,
                fields: Sequence[str] = FEATURE_FIELDS) -> nn.Module:
    """A float32 ``CLIPVisionModel[WithProjection]``: random from ``config``, or read from ``folder`` (local only)
    after checking its config's ``fields`` against ``config`` (when given)."""
    from transformers import CLIPVisionModel, CLIPVisionModelWithProjection

    cls = CLIPVisionModelWithProjection if with_projection else CLIPVisionModel
    if folder is not None:
        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise MissingWeights("CLIP vision tower", [folder / "config.json"],
                                 hint="put the Hugging Face-format CLIP folder there or pass backbone_dir "
                                      "(`quantfake models` lists the source, `quantfake import-weights` converts it)")
        found = vision_config_of(folder)
        if config is not None:
            check_tower_config(found, config, fields, f"{folder}/config.json")
        model, info = cls.from_pretrained(str(folder), config=found, local_files_only=True, output_loading_info=True)
        if info.get("missing_keys"):  # transformers would leave them randomly initialised, with a warning only
            missing = sorted(info["missing_keys"])
            raise TowerMismatch(f"CLIP tower {folder}: its weights lack {len(missing)} tensor(s) of a {cls.__name__}, "
                                f"e.g. {missing[:4]}; is it a CLIP ViT folder?")
        return model.to(torch.float32)
    if config is None:
        raise ValueError("build_tower needs a local folder or a CLIPVisionConfig dict")
    return cls(vision_config(**config))


def vision_config_of(folder: Path | str) -> Any:
    """The ``CLIPVisionConfig`` of a tower folder (the ``vision_config`` of a full ``CLIPModel`` folder)."""
    from transformers import CLIPConfig, CLIPVisionConfig

    raw = json.loads((Path(folder) / "config.json").read_text())
    if raw.get("model_type") == "clip":
        return CLIPConfig.from_pretrained(str(folder), local_files_only=True).vision_config
    return CLIPVisionConfig.from_pretrained(str(folder), local_files_only=True)


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
