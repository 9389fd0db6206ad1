"""What a detector reads from --weights-dir: towers in float32 and checked, one choice per public checkpoint,
fp32 scored in fp32, and `quantfake models` listing all of it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from quantfake.cli import main as cli_main
from quantfake.detectors import DETECTORS, MissingWeights, ScoreCache, clipd, load_detector, score_images
from quantfake.detectors.checkpoints import file_sha256
from quantfake.detectors.clip_backbone import TowerMismatch
from quantfake.detectors.loaded import build_module
from quantfake.detectors.registry import get_detector, parse_weights_choices
from quantfake.errors import UnknownIdError

SMALL = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
         "image_size": 224, "patch_size": 32, "projection_dim": 16, "hidden_act": "gelu"}


def _clipd_dir(root: Path, dtype: torch.dtype = torch.float32, **overrides: object) -> Path:
    """A CLIP-D weights dir: head checkpoint + a small tower folder saved in ``dtype`` with config ``overrides``."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(0)
    CLIPVisionModel(CLIPVisionConfig(**{**SMALL, **overrides})).to(dtype).save_pretrained(
        root / str(get_detector("clipd").backbone_dir))
    head = {"module.fc.weight": torch.randn(1, SMALL["hidden_size"]), "module.fc.bias": torch.randn(1)}
    (root / "clipdet_latent10k_plus").mkdir(parents=True, exist_ok=True)
    torch.save({"model": head}, root / "clipdet_latent10k_plus/weights.pth")
    return root


@pytest.fixture
def small_clipd(monkeypatch: pytest.MonkeyPatch) -> None:
    """CLIP-D expecting the small tower (the upstream ViT-L/14 is 1.2 GB)."""
    monkeypatch.setattr(clipd, "FULL_CONFIG", {**clipd.FULL_CONFIG, **SMALL})


def _images(n: int = 3) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)


def test_fp16_tower_folder_loads_as_fp32_under_fp32(tmp_path: Path, small_clipd: None) -> None:
    root = _clipd_dir(tmp_path, torch.float16)
    folder = root / str(get_detector("clipd").backbone_dir)
    assert json.loads((folder / "config.json").read_text())["dtype"] == "float16"
    det = load_detector("clipd", "pretrained", weights_dir=root)
    assert det.precision == "fp32" and {p.dtype for p in det.module.parameters()} == {torch.float32}
    from safetensors.torch import load_file

    on_disk = load_file(folder / "model.safetensors")
    key = next(k for k in on_disk if k.endswith("encoder.layers.0.mlp.fc1.weight"))
    assert on_disk[key].dtype == torch.float16
    loaded = det.module.backbone.state_dict()
    assert torch.equal(loaded[next(k for k in loaded if k.endswith(key.removeprefix("vision_model.")))],
                       on_disk[key].float())
    scores = score_images(det, _images(), progress=False)  # an fp16 module here failed with a dtype mismatch
    assert np.isfinite(scores).all()


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("hidden_act", "quick_gelu", "'gelu'"),  # OpenAI's activation in an open_clip ViT-L-14 (CLIP-D) tower
    ("num_hidden_layers", 1, "2"),  # a truncated tower: the feature would come from another layer
    ("image_size", 336, "224"),
])
def test_tower_config_that_changes_features_is_refused_naming_the_field(
        tmp_path: Path, small_clipd: None, field: str, value: object, expected: str) -> None:
    root = _clipd_dir(tmp_path, **{field: value})
    with pytest.raises(TowerMismatch, match=rf"{field} is {value!r}, expected {expected}"):
        load_detector("clipd", "pretrained", weights_dir=root)


def test_real_upstream_tower_expectations() -> None:
    """CLIP-D reads open_clip's gelu ViT-L/14, UnivFD OpenAI's quick_gelu one; both at 224 px, patch 14, 24 layers."""
    for det_id, act in (("clipd", "gelu"), ("univfd", "quick_gelu")):
        cfg = DETECTORS[det_id].full_config
        assert (cfg["hidden_act"], cfg["image_size"], cfg["patch_size"], cfg["num_hidden_layers"]) == (act, 224, 14, 24)


