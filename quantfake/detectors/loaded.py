"""Build a ready-to-score detector for a profile and record everything that made its scores.

Profiles: ``tiny`` (reduced-width architecture, weights written by :mod:`.train` into
``tiny_dir``), ``pretrained`` (full architecture, upstream checkpoint from ``weights_dir``),
``random`` (full architecture, seeded random init; for latency/memory benchmarks only).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from .checkpoints import MissingWeights, find_checkpoint, load_checkpoint
from .preprocessing import PreprocessPolicy
from .registry import DetectorSpec, get_detector

PROFILES: tuple[str, ...] = ("tiny", "pretrained", "random")
RANDOM_SEED = 0


@dataclass(frozen=True)
class LoadedDetector:
    spec: DetectorSpec
    profile: str
    module: nn.Module
    preprocess: PreprocessPolicy
    checkpoint_path: str | None
    checkpoint_sha256: str
    precision: str = "fp32"
    device: str = "cpu"
    backbone_dir: str | None = None

    def with_module(self, module: nn.Module, precision: str) -> LoadedDetector:
        """Same detector with a transformed (e.g. quantized) module, under a new precision name."""
        return replace(self, module=module, precision=precision)

    def describe(self) -> dict[str, Any]:
        """Everything that made the scores (JSON-ready)."""
        return {
            "detector_id": self.spec.id, "name": self.spec.name, "profile": self.profile,
            "precision": self.precision, "device": self.device,
            "checkpoint_path": self.checkpoint_path, "checkpoint_sha256": self.checkpoint_sha256,
            "backbone_dir": self.backbone_dir,
            "preprocess": self.preprocess.as_dict(), "preprocess_sha256": self.preprocess.sha256(),
            "fixed_threshold": self.spec.fixed_threshold, "score": self.spec.score,
            "architecture": dict(self.spec.tiny_config if self.profile == "tiny" else self.spec.full_config),
            "parameters": sum(p.numel() for p in self.module.parameters()),
            "citation": self.spec.citation, "upstream_repo": self.spec.upstream_repo,
        }


def implementation(spec: DetectorSpec) -> ModuleType:
    """The module (``npr``, ``clipd``...) that builds and loads ``spec``'s network."""
    return importlib.import_module(f"{__package__}.{spec.module}")


def tiny_weights_path(tiny_dir: Path | str, detector_id: str) -> Path:
    """Where :func:`train.train_detector` writes, and the tiny profile reads, the weights."""
    return Path(tiny_dir) / f"{detector_id}.safetensors"


def build_module(spec: DetectorSpec, tiny: bool, backbone_dir: Path | None = None, seed: int = RANDOM_SEED) -> nn.Module:
    """Seeded random init of the architecture (pretrained CLIP tower if ``backbone_dir``)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return implementation(spec).build(tiny, backbone_dir)


def load_detector(
    detector_id: str,
    profile: str,
    weights_dir: Path | str | None = None,
    device: str = "cpu",
    trust_checkpoints: bool = False,
    tiny_dir: Path | str | None = None,
    checkpoint: Path | str | None = None,
    backbone_dir: Path | str | None = None,
) -> LoadedDetector:
    """A detector in eval mode on ``device``.

    ``checkpoint`` overrides the upstream file (e.g. a detector fine-tuned by :mod:`.train`:
    a safetensors of the whole module).  ``backbone_dir`` overrides the CLIP tower folder
    (default ``weights_dir / spec.backbone_dir``).
    """
    spec = get_detector(detector_id)
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; accepted: {', '.join(PROFILES)}")
    ckpt_path: Path | None = None
    ckpt_sha = f"random-init-seed{RANDOM_SEED}"
    tower: Path | None = None
    if profile == "tiny":
        if tiny_dir is None and checkpoint is None:
            raise MissingWeights(f"tiny {detector_id}", [], hint="pass tiny_dir (where train_detector wrote the weights)")
        ckpt_path = Path(checkpoint) if checkpoint is not None else tiny_weights_path(tiny_dir, detector_id)  # type: ignore[arg-type]
        if not ckpt_path.is_file():
            raise MissingWeights(f"tiny {detector_id}", [ckpt_path], hint="train it with quantfake.detectors.train")
        module = build_module(spec, tiny=True)
        loaded = load_checkpoint(ckpt_path)
        module.load_state_dict(loaded.state_dict, strict=True)
        ckpt_sha = loaded.sha256
        policy = spec.tiny_preprocess
    elif profile == "random":
        module = build_module(spec, tiny=False)
        policy = spec.preprocess
    else:
        if spec.backbone_dir is not None:
            tower = Path(backbone_dir) if backbone_dir is not None else _backbone_path(spec, weights_dir)
        module = build_module(spec, tiny=False, backbone_dir=tower)
        if checkpoint is not None:
            ckpt_path = Path(checkpoint)
            loaded = load_checkpoint(ckpt_path, trust_checkpoints)
            module.load_state_dict(loaded.state_dict, strict=True)
        else:
            ckpt_path = find_checkpoint(weights_dir, spec.checkpoint_files, f"detector {detector_id}")
            loaded = load_checkpoint(ckpt_path, trust_checkpoints)
            implementation(spec).load_upstream(module, loaded.state_dict)
        ckpt_sha = loaded.sha256
        policy = spec.preprocess
    module = module.to(device).eval()
    return LoadedDetector(
        spec=spec, profile=profile, module=module, preprocess=policy,
        checkpoint_path=str(ckpt_path) if ckpt_path else None,
        checkpoint_sha256=ckpt_sha,
        device=str(device), backbone_dir=str(tower) if tower else None,
    )


def _backbone_path(spec: DetectorSpec, weights_dir: Path | str | None) -> Path:
    if weights_dir is None:
        raise MissingWeights(f"CLIP tower of {spec.id}", [spec.backbone_dir], hint="no weights dir given (pass --weights-dir)")
    return Path(weights_dir) / str(spec.backbone_dir)
