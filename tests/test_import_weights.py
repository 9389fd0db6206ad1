"""`quantfake import-weights`: upstream CLIP towers (open_clip, OpenAI ViT-L-14.pt) into the --weights-dir layout.

The round trips build open_clip models with random weights (a ViT of ViT-L/14's structure: patch 14, 224 px,
head width 64, at width 128 and 2 layers, so it runs in seconds on 2 cores), save them as the upstream files,
convert them with the CLI and compare quantfake's features with open_clip's own.
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from quantfake.cli import main as cli_main
from quantfake.detectors import UnsafeCheckpoint, clipd, univfd
from quantfake.detectors.checkpoints import file_sha256
from quantfake.detectors.clip_backbone import TowerMismatch
from quantfake.detectors.import_weights import PROVENANCE_NAME, visual_geometry
from quantfake.detectors.torchscript_archive import is_torchscript_archive, read_torchscript_tensors


def _open_clip():
    """open_clip, or a skip that says why (it needs a torchvision matching the installed torch)."""
    try:
        import open_clip
    except Exception as exc:  # noqa: BLE001 - a broken torchvision raises RuntimeError, not ImportError
        pytest.skip(f"open_clip not importable ({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); "
                    "pip install 'quantfake[convert]' with a torchvision that matches torch")
    return open_clip


def _random_clip(open_clip, quick_gelu: bool):
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(0)
    model = CLIP(embed_dim=48, vision_cfg=CLIPVisionCfg(layers=2, width=128, patch_size=14, image_size=224),
                 text_cfg=CLIPTextCfg(context_length=8, vocab_size=100, width=64, heads=1, layers=1),
                 quick_gelu=quick_gelu)
    with torch.no_grad():  # off the init values (LayerNorm 1 / 0), so a swapped tensor shows in the features
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def _convert(fmt: str, source: Path, out: Path) -> dict:
    assert cli_main(["import-weights", "--format", fmt, "--source", str(source), "--out", str(out)]) == 0
    return json.loads((out / PROVENANCE_NAME).read_text())


def test_open_clip_checkpoint_round_trip_matches_open_clip_features(tmp_path: Path) -> None:
    """CLIP-D's tower: open_clip ViT (gelu) -> transformers folder; the L2-normalised next-to-last feature."""
    open_clip = _open_clip()
    model = _random_clip(open_clip, quick_gelu=False)
    source = tmp_path / "open_clip_pytorch_model.bin"
    torch.save(model.state_dict(), source)
    record = _convert("open_clip", source, tmp_path / "tower")
    assert record["source_sha256"] == file_sha256(source) and record["config"]["hidden_act"] == "gelu"
    ours = clipd.build(False, tmp_path / "tower", config=record["config"]).eval()
    x = torch.randn(3, 3, 224, 224)
    with torch.no_grad():
        model.visual.proj = None  # upstream OpenClipLinear(next_to_last=True)
        ref = model.encode_image(x, normalize=True)
        got = ours.forward_features(x)
    assert (got - ref).abs().max() < 1e-5


def test_openai_torchscript_round_trip_matches_open_clip_features(tmp_path: Path) -> None:
    """UnivFD's tower: OpenAI-layout CLIP (quick_gelu) saved as a TorchScript archive like ViT-L-14.pt."""
    open_clip = _open_clip()
    model = _random_clip(open_clip, quick_gelu=True)
    source = tmp_path / "ViT-L-14.pt"
    torch.jit.save(torch.jit.script(model), str(source))
    assert is_torchscript_archive(source)
    record = _convert("openai_clip", source, tmp_path / "tower")
    assert record["config"]["hidden_act"] == "quick_gelu" and record["config"]["projection_dim"] == 48
    ours = univfd.build(False, tmp_path / "tower", config=record["config"]).eval()
    x = torch.randn(3, 3, 224, 224)
    with torch.no_grad():
        ref, got = model.encode_image(x), ours.forward_features(x)  # UnivFD: encode_image, not normalised
    assert (got - ref).abs().max() < 1e-5


