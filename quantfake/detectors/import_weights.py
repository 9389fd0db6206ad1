"""``quantfake import-weights``: convert the public CLIP towers that do not load as they are into the
transformers folder a CLIP detector reads (``spec.tower.dir`` under ``--weights-dir``).

Formats (:data:`IMPORT_FORMATS`):

* ``open_clip``: an open_clip ``ViT-L-14`` checkpoint such as ``open_clip_pytorch_model.bin`` of
  ``laion/CLIP-ViT-L-14-CommonPool.XL-s13B-b90K``, CLIP-D's tower (open_clip's ``ViT-L-14`` uses
  ``gelu``);
* ``openai_clip``: OpenAI's ``ViT-L-14.pt`` (the ``clip`` package's file, what UnivFD's ``clip.load``
  reads; ``quick_gelu``), a TorchScript archive read without running it
  (:mod:`.torchscript_archive`), or a plain state dict of the same model.

Both hold the same ``visual.*`` layout (open_clip's ViT is OpenAI's): the geometry is read from the
tensor shapes as OpenAI's ``build_model`` does (heads = width / 64 in both upstreams), and the keys map
to ``CLIPVisionModelWithProjection`` as in transformers' own ``convert_clip_original_pytorch_to_hf.py``
(fused ``in_proj`` split into q/k/v, ``proj`` transposed into ``visual_projection``). That script lives in
the transformers repository, not its package, hence this module. Tensors keep the dtype of the source
(OpenAI's are fp16); the tower loader reads them into float32.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from quantfake.errors import UnknownIdError

from .checkpoints import file_sha256, read_checkpoint, unwrap_state_dict
from .clip_backbone import check_tower_config, vision_config
from .registry import DETECTORS, DetectorSpec

PROVENANCE_NAME = "quantfake-import.json"
HEAD_WIDTH = 64  # OpenAI build_model and open_clip's ViT both use width // 64 heads


@dataclass(frozen=True)
class ImportFormat:
    """An upstream tower format ``import-weights`` converts."""

    id: str
    description: str
    hidden_act: str


IMPORT_FORMATS: dict[str, ImportFormat] = {
    f.id: f
    for f in (
        ImportFormat("open_clip", "open_clip ViT checkpoint (open_clip_pytorch_model.bin / .safetensors), e.g. "
                     "laion/CLIP-ViT-L-14-CommonPool.XL-s13B-b90K for CLIP-D", "gelu"),
        ImportFormat("openai_clip", "OpenAI CLIP ViT file of the clip package (ViT-L-14.pt: TorchScript archive or "
                     "state dict), what UnivFD's clip.load reads", "quick_gelu"),
    )
}


def get_import_format(format_id: str) -> ImportFormat:
    if format_id not in IMPORT_FORMATS:
        raise UnknownIdError("import format", format_id, IMPORT_FORMATS)
    return IMPORT_FORMATS[format_id]


def read_clip_state_dict(path: Path | str) -> dict[str, torch.Tensor]:
    """The source's tensors, read without executing code (TorchScript archives included)."""
    from .torchscript_archive import is_torchscript_archive, read_torchscript_tensors

    if is_torchscript_archive(path):
        return read_torchscript_tensors(path)
    return unwrap_state_dict(read_checkpoint(path))


