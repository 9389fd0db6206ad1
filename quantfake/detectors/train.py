"""Seeded, deterministic, cached training of a detector (tiny profile or fine-tuning).

Why: the tiny profile needs detectors whose weights come from the tiny world, and users
want to fine-tune a detector on quantized fakes.  A held-out split (stratified, seeded) is
always reported.  Results are cached by a hash of the data (image SHA-256s, in order) and
the config: a second call with the same inputs loads the saved safetensors instead of
training.  CLIP-based detectors train only the linear head on frozen features by default,
as upstream does; ``head_only=False`` fine-tunes everything.  Training uses the detector's
test-time preprocessing and no augmentation (upstream trains with random crops/flips/JPEG;
we drop them so runs are deterministic and fast).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from filelock import FileLock
from torch import nn

from quantfake.auc import roc_auc_value
from quantfake.image_io import image_sha256
from quantfake.store import atomic_write_json

from .checkpoints import file_sha256, save_state_dict
from .loaded import build_module, load_detector, tiny_weights_path
from .preprocessing import ImageBatch, as_pil_list
from .registry import DEFAULT_REPRESENTATION, REPRESENTATIONS, check_representation, detector_token, get_detector
from .representation import apply_representation

CACHE_FORMAT = 1
TRAIN_PROFILES: tuple[str, ...] = ("tiny", "pretrained")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that changes the trained weights (all of it enters the cache key)."""

    profile: str = "tiny"
    seed: int = 0
    epochs: int = 3
    head_only_epochs: int = 200  # head-only runs on cached features: many cheap epochs
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.0
    holdout_fraction: float = 0.25
    head_only: bool | None = None  # None: the spec's default (CLIP detectors: head only)

    def __post_init__(self) -> None:
        if self.profile not in TRAIN_PROFILES:
            raise ValueError(f"unknown training profile {self.profile!r}; accepted: {', '.join(TRAIN_PROFILES)}")
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction must be in [0, 1), got {self.holdout_fraction}")
        if self.epochs < 0 or self.head_only_epochs < 0 or self.batch_size < 1:
            raise ValueError(
                f"need epochs >= 0, head_only_epochs >= 0 and batch_size >= 1, "
                f"got {self.epochs}, {self.head_only_epochs}, {self.batch_size}"
            )


