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

from .preprocessing import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, PreprocessPolicy


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


# --------------------------------------------------------------------------------------------------
# each detector's upstream test preprocessing and its full-size / tiny architecture (the modules read them here)

# ViT-L/14 geometry shared by OpenAI CLIP and open_clip ViT-L-14; the activation differs
# (OpenAI: quick_gelu; open_clip "ViT-L-14" as used by CLIP-D's CommonPool weights: gelu).
VIT_L14: dict[str, Any] = {
    "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
    "image_size": 224, "patch_size": 14, "projection_dim": 768, "layer_norm_eps": 1e-5,
}

_NPR_UPSTREAM = PreprocessPolicy(
    resize=(256, 256), crop=None, interpolation="bilinear", mean=IMAGENET_MEAN, std=IMAGENET_STD,
    note="NPR test.py: no_resize=False (loadSize 256, torchvision Resize default bilinear), no_crop=True",
)
_NPR_TINY = PreprocessPolicy(
    resize=None, crop=None, interpolation="bilinear", mean=IMAGENET_MEAN, std=IMAGENET_STD,
    note="tiny world images are all 64x64: native resolution, as upstream no_resize=True",
)
_NPR_FULL: dict[str, int | tuple[int, ...]] = {"width": 64, "layers": (3, 4)}
_NPR_TINY_CONFIG: dict[str, int | tuple[int, ...]] = {"width": 8, "layers": (1, 1)}

_CLIPD_UPSTREAM = PreprocessPolicy(
    resize=224, crop=224, interpolation="bicubic", mean=CLIP_MEAN, std=CLIP_STD,
    note="ClipBased main.py patch_size Clip224: Resize(224, BICUBIC), CenterCrop(224), norm_type clip",
)
_CLIPD_TINY = PreprocessPolicy(
    resize=32, crop=32, interpolation="bicubic", mean=CLIP_MEAN, std=CLIP_STD,
    note="upstream Clip224 scaled to the tiny tower's 32x32 input",
)
_CLIPD_FULL: dict[str, object] = {**VIT_L14, "hidden_act": "gelu"}
_CLIPD_TINY_CONFIG: dict[str, object] = {
    "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
    "image_size": 32, "patch_size": 8, "projection_dim": 16, "hidden_act": "gelu",
}

_R50NODOWN_UPSTREAM = PreprocessPolicy(
    resize=None, crop=None, interpolation="bilinear", mean=IMAGENET_MEAN, std=IMAGENET_STD,
    note="DMimageDetection get_method_here.py / ClipBased Corvi2023 config: patch_size None, norm_type resnet",
)
_R50NODOWN_TINY = _R50NODOWN_UPSTREAM
_R50NODOWN_FULL: dict[str, int | tuple[int, ...]] = {"width": 64, "layers": (3, 4, 6, 3)}
# three stages: at stride 1 the 64x64 activations dominate CPU time; a 4th stage adds little
_R50NODOWN_TINY_CONFIG: dict[str, int | tuple[int, ...]] = {"width": 8, "layers": (1, 1, 1)}

_R50TF_UPSTREAM = PreprocessPolicy(
    resize=None, crop=None, interpolation="bilinear", mean=IMAGENET_MEAN, std=IMAGENET_STD,
    note="TrueFake R50_TF utils/dataset.py test split: ToImage, ToDtype(scale=True), Normalize(ImageNet)",
)
_R50TF_TINY = _R50TF_UPSTREAM
_R50TF_FULL: dict[str, int | tuple[int, ...]] = {"width": 64, "layers": (3, 4, 6, 3), "embed_dim": 128, "num_centers": 1}
_R50TF_TINY_CONFIG: dict[str, int | tuple[int, ...]] = {"width": 8, "layers": (1, 1, 1, 1), "embed_dim": 16, "num_centers": 1}