def visual_geometry(sd: Mapping[str, torch.Tensor], hidden_act: str) -> dict[str, Any]:
    """``CLIPVisionConfig`` fields of the ``visual.*`` ViT in ``sd`` (shapes as OpenAI's ``build_model`` reads them)."""
    if "visual.conv1.weight" not in sd or "visual.proj" not in sd:
        found = sorted(k for k in sd if k.startswith("visual."))[:8] or sorted(sd)[:8]
        raise KeyError(f"not a CLIP ViT checkpoint: visual.conv1.weight / visual.proj missing (first keys: {found})")
    width, _, patch, _ = sd["visual.conv1.weight"].shape
    grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    layers = len({k.split(".")[3] for k in sd if k.startswith("visual.transformer.resblocks.")})
    return {"hidden_size": int(width), "intermediate_size": int(sd["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
            "num_hidden_layers": layers, "num_attention_heads": int(width) // HEAD_WIDTH, "image_size": int(patch * grid),
            "patch_size": int(patch), "projection_dim": int(sd["visual.proj"].shape[1]), "layer_norm_eps": 1e-5,
            "hidden_act": hidden_act}


def visual_to_transformers(sd: Mapping[str, torch.Tensor], layers: int) -> dict[str, torch.Tensor]:
    """``visual.*`` tensors -> ``CLIPVisionModelWithProjection`` state dict; leftover ``visual.*`` keys raise."""
    used: set[str] = set()

    def take(key: str) -> torch.Tensor:
        used.add(key)
        return sd[key]

    out = {"visual_projection.weight": take("visual.proj").t().contiguous(),
           "vision_model.embeddings.class_embedding": take("visual.class_embedding"),
           "vision_model.embeddings.patch_embedding.weight": take("visual.conv1.weight"),
           "vision_model.embeddings.position_embedding.weight": take("visual.positional_embedding")}
    for src, dst in (("ln_pre", "pre_layrnorm"), ("ln_post", "post_layernorm")):
        for p in ("weight", "bias"):
            out[f"vision_model.{dst}.{p}"] = take(f"visual.{src}.{p}")
    for i in range(layers):
        s, d = f"visual.transformer.resblocks.{i}.", f"vision_model.encoder.layers.{i}."
        for src, dst in (("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"), ("mlp.c_fc", "mlp.fc1"),
                         ("mlp.c_proj", "mlp.fc2"), ("attn.out_proj", "self_attn.out_proj")):
            for p in ("weight", "bias"):
                out[f"{d}{dst}.{p}"] = take(f"{s}{src}.{p}")
        for p in ("weight", "bias"):
            for name, part in zip(("q_proj", "k_proj", "v_proj"), take(f"{s}attn.in_proj_{p}").chunk(3, dim=0), strict=True):
                out[f"{d}self_attn.{name}.{p}"] = part.contiguous()
    leftover = sorted(k for k in sd if k.startswith("visual.") and k not in used)
    if leftover:
        raise KeyError(f"unsupported CLIP visual layout: keys not converted {leftover[:8]}"
                       + (f" and {len(leftover) - 8} more" if len(leftover) > 8 else ""))
    return out


def convert_tower(source: Path | str, format_id: str, out: Path | str,
                  expect: DetectorSpec | None = None) -> dict[str, Any]:
    """Write ``source`` (format ``format_id``) as a transformers tower folder at ``out``; returns the record.

    ``expect``: the detector the folder is for; its feature fields are checked before anything is written.
    """
    from transformers import CLIPVisionModelWithProjection

    fmt = get_import_format(format_id)
    source, out = Path(source), Path(out)
    sd = read_clip_state_dict(source)
    config = visual_geometry(sd, fmt.hidden_act)
    if expect is not None:
        from .loaded import implementation

        impl = implementation(expect)
        check_tower_config(vision_config(**config), impl.FULL_CONFIG, impl.TOWER_FIELDS, f"converted from {source}")
    weights = visual_to_transformers(sd, config["num_hidden_layers"])
    with torch.device("meta"):
        model = CLIPVisionModelWithProjection(vision_config(**config))
    model.load_state_dict(weights, strict=True, assign=True)
    record = {"format": fmt.id, "source": str(source.resolve()), "source_sha256": file_sha256(source),
              "config": config, "dtype": str(next(iter(weights.values())).dtype).removeprefix("torch."),
              "converted_unix": time.time()}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-import-"))
    try:
        model.save_pretrained(str(tmp))
        (tmp / PROVENANCE_NAME).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return {**record, "out": str(out)}


def detector_for_format(format_id: str) -> DetectorSpec:
    """The detector whose tower ``format_id`` converts (``quantfake models`` lists them)."""
    for spec in DETECTORS.values():
        if spec.tower is not None and spec.tower.import_format == format_id:
            return spec
    raise UnknownIdError("import format", format_id, [s.tower.import_format for s in DETECTORS.values() if s.tower])


def main(argv: Sequence[str] | None = None) -> int:
    """``quantfake import-weights --format open_clip --source FILE --weights-dir DIR`` (or ``--out FOLDER``)."""
    ap = argparse.ArgumentParser(prog="quantfake import-weights", description=__doc__.split("\n\n")[0])
    ap.add_argument("--format", required=True, help="; ".join(f"{f.id}: {f.description}" for f in IMPORT_FORMATS.values()))
    ap.add_argument("--source", required=True, type=Path, help="the upstream file")
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--weights-dir", type=Path, help="write the tower folder its detector reads there (checked first)")
    where.add_argument("--out", type=Path, help="write the folder here instead (any ViT size, not checked)")
    args = ap.parse_args(argv)
    try:
        spec = detector_for_format(args.format)
    except UnknownIdError as exc:
        ap.error(str(exc))
    if not args.source.is_file():
        ap.error(f"--source {args.source}: no such file")
    out = args.out if args.out is not None else args.weights_dir / str(spec.backbone_dir)
    record = convert_tower(args.source, args.format, out, expect=None if args.out is not None else spec)
    cfg = record["config"]
    print(f"{spec.id}: {args.source} ({record['format']}, sha256 {record['source_sha256'][:12]}) -> {record['out']}")
    print(f"  ViT width {cfg['hidden_size']}, {cfg['num_hidden_layers']} layers, patch {cfg['patch_size']}, "
          f"{cfg['image_size']} px, {cfg['hidden_act']}, projection {cfg['projection_dim']}, {record['dtype']}")
    return 0