def _openai_layout(width: int = 64, layers: int = 2, patch: int = 14, grid: int = 4, proj: int = 16) -> dict:
    """Random tensors under the OpenAI / open_clip ``visual.*`` names (no model code needed)."""
    sd = {"visual.conv1.weight": torch.randn(width, 3, patch, patch), "visual.class_embedding": torch.randn(width),
          "visual.positional_embedding": torch.randn(grid * grid + 1, width), "visual.proj": torch.randn(width, proj)}
    for ln in ("ln_pre", "ln_post"):
        sd |= {f"visual.{ln}.weight": torch.randn(width), f"visual.{ln}.bias": torch.randn(width)}
    for i in range(layers):
        b = f"visual.transformer.resblocks.{i}."
        sd |= {b + "attn.in_proj_weight": torch.randn(3 * width, width), b + "attn.in_proj_bias": torch.randn(3 * width),
               b + "attn.out_proj.weight": torch.randn(width, width), b + "attn.out_proj.bias": torch.randn(width),
               b + "mlp.c_fc.weight": torch.randn(4 * width, width), b + "mlp.c_fc.bias": torch.randn(4 * width),
               b + "mlp.c_proj.weight": torch.randn(width, 4 * width), b + "mlp.c_proj.bias": torch.randn(width)}
        for ln in ("ln_1", "ln_2"):
            sd |= {f"{b}{ln}.weight": torch.randn(width), f"{b}{ln}.bias": torch.randn(width)}
    return sd


def test_geometry_is_read_from_shapes_and_q_k_v_split_in_order(tmp_path: Path) -> None:
    sd = {k: v.half() for k, v in _openai_layout().items()}
    sd["logit_scale"] = torch.ones(())  # text / scalar keys are ignored
    torch.save({"state_dict": sd}, tmp_path / "ckpt.pt")
    record = _convert("openai_clip", tmp_path / "ckpt.pt", tmp_path / "tower")
    assert record["config"] == visual_geometry(sd, "quick_gelu") == {
        "hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 1,
        "image_size": 56, "patch_size": 14, "projection_dim": 16, "layer_norm_eps": 1e-5, "hidden_act": "quick_gelu"}
    assert record["dtype"] == "float16"
    tower = univfd.build(False, tmp_path / "tower", config=record["config"]).backbone
    assert all(p.dtype == torch.float32 for p in tower.parameters())  # an fp16 folder is read into fp32
    attn = tower.vision_model.encoder.layers[1].self_attn
    fused = sd["visual.transformer.resblocks.1.attn.in_proj_weight"].float()
    assert torch.equal(torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]), fused)
    assert torch.equal(tower.visual_projection.weight, sd["visual.proj"].float().t())


def test_weights_dir_target_is_checked_against_the_detector_first(tmp_path: Path) -> None:
    torch.save(_openai_layout(), tmp_path / "small.pt")
    with pytest.raises(TowerMismatch, match="hidden_size is 64, expected 1024"):
        cli_main(["import-weights", "--format", "openai_clip", "--source", str(tmp_path / "small.pt"),
                  "--weights-dir", str(tmp_path / "w")])
    assert not (tmp_path / "w").exists()  # nothing written
    bad = _openai_layout() | {"visual.attn_pool.weight": torch.randn(2)}
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(KeyError, match="visual.attn_pool.weight"):
        cli_main(["import-weights", "--format", "open_clip", "--source", str(tmp_path / "bad.pt"), "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit):
        cli_main(["import-weights", "--format", "timm", "--source", str(tmp_path / "bad.pt"), "--out", str(tmp_path / "o")])


class _Block(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ln_1 = torch.nn.LayerNorm(4)
        self.attn = torch.nn.MultiheadAttention(4, 2)
        self.sizes = [1, 2]  # a typed list attribute: pickled through torch.jit._pickle

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(self.ln_1(x), x, x, need_weights=False)[0] * self.sizes[0]


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Parameter(torch.randn(4, 3).half())
        self.blocks = torch.nn.Sequential(_Block(), _Block())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x) @ self.proj.float()


def test_torchscript_tensors_equal_jit_load_without_running_it(tmp_path: Path) -> None:
    path = tmp_path / "net.pt"
    torch.jit.save(torch.jit.script(_Net()), str(path))
    ours, ref = read_torchscript_tensors(path), torch.jit.load(str(path)).state_dict()
    assert ours.keys() == ref.keys() and all(torch.equal(ours[k], v) and ours[k].dtype == v.dtype for k, v in ref.items())


class _Boom:
    def __reduce__(self):
        return (Path.touch, (Path("/tmp/quantfake-torchscript-pwned"),))


def test_torchscript_archive_naming_other_code_is_refused_unrun(tmp_path: Path) -> None:
    marker = Path("/tmp/quantfake-torchscript-pwned")
    marker.unlink(missing_ok=True)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("m/data.pkl", pickle.dumps(_Boom(), protocol=2))
        z.writestr("m/code/__torch__.py", "")
    (tmp_path / "evil.pt").write_bytes(buf.getvalue())
    with pytest.raises(UnsafeCheckpoint, match="refusing to read it"):
        read_torchscript_tensors(tmp_path / "evil.pt")
    assert not marker.exists()