def _r50_dir(root: Path) -> dict[str, Path]:
    """Two different random r50nodown checkpoints under their upstream names (same architecture)."""
    spec = get_detector("r50nodown")
    paths = {}
    for seed, choice in enumerate(("grag2021_latent", "corvi2023")):
        path = root / spec.weights_choice(choice).files[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        module = build_module(spec, tiny=False, seed=seed)
        torch.save({"model": {f"module.{k}": v for k, v in module.state_dict().items()}}, path)
        paths[choice] = path
    return paths


def test_each_r50nodown_checkpoint_is_its_own_choice_and_recorded(tmp_path: Path) -> None:
    paths = _r50_dir(tmp_path)
    records = {}
    for choice in (None, "grag2021_latent", "corvi2023"):
        rec = load_detector("r50nodown", "pretrained", weights_dir=tmp_path, weights=choice).describe()
        records[choice] = rec
        want = choice or "grag2021_latent"
        assert rec["weights_choice"] == want and rec["checkpoint_path"] == str(paths[want])
        assert rec["checkpoint_sha256"] == file_sha256(paths[want])
    assert records["corvi2023"]["checkpoint_sha256"] != records["grag2021_latent"]["checkpoint_sha256"]
    paths["grag2021_latent"].unlink()  # no silent fall-back to the other release
    with pytest.raises(MissingWeights, match="r50nodown=corvi2023"):
        load_detector("r50nodown", "pretrained", weights_dir=tmp_path)
    with pytest.raises(UnknownIdError, match="grag2021_latent, corvi2023"):
        load_detector("r50nodown", "pretrained", weights_dir=tmp_path, weights="corvi")


def test_detector_weights_option_is_validated() -> None:
    from quantfake.options import build_options

    assert build_options({"detector_weights": "r50nodown=corvi2023"}).detector_weights == {"r50nodown": "corvi2023"}
    assert parse_weights_choices("") == {}
    with pytest.raises(ValueError, match="DETECTOR=CHOICE, e.g. r50nodown=corvi2023"):
        parse_weights_choices("r50nodown")
    with pytest.raises(UnknownIdError, match="valid detector ids"):
        parse_weights_choices("r50=corvi2023")


def test_fp32_never_autocasts_and_amp_is_its_own_recorded_precision(tmp_path: Path) -> None:
    from quantfake.detector_quant import quantize_detector

    det = load_detector("npr", "random")
    seen: list[bool] = []
    det.module.fc1.register_forward_hook(lambda *_: seen.append(torch.is_autocast_enabled("cpu")))
    cache = ScoreCache(tmp_path / "scores.sqlite")
    fp32 = score_images(det, _images(), cache=cache, progress=False)
    amp, _ = quantize_detector(det.module, "bf16amp")
    bf16 = score_images(det.with_module(amp, "bf16amp"), _images(), cache=cache, progress=False)
    assert seen == [False, True] and not np.array_equal(fp32, bf16)
    import sqlite3

    with sqlite3.connect(cache.path) as con:
        assert {r[0] for r in con.execute("SELECT precision FROM scores")} == {"fp32", "bf16amp"}


def test_models_lists_every_file_tower_source_and_converter(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["models"]) == 0
    out = capsys.readouterr().out
    for spec in DETECTORS.values():
        for choice in spec.weights:
            assert choice.id in out and all(f in out for f in choice.files)
    for det_id, fmt in (("clipd", "open_clip"), ("univfd", "openai_clip")):
        tower = DETECTORS[det_id].tower
        assert tower is not None and tower.import_format == fmt
        assert f"{tower.dir}/" in out and f"--format {fmt}" in out
    assert "laion/CLIP-" in out and "CommonPool.XL-s13B-b90K" in out and "ViT-L-14.pt" in out
    assert "gelu" in out and "quick_gelu" in out and "fp16amp" in out


def test_autocast_check_script_on_cpu(tmp_path: Path) -> None:
    """The GPU script's CPU path: full-size random NPR, fp32 vs fp16 / bf16 autocast, JSON with the shifts."""
    out = tmp_path / "ac.json"
    script = Path(__file__).resolve().parent.parent / "scripts" / "detector_autocast_check.py"
    proc = subprocess.run([sys.executable, str(script), "--device", "cpu", "--profiles", "random", "--detectors", "npr",
                           "--n-images", "3", "--size", "64", "--out", str(out)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())["results"]["random"]["npr"]
    assert set(res["precisions"]) == {"fp16amp", "bf16amp"}
    for shift in res["precisions"].values():
        assert shift["n_images"] == 3 and 0 < shift["max_abs_score_diff"] < 0.05 and shift["nonfinite_scores"] == 0
        assert 0 <= shift["decision_flips"] <= 3
