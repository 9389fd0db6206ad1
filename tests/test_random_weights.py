"""Random full-size detectors written in the upstream --weights-dir layout and loaded as ``pretrained``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from quantfake.cli import main as cli_main
from quantfake.detectors import DETECTORS, get_detector, load_detector, score_images
from quantfake.detectors.random_weights import (
    MANIFEST_NAME,
    build_random,
    random_weight_files,
    tower_config,
    write_random_weights_dir,
)
from quantfake.detectors.registry import VIT_L14

# shrinks only the CLIP towers (a full ViT-L/14 takes ~10 s to build and 1.2 GB per tower); 224 px input kept
SMALL_TOWER = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4,
               "patch_size": 32, "projection_dim": 16}


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("random-weights")
    result = write_random_weights_dir(root, seed=0, tower_overrides=SMALL_TOWER)
    assert sorted(result["detectors"]) == sorted(DETECTORS) and not result["kept"]
    return root


def _images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in range(2)]


def test_default_towers_are_full_size_vit_l14_with_each_detectors_activation() -> None:
    for det_id, act in (("clipd", "gelu"), ("univfd", "quick_gelu")):
        cfg = tower_config(get_detector(det_id))
        assert cfg is not None and {k: cfg[k] for k in VIT_L14} == VIT_L14 and cfg["hidden_act"] == act
        assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"]) == (1024, 24, 16)
        assert (cfg["intermediate_size"], cfg["patch_size"], cfg["image_size"]) == (4096, 14, 224)
    assert tower_config(get_detector("npr")) is None


def test_files_use_upstream_names_containers_and_tower_folders(weights_dir: Path) -> None:
    manifest = json.loads((weights_dir / MANIFEST_NAME).read_text())
    assert manifest["random_weights"] is True and "mean nothing" in manifest["note"]
    for det_id, spec in DETECTORS.items():
        entry = manifest["detectors"][det_id]
        assert entry["seed"] == 0 and entry["checkpoint"] == spec.checkpoint_files[0]
        assert (weights_dir / spec.checkpoint_files[0]).is_file()
    load = lambda rel: torch.load(weights_dir / rel, map_location="cpu", weights_only=True)  # noqa: E731
    assert set(load("NPR.pth")) >= {"conv1.weight", "fc1.weight"}
    assert set(load("clipdet_latent10k_plus/weights.pth")["model"]) == {"module.fc.weight", "module.fc.bias"}
    assert "module.fc.weight" in load("Grag2021_latent/model_epoch_best.pth")["model"]
    assert {"backbone.fc.0.weight", "proto.centers"} <= set(load("R50_TF/checkpoint/pretrained/weights/best.pt"))
    assert set(load("fc_weights.pth")) == {"weight", "bias"}
    for det_id, act in (("clipd", "gelu"), ("univfd", "quick_gelu")):
        tower = weights_dir / str(DETECTORS[det_id].backbone_dir)
        assert (tower / "model.safetensors").is_file()
        assert json.loads((tower / "config.json").read_text())["hidden_act"] == act


@pytest.mark.parametrize("det_id", sorted(DETECTORS))
def test_pretrained_loader_reads_them_flags_them_and_scores(weights_dir: Path, det_id: str) -> None:
    det = load_detector(det_id, "pretrained", weights_dir=weights_dir)
    record = det.describe()
    assert record["random_weights"] is True and det.random_weights
    written = build_random(get_detector(det_id), seed=0, tower_overrides=SMALL_TOWER).state_dict()
    loaded = det.module.state_dict()
    assert written.keys() == loaded.keys() and all(torch.equal(written[k], loaded[k]) for k in written)
    scores = score_images(det, _images(), progress=False)
    assert scores.shape == (2,) and np.isfinite(scores).all()


def test_second_call_writes_nothing(weights_dir: Path) -> None:
    mtimes = {p: p.stat().st_mtime_ns for p in weights_dir.rglob("*") if p.is_file()}
    result = write_random_weights_dir(weights_dir, seed=0, tower_overrides=SMALL_TOWER)
    assert result["written"] == [] and len(result["kept"]) == len(mtimes) - 1  # all but the manifest
    assert {p: p.stat().st_mtime_ns for p in weights_dir.rglob("*") if p.is_file()} == mtimes


def test_new_seed_rewrites_and_real_weights_are_neither_overwritten_nor_flagged(tmp_path: Path) -> None:
    first = write_random_weights_dir(tmp_path / "w", ["npr"], seed=0)
    second = write_random_weights_dir(tmp_path / "w", ["npr"], seed=1)
    assert second["written"] == ["NPR.pth"]
    assert second["detectors"]["npr"]["files"]["NPR.pth"]["sha256"] != first["detectors"]["npr"]["files"]["NPR.pth"]["sha256"]
    real = tmp_path / "real"
    real.mkdir()
    torch.save(build_random(get_detector("npr"), seed=5).state_dict(), real / "NPR.pth")
    assert load_detector("npr", "pretrained", weights_dir=real).describe()["random_weights"] is False
    (real / MANIFEST_NAME).write_text((tmp_path / "w" / MANIFEST_NAME).read_text())  # lists NPR.pth, other sha
    assert random_weight_files(real, [real / "NPR.pth"]) == []
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        write_random_weights_dir(real, ["r50tf", "npr"], seed=3)
    assert (real / "R50_TF/checkpoint/pretrained/weights/best.pt").is_file()  # r50tf came first: written


def test_cli_subcommand(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["make-random-weights", "--root", str(tmp_path), "--detectors", "npr"]) == 0
    assert "mean nothing" in capsys.readouterr().out
    assert list(json.loads((tmp_path / MANIFEST_NAME).read_text())["detectors"]) == ["npr"]
    with pytest.raises(SystemExit):
        cli_main(["make-random-weights", "--root", str(tmp_path), "--detectors", "nope"])
