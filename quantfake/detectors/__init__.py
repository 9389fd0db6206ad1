"""Fake-image detectors (NPR, CLIP-D, R50-nodown, TrueFake R50, UnivFD): upstream
architectures and test-time preprocessing, safe checkpoint loading, cached scoring, and
deterministic training of tiny versions.  Label 1 = fake; higher score = more fake.

Names are imported on first use, so ``quantfake.detectors.registry`` (data) loads without torch.
"""

from __future__ import annotations

import importlib

#: public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    "MissingWeights": "checkpoints", "UnsafeCheckpoint": "checkpoints", "load_checkpoint": "checkpoints",
    "save_state_dict": "checkpoints",
    "LoadedDetector": "loaded", "load_detector": "loaded",
    "PreprocessPolicy": "preprocessing",
    "DETECTORS": "registry", "DetectorSpec": "registry", "get_detector": "registry",
    "REPRESENTATIONS": "registry", "get_representation": "registry", "ResidualInput": "representation",
    "ScoreCache": "scoring", "score_images": "scoring",
    "TrainConfig": "train", "TrainResult": "train", "train_detector": "train",
}


def __getattr__(name: str) -> object:
    """Import the submodule defining ``name`` on first use (torch loads only with the implementations)."""
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
