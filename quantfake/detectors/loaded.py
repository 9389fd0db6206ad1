"""Build a ready-to-score detector for a profile and record everything that made its scores.

Profiles: ``tiny`` (reduced-width architecture, weights written by :mod:`.train` into
``tiny_dir``), ``pretrained`` (full architecture, upstream checkpoint from ``weights_dir``),
``random`` (full architecture, seeded random init; for latency/memory benchmarks only).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from quantfake.profiles import check_profile

from .checkpoints import MissingWeights, find_checkpoint, load_checkpoint
from .preprocessing import PreprocessPolicy
from .registry import DEFAULT_REPRESENTATION, DetectorSpec, check_representation, detector_token, get_detector
from .representation import apply_representation

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
    representation: str = DEFAULT_REPRESENTATION
    random_weights: bool = False  # random profile, or files from make-random-weights: scores mean nothing
    weights_choice: str | None = None  # which public checkpoint (spec.weights) a pretrained detector read
    calibration_sha256: str | None = None  # quantized with calibration data: the hash of those inputs

    @property
    def token(self) -> str:
        """``<id>`` or ``<id>+<representation>``: what the score cache and cell ids call this detector."""
        return detector_token(self.spec.id, self.representation)

    def with_module(self, module: nn.Module, precision: str, calibration_sha256: str | None = None) -> LoadedDetector:
        """Same detector with a transformed (e.g. quantized) module, under a new precision name.

        ``calibration_sha256``: the hash of the calibration inputs when they shaped the module (static int8);
        it joins the score-cache key, so another calibration set never reuses these scores.
        """
        return replace(self, module=module, precision=precision, calibration_sha256=calibration_sha256)

    def describe(self) -> dict[str, Any]:
        """Everything that made the scores (JSON-ready)."""
        return {
            "detector_id": self.spec.id, "name": self.spec.name, "profile": self.profile,
            "representation": self.representation,
            "precision": self.precision, "device": self.device, "calibration_sha256": self.calibration_sha256,
            "weights_choice": self.weights_choice,
            "checkpoint_path": self.checkpoint_path, "checkpoint_sha256": self.checkpoint_sha256,
            "backbone_dir": self.backbone_dir, "random_weights": self.random_weights,
            "preprocess": self.preprocess.as_dict(), "preprocess_sha256": self.preprocess.sha256(),
            "fixed_threshold": self.spec.fixed_threshold, "score": self.spec.score,
            "architecture": dict(self.spec.tiny_config if self.profile == "tiny" else self.spec.full_config),
            "parameters": sum(p.numel() for p in self.module.parameters()),
            "citation": self.spec.citation, "upstream_repo": self.spec.upstream_repo,
        }


def implementation(spec: DetectorSpec) -> ModuleType:
    """The module (``npr``, ``clipd``...) that builds and loads ``spec``'s network."""
    return importlib.import_module(f"{__package__}.{spec.module}")


def tiny_weights_path(tiny_dir: Path | str, detector_id: str, representation: str = DEFAULT_REPRESENTATION) -> Path:
    """Where :func:`train.train_detector` writes, and the tiny profile reads, the weights.

    ``<id>.safetensors`` for RGB, ``<id>+<representation>.safetensors`` otherwise.
    """
    return Path(tiny_dir) / f"{detector_token(detector_id, representation)}.safetensors"


def _representation_checkpoint(weights_dir: Path | str | None, detector_id: str, representation: str) -> Path:
    """A non-RGB pretrained checkpoint: ``<weights-dir>/<id>+<representation>.safetensors``.

    No upstream release exists for these; users train one (from the upstream RGB weights) with
    ``quantfake train --detector <id> --representation <representation> --profile pretrained``.
    """
    token = detector_token(detector_id, representation)
    hint = (f"train it: quantfake train --detector {detector_id} --representation {representation} "
            f"--profile pretrained --weights-dir DIR --real REAL --fake FAKE --out DIR")
    if weights_dir is None:
        raise MissingWeights(f"detector {token}", [], hint="no weights dir given (pass --weights-dir); " + hint)
    path = tiny_weights_path(weights_dir, detector_id, representation)
    if not path.is_file():
        raise MissingWeights(f"detector {token}", [path], hint=hint)
    return path


def build_module(
    spec: DetectorSpec,
    tiny: bool,
    backbone_dir: Path | None = None,
    seed: int = RANDOM_SEED,
    representation: str = DEFAULT_REPRESENTATION,
    tower_config: Mapping[str, Any] | None = None,
) -> nn.Module:
    """Seeded random init of the architecture (pretrained CLIP tower if ``backbone_dir``).

    ``tower_config`` replaces the upstream tower config that a tower folder is checked against (a tower
    written by ``make-random-weights`` at another size records its own).  A non-RGB ``representation``
    wraps the same (identically initialised) network in its input transform.
    """
    check_representation(spec.id, representation)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        impl = implementation(spec)
        module = impl.build(tiny, backbone_dir) if tower_config is None else impl.build(tiny, backbone_dir, config=tower_config)
    return apply_representation(module, representation)


