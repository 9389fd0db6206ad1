"""The detector registry: the single source of truth for detector ids and their facts.

Conventions: label 1 = fake; a score is a float where higher = more likely fake; each
detector's score is its upstream logit (see its module docstring), so ``fixed_threshold``
(the upstream decision point on that scale) is 0.0 for all five.

What ``--weights-dir`` must hold is data here too: each detector's public checkpoints
(:class:`WeightsChoice`; several when one architecture has several public releases, e.g. r50nodown)
and, for the CLIP detectors, the tower folder (:class:`TowerSpec`) with the upstream release it comes
from and the ``quantfake import-weights`` format that converts it.  ``quantfake models`` prints them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from quantfake.errors import UnknownIdError

from . import clipd, npr, r50nodown, r50tf, univfd
from .preprocessing import PreprocessPolicy


@dataclass(frozen=True)
class WeightsChoice:
    """One public checkpoint of a detector: the paths tried under ``--weights-dir`` and where it comes from."""

    id: str
    files: tuple[str, ...]  # tried in order; the first is where make-random-weights writes
    source: str
    layout: str

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "files": list(self.files), "source": self.source, "layout": self.layout}


@dataclass(frozen=True)
class TowerSpec:
    """The CLIP vision tower folder a CLIP detector reads (a transformers folder), and its public release."""

    dir: str
    source: str
    import_format: str  # ``quantfake import-weights --format`` that converts the public release into ``dir``
    layout: str = "transformers CLIPVisionModel folder (config.json + model.safetensors); a CLIPModel folder works too"

    def as_dict(self) -> dict[str, Any]:
        return {"dir": self.dir, "source": self.source, "import_format": self.import_format, "layout": self.layout}


@dataclass(frozen=True)
class DetectorSpec:
    """Everything fixed about a detector; ``module`` names the file that implements it."""

    id: str
    name: str
    citation: str
    upstream_repo: str
    weights: tuple[WeightsChoice, ...]  # the first is the default
    preprocess: PreprocessPolicy
    tiny_preprocess: PreprocessPolicy
    module: str
    fixed_threshold: float = 0.0
    native_input_size: int | None = None
    tower: TowerSpec | None = None
    score: str = "upstream logit; sigmoid(score) > 0.5 <=> score > 0 is fake"
    train_head_only: bool = False
    tiny_config: Mapping[str, Any] = field(default_factory=dict)
    full_config: Mapping[str, Any] = field(default_factory=dict)

    @property
    def checkpoint_files(self) -> tuple[str, ...]:
        """The default checkpoint's candidate paths under ``--weights-dir``."""
        return self.weights[0].files

    @property
    def backbone_dir(self) -> str | None:
        """The CLIP tower folder under ``--weights-dir`` (None for detectors without one)."""
        return self.tower.dir if self.tower else None

    def weights_choice(self, choice: str | None = None) -> WeightsChoice:
        """The checkpoint ``choice`` (default: the first); an unknown one raises listing the valid ids."""
        if choice is None:
            return self.weights[0]
        for w in self.weights:
            if w.id == choice:
                return w
        raise UnknownIdError(f"{self.id} weights", choice, [w.id for w in self.weights])

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready record (configs and policies included)."""
        return {
            "id": self.id, "name": self.name, "citation": self.citation, "upstream_repo": self.upstream_repo,
            "weights": [w.as_dict() for w in self.weights], "module": self.module,
            "fixed_threshold": self.fixed_threshold, "native_input_size": self.native_input_size,
            "tower": self.tower.as_dict() if self.tower else None, "score": self.score,
            "train_head_only": self.train_head_only,
            "preprocess": self.preprocess.as_dict(), "tiny_preprocess": self.tiny_preprocess.as_dict(),
            "tiny_config": _jsonable(self.tiny_config), "full_config": _jsonable(self.full_config),
        }


def _jsonable(cfg: Mapping[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}


_SPECS = (
    DetectorSpec(
        id="npr", name="NPR",
        citation="Tan et al., Rethinking the Up-Sampling Operations in CNN-based Generative Network "
                 "for Generalizable Deepfake Detection, CVPR 2024",
        upstream_repo="https://github.com/chuangchuangtan/NPR-DeepfakeDetection",
        weights=(WeightsChoice(
            "npr", ("NPR.pth", "npr/NPR.pth", "NPR/NPR.pth"),
            "NPR.pth in the root of github.com/chuangchuangtan/NPR-DeepfakeDetection",
            "torch.save state dict (conv1.*, layer1.*, layer2.*, fc1.*)"),),
        preprocess=npr.UPSTREAM_POLICY, tiny_preprocess=npr.TINY_POLICY, module="npr",
        native_input_size=256, tiny_config=MappingProxyType(npr.TINY_CONFIG), full_config=MappingProxyType(npr.FULL_CONFIG),
    ),
    DetectorSpec(
        id="clipd", name="CLIP-D",
        citation="Cozzolino et al., Raising the Bar of AI-generated Image Detection with CLIP, CVPRW 2024",
        upstream_repo="https://github.com/grip-unina/ClipBased-SyntheticImageDetection",
        weights=(WeightsChoice(
            "clipdet_latent10k_plus",
            ("clipdet_latent10k_plus/weights.pth", "clipd/clipdet_latent10k_plus/weights.pth"),
            "weights/clipdet_latent10k_plus/weights.pth in github.com/grip-unina/ClipBased-SyntheticImageDetection "
            "(git lfs pull)",
            "{'model': {'module.fc.weight', 'module.fc.bias'}}: the linear head only"),),
        preprocess=clipd.UPSTREAM_POLICY, tiny_preprocess=clipd.TINY_POLICY, module="clipd",
        native_input_size=224, train_head_only=True,
        tower=TowerSpec(
            "CLIP-ViT-L-14-CommonPool.XL-s13B-b90K",
            "open_clip ViT-L-14 checkpoint open_clip_pytorch_model.bin of the Hugging Face repo "
            "laion/CLIP-ViT-L-14-CommonPool.XL-s13B-b90K (ClipBased networks/openclipnet.py 'clipL14commonpool')",
            import_format="open_clip"),
        tiny_config=MappingProxyType(clipd.TINY_CONFIG), full_config=MappingProxyType(clipd.FULL_CONFIG),
    ),
    DetectorSpec(
        id="r50nodown", name="ResNet-50 no-down (Corvi 2023)",
        citation="Corvi et al., On the Detection of Synthetic Images Generated by Diffusion Models, ICASSP 2023",
        upstream_repo="https://github.com/grip-unina/DMimageDetection",
        weights=(
            WeightsChoice(
                "grag2021_latent", ("Grag2021_latent/model_epoch_best.pth", "r50nodown/model_epoch_best.pth"),
                "weights/Grag2021_latent/model_epoch_best.pth of the weights archive linked from "
                "github.com/grip-unina/DMimageDetection (README, 'networks weights')",
                "{'model': state dict} saved from DataParallel (module.conv1.*, ..., module.fc.*)"),
            WeightsChoice(
                "corvi2023", ("Corvi2023/weights.pth",),
                "weights/Corvi2023/weights.pth in github.com/grip-unina/ClipBased-SyntheticImageDetection "
                "(git lfs pull; res50nodown, same architecture, its own training)",
                "{'model': state dict} saved from DataParallel (module.conv1.*, ..., module.fc.*)"),
        ),
        preprocess=r50nodown.UPSTREAM_POLICY, tiny_preprocess=r50nodown.TINY_POLICY, module="r50nodown",
        native_input_size=None,
        tiny_config=MappingProxyType(r50nodown.TINY_CONFIG), full_config=MappingProxyType(r50nodown.FULL_CONFIG),
    ),
    DetectorSpec(
        id="r50tf", name="TrueFake ResNet-50",
        citation="Dell'Anna et al., TrueFake: A Real World Case Dataset of Last Generation Fake Images "
                 "also Shared on Social Networks, 2025",
        upstream_repo="https://github.com/truebees-ai/Image-Deepfake-Detectors-Public-Library "
                      "(read from fork RickyZi/Image-Deepfake-Detectors-Public-Library)",
        weights=(WeightsChoice(
            "truefake", ("R50_TF/checkpoint/pretrained/weights/best.pt", "r50tf/checkpoint/pretrained/weights/best.pt"),
            "R50_TF/checkpoint/pretrained/weights/best.pt of the weights archive linked from the README of "
            "github.com/truebees-ai/Image-Deepfake-Detectors-Public-Library",
            "state dict (backbone.*, proto.*)"),),
        preprocess=r50tf.UPSTREAM_POLICY, tiny_preprocess=r50tf.TINY_POLICY, module="r50tf",
        native_input_size=None, score="upstream prototype score; score > 0 is fake",
        tiny_config=MappingProxyType(r50tf.TINY_CONFIG), full_config=MappingProxyType(r50tf.FULL_CONFIG),
    ),
    DetectorSpec(
        id="univfd", name="UnivFD",
        citation="Ojha et al., Towards Universal Fake Image Detectors that Generalize Across Generative Models, CVPR 2023",
        upstream_repo="https://github.com/WisconsinAIVision/UniversalFakeDetect",
        weights=(WeightsChoice(
            "fc_weights", ("fc_weights.pth", "pretrained_weights/fc_weights.pth", "univfd/fc_weights.pth"),
            "pretrained_weights/fc_weights.pth in github.com/WisconsinAIVision/UniversalFakeDetect",
            "state dict of the head: weight (1, 768), bias (1,)"),),
        preprocess=univfd.UPSTREAM_POLICY, tiny_preprocess=univfd.TINY_POLICY, module="univfd",
        native_input_size=224, train_head_only=True,
        tower=TowerSpec(
            "clip-vit-large-patch14",
            "the Hugging Face folder openai/clip-vit-large-patch14 (loads as it is), or OpenAI's ViT-L-14.pt "
            "(clip package, ~/.cache/clip; what UnivFD's clip.load reads)",
            import_format="openai_clip"),
        tiny_config=MappingProxyType(univfd.TINY_CONFIG), full_config=MappingProxyType(univfd.FULL_CONFIG),
    ),
)

DETECTORS: dict[str, DetectorSpec] = {spec.id: spec for spec in _SPECS}


def get_detector(detector_id: str) -> DetectorSpec:
    """The spec for ``detector_id``; ``UnknownIdError`` (a ``ValueError``) lists valid ids."""
    try:
        return DETECTORS[detector_id]
    except (KeyError, TypeError):
        raise UnknownIdError("detector", detector_id, DETECTORS) from None


def parse_weights_choices(value: str | None) -> dict[str, str]:
    """``"r50nodown=corvi2023"`` (comma-separated) -> ``{"r50nodown": "corvi2023"}``; bad ids raise listing valid ones."""
    choices: dict[str, str] = {}
    for item in (v.strip() for v in (value or "").split(",")):
        if not item:
            continue
        det, sep, choice = item.partition("=")
        if not sep or not choice.strip():
            raise ValueError(f"--detector-weights {item!r}: expected DETECTOR=CHOICE, e.g. "
                             + ", ".join(f"{d.id}={w.id}" for d in DETECTORS.values() for w in d.weights[1:]))
        spec = get_detector(det.strip())
        choices[spec.id] = spec.weights_choice(choice.strip()).id
    return choices