@dataclass(frozen=True)
class TrainResult:
    detector_id: str
    weights_path: str
    weights_sha256: str
    cache_key: str
    cached: bool
    heldout_auc: float | None
    heldout_accuracy: float | None
    n_train: int
    n_heldout: int
    head_only: bool
    loss_history: list[float] = field(default_factory=list)
    train_seconds: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)
    init_checkpoint_sha256: str | None = None
    representation: str = DEFAULT_REPRESENTATION

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def train_detector(
    detector_id: str,
    real_images: ImageBatch,
    fake_images: ImageBatch,
    config: TrainConfig,
    out_dir: Path | str,
    real_sha256s: Sequence[str] | None = None,
    fake_sha256s: Sequence[str] | None = None,
    weights_dir: Path | str | None = None,
    trust_checkpoints: bool = False,
    representation: str = DEFAULT_REPRESENTATION,
) -> TrainResult:
    """Train (or load from cache) ``detector_id`` on real (label 0) vs fake (label 1) images.

    Writes ``out_dir/<id>.safetensors`` (the whole module's state dict, loadable with
    ``load_detector(id, config.profile, tiny_dir=out_dir)`` or ``checkpoint=``) and
    ``out_dir/<id>.train.json``.  ``profile='pretrained'`` starts from the upstream
    checkpoint found under ``weights_dir``.  A non-RGB ``representation`` (e.g. ``npr``) trains
    the detector on that input (from the upstream RGB weights for ``pretrained``) and writes
    ``out_dir/<id>+<representation>.*``; it enters the cache key only when not ``rgb``, so RGB
    keys and weights are those of a call without it.
    """
    spec = get_detector(detector_id)
    check_representation(detector_id, representation)
    token = detector_token(detector_id, representation)
    real, fake = as_pil_list(real_images), as_pil_list(fake_images)
    if not real or not fake:
        raise ValueError(f"need real and fake images, got {len(real)} real and {len(fake)} fake")
    real_h = list(real_sha256s) if real_sha256s is not None else [image_sha256(i) for i in real]
    fake_h = list(fake_sha256s) if fake_sha256s is not None else [image_sha256(i) for i in fake]
    if len(real_h) != len(real) or len(fake_h) != len(fake):
        raise ValueError("image hash lists must match the image lists in length")
    head_only = spec.train_head_only if config.head_only is None else config.head_only

    init = None
    if config.profile == "pretrained":
        init = load_detector(detector_id, "pretrained", weights_dir=weights_dir, trust_checkpoints=trust_checkpoints)
    key_src = {"format": CACHE_FORMAT, "detector": detector_id, "config": asdict(config), "head_only": head_only,
               "real": real_h, "fake": fake_h, "init": init.checkpoint_sha256 if init else None,
               "torch": torch.__version__}
    if representation != DEFAULT_REPRESENTATION:
        key_src["representation"] = representation
    cache_key = hashlib.sha256(json.dumps(key_src, sort_keys=True).encode()).hexdigest()

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights_path = tiny_weights_path(out_dir, detector_id, representation)
    meta_path = out_dir / f"{token}.train.json"
    with FileLock(str(out_dir / f"{token}.lock")):
        cached = _cached_result(meta_path, weights_path, cache_key)
        if cached is not None:
            return cached
        if init is not None:
            module = apply_representation(init.module, representation)
        else:
            module = build_module(spec, tiny=True, seed=config.seed, representation=representation)
        policy = init.preprocess if init is not None else spec.tiny_preprocess
        x = policy(real + fake)
        y = torch.cat([torch.zeros(len(real)), torch.ones(len(fake))])
        train_idx, held_idx = stratified_split(y.numpy(), config.holdout_fraction, config.seed)
        t0 = time.perf_counter()
        losses = _fit(module, x[train_idx], y[train_idx], config, head_only)
        seconds = time.perf_counter() - t0
        auc, acc = _evaluate(module, x[held_idx], y[held_idx], spec.fixed_threshold, config.batch_size)
        metadata = {"cache_key": cache_key, "detector": detector_id}
        if representation != DEFAULT_REPRESENTATION:
            metadata["representation"] = representation
        sha = save_state_dict(module.state_dict(), weights_path, metadata=metadata)
        result = TrainResult(
            detector_id=detector_id, weights_path=str(weights_path), weights_sha256=sha, cache_key=cache_key,
            cached=False, heldout_auc=auc, heldout_accuracy=acc, n_train=len(train_idx), n_heldout=len(held_idx),
            head_only=head_only, loss_history=losses, train_seconds=seconds, config=asdict(config),
            init_checkpoint_sha256=init.checkpoint_sha256 if init else None, representation=representation,
        )
        atomic_write_json(meta_path, result.as_dict())
        return result


