"""Full-size detectors with seeded random weights, written in the upstream layout under a weights dir.

Why: the ``pretrained`` path (upstream file names, wrappers, CLIP towers read as transformers folders)
can then run at full size with nothing downloaded, e.g. to rehearse a GPU run or time the detectors.
Scores of random detectors mean nothing: ``quantfake-random-weights.json`` in the root says so, lists
every file written with its seed and SHA-256, and :func:`random_weight_files` lets ``load_detector``
flag such detectors (``describe()["random_weights"]``).

Each detector's checkpoint goes to the first of its ``checkpoint_files`` (the name ``find_checkpoint``
tries first), in the container its upstream loader reads; the file names end in ``.pth``/``.pt``, so
they are ``torch.save`` state dicts that ``torch.load(weights_only=True)`` reads.  CLIP towers are
``save_pretrained`` folders (``config.json`` + ``model.safetensors``) under ``spec.backbone_dir``.
Writing is idempotent: files recorded in the manifest with the same seed, tower config and SHA-256
are kept; a file there that the manifest does not list is never overwritten.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from quantfake.store import atomic_write_json

from .checkpoints import file_sha256
from .loaded import implementation
from .registry import DETECTORS, DetectorSpec, get_detector

MANIFEST_NAME = "quantfake-random-weights.json"
NOTE = "RANDOM WEIGHTS: scores of random detectors mean nothing (written by quantfake make-random-weights)"
FORMAT_VERSION = 1


def _prefixed(prefix: str, sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in sd.items()}


# What each upstream checkpoint file holds (the inverse of the detector's ``load_upstream``).  CLIP-D
# and R50-nodown come from grip-unina training code: ``{'model': state_dict}`` saved from DataParallel
# (the ``module.`` prefix that upstream ``load_weights`` special-cases for ``module.fc.weight``).
UPSTREAM_CONTAINERS: dict[str, Callable[[nn.Module], object]] = {
    "npr": lambda m: m.state_dict(),                                            # NPR.pth: plain state dict
    "clipd": lambda m: {"model": _prefixed("module.fc.", m.fc.state_dict())},  # head only; tower is a folder
    "r50nodown": lambda m: {"model": _prefixed("module.", m.state_dict())},
    "r50tf": lambda m: m.state_dict(),                                          # best.pt: backbone.*, proto.*
    "univfd": lambda m: m.fc.state_dict(),                                      # fc_weights.pth: weight, bias
}


def tower_config(spec: DetectorSpec, overrides: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """The CLIP tower config written for ``spec`` (full size unless ``overrides``); None without a tower."""
    if spec.backbone_dir is None:
        return None
    return {**dict(implementation(spec).FULL_CONFIG), **dict(overrides or {})}


def build_random(spec: DetectorSpec, seed: int, tower_overrides: Mapping[str, Any] | None = None) -> nn.Module:
    """Full-size architecture, seeded as ``loaded.build_module`` seeds the ``random`` profile."""
    cfg = tower_config(spec, tower_overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        impl = implementation(spec)
        return impl.build(False) if cfg is None else impl.build(False, None, config=cfg)


def read_manifest(root: Path | str) -> dict[str, Any]:
    """The manifest under ``root`` (an empty one when absent)."""
    path = Path(root) / MANIFEST_NAME
    if not path.is_file():
        return {"random_weights": True, "note": NOTE, "format": FORMAT_VERSION, "detectors": {}}
    return json.loads(path.read_text())


def _files_match(root: Path, files: Mapping[str, Mapping[str, Any]]) -> bool:
    return bool(files) and all(
        (root / rel).is_file() and (root / rel).stat().st_size == rec["bytes"] and file_sha256(root / rel) == rec["sha256"]
        for rel, rec in files.items())


def _targets(spec: DetectorSpec) -> list[str]:
    return [spec.checkpoint_files[0]] + ([spec.backbone_dir] if spec.backbone_dir else [])


def _is_ours(root: Path, manifest: Mapping[str, Any], rel: str) -> bool:
    """Listed with the SHA-256 on disk, or under a target of an interrupted (``pending``) write."""
    for entry in manifest["detectors"].values():
        if any(rel == t or rel.startswith(t + "/") for t in entry.get("pending", [])):
            return True
        rec = entry.get("files", {}).get(rel)
        if rec is not None and file_sha256(root / rel) == rec["sha256"]:
            return True
    return False


def _refuse_foreign(root: Path, spec: DetectorSpec, manifest: Mapping[str, Any]) -> None:
    """Never overwrite what we did not write (e.g. real upstream weights in the same dir)."""
    for rel in _targets(spec):
        path = root / rel
        found = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else []
        foreign = [p for p in found if not _is_ours(root, manifest, p.relative_to(root).as_posix())]
        if foreign:
            raise FileExistsError(f"{foreign[0]} exists and is not listed in {root / MANIFEST_NAME} as random "
                                  f"weights written there; refusing to overwrite it (use another --root)")


def _record(root: Path, rel: str) -> dict[str, Any]:
    path = root / rel
    return {"sha256": file_sha256(path), "bytes": path.stat().st_size}


def _write_detector(root: Path, spec: DetectorSpec, seed: int, cfg: dict[str, Any] | None,
                    tower_overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    module = build_random(spec, seed, tower_overrides).eval()
    files: dict[str, dict[str, Any]] = {}
    ckpt = root / spec.checkpoint_files[0]
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=ckpt.parent, suffix=ckpt.suffix + ".tmp")
    os.close(fd)
    try:
        torch.save(UPSTREAM_CONTAINERS[spec.id](module), tmp)
        os.replace(tmp, ckpt)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    files[spec.checkpoint_files[0]] = _record(root, spec.checkpoint_files[0])
    if spec.backbone_dir is not None:
        tower = root / spec.backbone_dir
        tmp_dir = Path(tempfile.mkdtemp(dir=root, prefix=f".{spec.id}-tower-"))
        try:
            module.backbone.save_pretrained(str(tmp_dir))
            if tower.exists():
                shutil.rmtree(tower)  # ours and stale (checked by _refuse_foreign)
            os.replace(tmp_dir, tower)
        finally:
            if tmp_dir.exists():
                shutil.rmtree(tmp_dir)
        for path in sorted(p for p in tower.rglob("*") if p.is_file()):
            rel = path.relative_to(root).as_posix()
            files[rel] = _record(root, rel)
    return {"seed": seed, "checkpoint": spec.checkpoint_files[0], "backbone_dir": spec.backbone_dir,
            "tower_config": cfg, "parameters": sum(p.numel() for p in module.parameters()), "files": files,
            "written_unix": time.time()}


def write_random_weights_dir(
    root: Path | str,
    detectors: Iterable[str] | None = None,
    seed: int = 0,
    tower_overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write seeded random full-size detectors under ``root`` in the layout ``--weights-dir`` reads.

    ``tower_overrides`` shrinks the CLIP towers (tests only; the default is full-size ViT-L/14).
    Returns ``{"root", "manifest", "written": [paths], "kept": [paths], "detectors": {id: entry}}``.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    ids = list(DETECTORS) if detectors is None else [get_detector(d).id for d in detectors]
    manifest = read_manifest(root)
    manifest.update(random_weights=True, note=NOTE, format=FORMAT_VERSION)
    written: list[str] = []
    kept: list[str] = []
    for det_id in ids:
        spec = get_detector(det_id)
        cfg = tower_config(spec, tower_overrides)
        old = manifest["detectors"].get(det_id)
        if (old is not None and old.get("seed") == seed and old.get("tower_config") == cfg
                and _files_match(root, old.get("files", {}))):
            kept += list(old["files"])
            continue
        _refuse_foreign(root, spec, manifest)
        manifest["detectors"][det_id] = {"seed": seed, "pending": _targets(spec)}  # claims them if interrupted
        atomic_write_json(root / MANIFEST_NAME, manifest)
        entry = _write_detector(root, spec, seed, cfg, tower_overrides)
        manifest["detectors"][det_id] = entry
        manifest["environment"] = {"torch": torch.__version__, "transformers": _transformers_version()}
        atomic_write_json(root / MANIFEST_NAME, manifest)  # after each detector: an interrupted run resumes
        written += list(entry["files"])
    return {"root": str(root), "manifest": str(root / MANIFEST_NAME), "written": written, "kept": kept,
            "detectors": {d: manifest["detectors"][d] for d in ids}}


def _transformers_version() -> str | None:
    try:
        import transformers
    except ImportError:
        return None
    return str(transformers.__version__)


def random_weight_files(weights_dir: Path | str | None, paths: Iterable[Path | str | None]) -> list[str]:
    """Which of ``paths`` (checkpoint files or tower folders) hold random weights from this module.

    A path counts when the manifest under ``weights_dir`` lists it (or, for a folder, every file it
    lists under it) with the SHA-256 found on disk now; no manifest costs one ``stat``.
    """
    if weights_dir is None or not (Path(weights_dir) / MANIFEST_NAME).is_file():
        return []
    root = Path(weights_dir).resolve()
    listed = {rel: rec for entry in read_manifest(root)["detectors"].values() for rel, rec in entry.get("files", {}).items()}
    found = []
    for path in paths:
        if path is None:
            continue
        try:
            rel = Path(path).resolve().relative_to(root).as_posix()
        except ValueError:
            continue  # outside the weights dir (e.g. a --checkpoint override)
        files = {r: rec for r, rec in listed.items() if r == rel or r.startswith(rel + "/")}
        if _files_match(root, files):
            found.append(str(path))
    return found


def recorded_tower_config(weights_dir: Path | str, detector_id: str) -> dict[str, Any] | None:
    """The tower config the manifest under ``weights_dir`` records for ``detector_id`` (None if none).

    ``load_detector`` checks a random tower folder against it instead of the upstream ViT-L/14 config, so a
    tower written at another size (``tower_overrides``) still loads, and still has its config checked.
    """
    entry = read_manifest(weights_dir)["detectors"].get(detector_id) or {}
    return entry.get("tower_config")


def main(argv: Sequence[str] | None = None) -> int:
    """``quantfake make-random-weights --root DIR [--detectors npr,clipd|all] [--seed N]``."""
    ap = argparse.ArgumentParser(prog="quantfake make-random-weights", description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, required=True, help="weights dir to write (pass it later as --weights-dir)")
    ap.add_argument("--detectors", default="all", help=f"comma-separated ids or 'all' ({', '.join(DETECTORS)})")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    ids = None if args.detectors.strip() == "all" else [d.strip() for d in args.detectors.split(",") if d.strip()]
    try:
        result = write_random_weights_dir(args.root, ids, seed=args.seed)
    except ValueError as exc:  # an unknown detector id
        ap.error(str(exc))
    for det_id, entry in result["detectors"].items():
        size = sum(rec["bytes"] for rec in entry["files"].values())
        print(f"{det_id:10s} {entry['parameters']:>11,d} params  {size / 2**20:9.1f} MiB  {entry['checkpoint']}"
              + (f" + {entry['backbone_dir']}/" if entry["backbone_dir"] else ""))
    print(f"wrote {len(result['written'])} file(s), kept {len(result['kept'])}; manifest {result['manifest']}")
    print(NOTE)
    return 0
