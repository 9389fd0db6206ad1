"""Fake-image detectors (NPR, CLIP-D, R50-nodown, TrueFake R50, UnivFD): upstream
architectures and test-time preprocessing, safe checkpoint loading, cached scoring, and
deterministic training of tiny versions.  Label 1 = fake; higher score = more fake."""

from .checkpoints import MissingWeights, UnsafeCheckpoint, load_checkpoint, save_state_dict
from .loaded import PROFILES, LoadedDetector, load_detector
from .preprocessing import PreprocessPolicy
from .registry import DETECTORS, DetectorSpec, get_detector
from .representation import REPRESENTATIONS, ResidualInput, get_representation
from .scoring import ScoreCache, image_sha256, score_images

_LAZY_TRAIN = ("TrainConfig", "TrainResult", "train_detector")


def __getattr__(name: str) -> object:
    """Import :mod:`.train` on first use, so ``python -m quantfake.detectors.train`` runs cleanly."""
    if name in _LAZY_TRAIN:
        from . import train

        return getattr(train, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DETECTORS", "PROFILES", "REPRESENTATIONS", "DetectorSpec", "LoadedDetector", "MissingWeights",
    "PreprocessPolicy", "ResidualInput", "ScoreCache", "TrainConfig", "TrainResult", "UnsafeCheckpoint",
    "get_detector", "get_representation", "image_sha256", "load_checkpoint", "load_detector", "save_state_dict",
    "score_images", "train_detector",
]