def stratified_split(labels: np.ndarray, holdout_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded per-class split; every class keeps >= 1 training and (if fraction > 0) >= 1 held-out image."""
    rng = np.random.default_rng(seed)
    train, held = [], []
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        n_held = 0 if holdout_fraction == 0 else min(max(1, round(holdout_fraction * len(idx))), len(idx) - 1)
        held.append(idx[:n_held])
        train.append(idx[n_held:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(held))


def _fit(module: nn.Module, x: torch.Tensor, y: torch.Tensor, config: TrainConfig, head_only: bool) -> list[float]:
    """Adam on BCE-with-logits, seeded; returns the mean loss of each epoch."""
    prev_det, prev_warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            gen = torch.Generator().manual_seed(config.seed)
            heads = module.head_modules()  # type: ignore[operator]
            for p in module.parameters():
                p.requires_grad_(not head_only)
            for h in heads:
                for p in h.parameters():
                    p.requires_grad_(True)
            if head_only:
                module.eval()
                with torch.no_grad():
                    inputs = torch.cat([module.forward_features(b) for b in x.split(config.batch_size)])  # type: ignore[operator]
                forward = module.forward_head  # type: ignore[assignment]
                for h in heads:
                    h.train()
            else:
                module.train()
                inputs, forward = x, module
            params = [p for p in module.parameters() if p.requires_grad]
            opt = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
            loss_fn = nn.BCEWithLogitsLoss()
            history: list[float] = []
            for _ in range(config.head_only_epochs if head_only else config.epochs):
                order = torch.randperm(len(y), generator=gen)
                total = 0.0
                for b in order.split(config.batch_size):
                    opt.zero_grad(set_to_none=True)
                    loss = loss_fn(forward(inputs[b]).reshape(-1), y[b])
                    loss.backward()
                    opt.step()
                    total += float(loss.detach()) * len(b)
                history.append(total / max(len(y), 1))
    finally:
        torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn)
        for p in module.parameters():
            p.requires_grad_(True)
        module.eval()
    return history


def _evaluate(
    module: nn.Module, x: torch.Tensor, y: torch.Tensor, threshold: float, batch_size: int
) -> tuple[float | None, float | None]:
    """Held-out AUC and accuracy at the fixed (upstream) threshold."""
    if len(y) == 0:
        return None, None
    module.eval()
    with torch.inference_mode():
        scores = torch.cat([module(b).reshape(-1) for b in x.split(batch_size)]).numpy()
    labels = y.numpy()
    acc = float(np.mean((scores > threshold) == (labels == 1)))
    auc = roc_auc_value(labels, scores) if len(np.unique(labels)) == 2 else None
    return auc, acc


def _cached_result(meta_path: Path, weights_path: Path, cache_key: str) -> TrainResult | None:
    if not (meta_path.is_file() and weights_path.is_file()):
        return None
    meta = json.loads(meta_path.read_text())
    if meta.get("cache_key") != cache_key or file_sha256(weights_path) != meta.get("weights_sha256"):
        return None
    meta["cached"] = True
    return TrainResult(**meta)


def _load_folder(folder: Path) -> tuple[list[Any], list[str]]:
    from PIL import Image

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".webp"})
    if not files:
        raise FileNotFoundError(f"no .png/.jpg/.jpeg/.webp images in {folder}")
    return [Image.open(p).convert("RGB") for p in files], [file_sha256(p) for p in files]


def main(argv: Sequence[str] | None = None) -> int:
    from .registry import DETECTORS

    ap = argparse.ArgumentParser(prog="python -m quantfake.detectors.train", description=__doc__.split("\n")[0])
    ap.add_argument("--detector", required=True, choices=sorted(DETECTORS))
    ap.add_argument("--real", type=Path, required=True, help="folder of real images (label 0)")
    ap.add_argument("--fake", type=Path, required=True, help="folder of fake images (label 1)")
    ap.add_argument("--out", type=Path, required=True, help="output folder for <id>.safetensors and <id>.train.json")
    ap.add_argument("--representation", default=DEFAULT_REPRESENTATION, choices=sorted(REPRESENTATIONS),
                    help="detector input: rgb (default) or npr (r50nodown, r50tf only; writes <id>+npr.safetensors)")
    ap.add_argument("--profile", default="tiny", choices=TRAIN_PROFILES)
    ap.add_argument("--weights-dir", type=Path, default=None, help="upstream weights (profile pretrained)")
    ap.add_argument("--trust-checkpoints", action="store_true", help="allow pickles that run code (only trusted files)")
    d = TrainConfig()
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--epochs", type=int, default=d.epochs)
    ap.add_argument("--head-only-epochs", type=int, default=d.head_only_epochs)
    ap.add_argument("--batch-size", type=int, default=d.batch_size)
    ap.add_argument("--lr", type=float, default=d.lr)
    ap.add_argument("--holdout-fraction", type=float, default=d.holdout_fraction)
    ap.add_argument("--head-only", dest="head_only", action="store_true", default=None)
    ap.add_argument("--full", dest="head_only", action="store_false", help="fine-tune every layer")
    args = ap.parse_args(argv)
    try:
        check_representation(args.detector, args.representation)
    except ValueError as exc:
        ap.error(str(exc))
    real, real_h = _load_folder(args.real)
    fake, fake_h = _load_folder(args.fake)
    cfg = TrainConfig(profile=args.profile, seed=args.seed, epochs=args.epochs, head_only_epochs=args.head_only_epochs,
                      batch_size=args.batch_size, lr=args.lr, holdout_fraction=args.holdout_fraction, head_only=args.head_only)
    res = train_detector(args.detector, real, fake, cfg, args.out, real_h, fake_h, args.weights_dir,
                         args.trust_checkpoints, representation=args.representation)
    print(json.dumps({k: v for k, v in res.as_dict().items() if k != "loss_history"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