def load_detector(
    detector_id: str,
    profile: str,
    weights_dir: Path | str | None = None,
    device: str = "cpu",
    trust_checkpoints: bool = False,
    tiny_dir: Path | str | None = None,
    checkpoint: Path | str | None = None,
    backbone_dir: Path | str | None = None,
    representation: str = DEFAULT_REPRESENTATION,
    weights: str | None = None,
) -> LoadedDetector:
    """A detector in eval mode on ``device``, always float32 (lower precisions are detector precisions).

    ``weights`` picks one of the detector's public checkpoints (``spec.weights``, default the first; e.g.
    ``corvi2023`` for r50nodown); the record names it with the file and SHA-256 read.
    ``checkpoint`` overrides the upstream file (e.g. a detector fine-tuned by :mod:`.train`:
    a safetensors of the whole module).  ``backbone_dir`` overrides the CLIP tower folder
    (default ``weights_dir / spec.backbone_dir``).  A non-RGB ``representation`` reads
    ``<id>+<representation>.safetensors`` (tiny dir, or weights dir for ``pretrained``).
    """
    spec = get_detector(detector_id)
    check_representation(detector_id, representation)
    choice = spec.weights_choice(weights)
    token = detector_token(detector_id, representation)
    check_profile(profile)
    ckpt_path: Path | None = None
    ckpt_sha = f"random-init-seed{RANDOM_SEED}"
    tower: Path | None = None
    random_weights = profile == "random"
    weights_choice: str | None = None
    if profile == "tiny":
        if tiny_dir is None and checkpoint is None:
            raise MissingWeights(f"tiny {token}", [], hint="pass tiny_dir (where train_detector wrote the weights)")
        ckpt_path = (Path(checkpoint) if checkpoint is not None
                     else tiny_weights_path(tiny_dir, detector_id, representation))  # type: ignore[arg-type]
        if not ckpt_path.is_file():
            raise MissingWeights(f"tiny {token}", [ckpt_path], hint="train it with quantfake.detectors.train")
        module = build_module(spec, tiny=True, representation=representation)
        loaded = load_checkpoint(ckpt_path)
        module.load_state_dict(loaded.state_dict, strict=True)
        ckpt_sha = loaded.sha256
        policy = spec.tiny_preprocess
    elif profile == "random":
        module = build_module(spec, tiny=False, representation=representation)
        if representation != DEFAULT_REPRESENTATION:
            ckpt_sha = f"{ckpt_sha}+{representation}"
        policy = spec.preprocess
    else:
        from .random_weights import random_weight_files, recorded_tower_config

        tower_config, random_tower = None, []
        if spec.backbone_dir is not None:
            tower = Path(backbone_dir) if backbone_dir is not None else _backbone_path(spec, weights_dir)
            random_tower = random_weight_files(weights_dir, [tower])  # hashes the tower once
            if random_tower:
                tower_config = recorded_tower_config(weights_dir, spec.id)
        module = build_module(spec, tiny=False, backbone_dir=tower, representation=representation,
                              tower_config=tower_config)
        if checkpoint is not None or representation != DEFAULT_REPRESENTATION:
            # no upstream release takes a non-RGB input: only whole-module checkpoints (ours) apply
            ckpt_path = (Path(checkpoint) if checkpoint is not None
                         else _representation_checkpoint(weights_dir, detector_id, representation))
            loaded = load_checkpoint(ckpt_path, trust_checkpoints)
            module.load_state_dict(loaded.state_dict, strict=True)
        else:
            ckpt_path = _choice_checkpoint(spec, choice.id, weights_dir)
            loaded = load_checkpoint(ckpt_path, trust_checkpoints)
            implementation(spec).load_upstream(module, loaded.state_dict)
            weights_choice = choice.id
        ckpt_sha = loaded.sha256
        policy = spec.preprocess
        random_weights = bool(random_tower or random_weight_files(weights_dir, [ckpt_path]))
    module = module.to(device).eval()
    return LoadedDetector(
        spec=spec, profile=profile, module=module, preprocess=policy,
        checkpoint_path=str(ckpt_path) if ckpt_path else None,
        checkpoint_sha256=ckpt_sha,
        device=str(device), backbone_dir=str(tower) if tower else None, representation=representation,
        random_weights=random_weights, weights_choice=weights_choice,
    )


def _choice_checkpoint(spec: DetectorSpec, choice: str, weights_dir: Path | str | None) -> Path:
    """The file of ``choice`` under ``weights_dir``; when missing, say which other choices are there."""
    files = spec.weights_choice(choice).files
    try:
        return find_checkpoint(weights_dir, files, f"detector {spec.id} ({choice} weights)")
    except MissingWeights as err:
        others = [w.id for w in spec.weights if w.id != choice and weights_dir is not None
                  and any((Path(weights_dir) / f).is_file() for f in w.files)]
        if not others:
            raise
        raise MissingWeights(err.what, err.searched,
                             hint=f"found the {', '.join(others)} weights instead: pick them with "
                                  f"--detector-weights {spec.id}={others[0]}") from None


def _backbone_path(spec: DetectorSpec, weights_dir: Path | str | None) -> Path:
    if weights_dir is None:
        raise MissingWeights(f"CLIP tower of {spec.id}", [spec.backbone_dir], hint="no weights dir given (pass --weights-dir)")
    return Path(weights_dir) / str(spec.backbone_dir)