_UNIVFD_UPSTREAM = PreprocessPolicy(
    resize=None, crop=224, interpolation="bicubic", mean=CLIP_MEAN, std=CLIP_STD,
    note="UnivFD validate.py: CenterCrop(224), ToTensor, Normalize(CLIP); no resize (interpolation unused)",
)
_UNIVFD_TINY = PreprocessPolicy(
    resize=None, crop=56, interpolation="bicubic", mean=CLIP_MEAN, std=CLIP_STD,
    note="upstream centre crop without resize, scaled to the tiny tower's 56x56 input",
)
_UNIVFD_FULL: dict[str, object] = {**VIT_L14, "hidden_act": "quick_gelu"}
_UNIVFD_TINY_CONFIG: dict[str, object] = {
    "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
    "image_size": 56, "patch_size": 8, "projection_dim": 16, "hidden_act": "quick_gelu",
}


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
        preprocess=_NPR_UPSTREAM, tiny_preprocess=_NPR_TINY, module="npr",
        native_input_size=256, tiny_config=MappingProxyType(_NPR_TINY_CONFIG), full_config=MappingProxyType(_NPR_FULL),
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
        preprocess=_CLIPD_UPSTREAM, tiny_preprocess=_CLIPD_TINY, module="clipd",
        native_input_size=224, train_head_only=True,
        tower=TowerSpec(
            "CLIP-ViT-L-14-CommonPool.XL-s13B-b90K",
            "open_clip ViT-L-14 checkpoint open_clip_pytorch_model.bin of the Hugging Face repo "
            "laion/CLIP-ViT-L-14-CommonPool.XL-s13B-b90K (ClipBased networks/openclipnet.py 'clipL14commonpool')",
            import_format="open_clip"),
        tiny_config=MappingProxyType(_CLIPD_TINY_CONFIG), full_config=MappingProxyType(_CLIPD_FULL),
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
        preprocess=_R50NODOWN_UPSTREAM, tiny_preprocess=_R50NODOWN_TINY, module="r50nodown",
        native_input_size=None,
        tiny_config=MappingProxyType(_R50NODOWN_TINY_CONFIG), full_config=MappingProxyType(_R50NODOWN_FULL),
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
        preprocess=_R50TF_UPSTREAM, tiny_preprocess=_R50TF_TINY, module="r50tf",
        native_input_size=None, score="upstream prototype score; score > 0 is fake",
        tiny_config=MappingProxyType(_R50TF_TINY_CONFIG), full_config=MappingProxyType(_R50TF_FULL),
    ),
    DetectorSpec(
        id="univfd", name="UnivFD",
        citation="Ojha et al., Towards Universal Fake Image Detectors that Generalize Across Generative Models, CVPR 2023",
        upstream_repo="https://github.com/WisconsinAIVision/UniversalFakeDetect",
        weights=(WeightsChoice(
            "fc_weights", ("fc_weights.pth", "pretrained_weights/fc_weights.pth", "univfd/fc_weights.pth"),
            "pretrained_weights/fc_weights.pth in github.com/WisconsinAIVision/UniversalFakeDetect",
            "state dict of the head: weight (1, 768), bias (1,)"),),
        preprocess=_UNIVFD_UPSTREAM, tiny_preprocess=_UNIVFD_TINY, module="univfd",
        native_input_size=224, train_head_only=True,
        tower=TowerSpec(
            "clip-vit-large-patch14",
            "the Hugging Face folder openai/clip-vit-large-patch14 (loads as it is), or OpenAI's ViT-L-14.pt "
            "(clip package, ~/.cache/clip; what UnivFD's clip.load reads)",
            import_format="openai_clip"),
        tiny_config=MappingProxyType(_UNIVFD_TINY_CONFIG), full_config=MappingProxyType(_UNIVFD_FULL),
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


# --------------------------------------------------------------------------------------------------
# input representations (what a detector's first layer sees; :mod:`.representation` applies them)

DEFAULT_REPRESENTATION = "rgb"


@dataclass(frozen=True)
class Representation:
    """A detector input; ``detectors`` lists the detector ids that accept it (None: every detector)."""

    id: str
    description: str
    detectors: tuple[str, ...] | None = None

    def accepts(self, detector_id: str) -> bool:
        return self.detectors is None or detector_id in self.detectors


REPRESENTATIONS: dict[str, Representation] = {
    r.id: r
    for r in (
        Representation("rgb", "normalized RGB pixels, as upstream (default)"),
        Representation("npr", "NPR residual x - up2(down2(x)) (nearest), scaled by 2/3, as NPR's conv1 input",
                       detectors=("r50nodown", "r50tf")),
    )
}


def get_representation(representation_id: str) -> Representation:
    """The representation ``representation_id``; ``UnknownIdError`` (a ``ValueError``) lists valid ids."""
    try:
        return REPRESENTATIONS[representation_id]
    except (KeyError, TypeError):
        raise UnknownIdError("representation", representation_id, REPRESENTATIONS) from None


def check_representation(detector_id: str, representation_id: str) -> Representation:
    """The representation, after checking that ``detector_id`` accepts it (``ValueError`` otherwise)."""
    rep = get_representation(representation_id)
    if not rep.accepts(detector_id):
        accepting = [r.id for r in REPRESENTATIONS.values() if r.accepts(detector_id)]
        raise ValueError(
            f"detector {detector_id!r} does not accept representation {representation_id!r} "
            f"(it accepts: {', '.join(accepting)}); {representation_id!r} is for: {', '.join(rep.detectors or ())}"
        )
    return rep


def representations_for(detector_id: str, representation_ids: tuple[str, ...]) -> tuple[str, ...]:
    """The subset of ``representation_ids`` that ``detector_id`` accepts (the cell grid's axis)."""
    return tuple(r for r in representation_ids if get_representation(r).accepts(detector_id))


def detector_token(detector_id: str, representation_id: str = DEFAULT_REPRESENTATION) -> str:
    """``r50nodown`` for RGB, ``r50nodown+npr`` otherwise: used in cell ids, file names and cache keys."""
    return detector_id if representation_id == DEFAULT_REPRESENTATION else f"{detector_id}+{representation_id}"
