"""Input representation switch (rgb | npr) for the convolutional detectors: the wrapper computes NPR's
input, RGB stays untouched (modules, ids, cache keys), and bad combinations fail with the accepted ids."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from safetensors import safe_open
from torch import nn

import quantfake.detectors.train as train_mod
from quantfake.cells import CellSpec, detection_cells, detector_precision_cells
from quantfake.detectors import (
    MissingWeights,
    ScoreCache,
    TrainConfig,
    get_detector,
    load_detector,
    score_images,
    train_detector,
)
from quantfake.detectors.loaded import build_module, implementation
from quantfake.detectors.npr import npr_residual
from quantfake.detectors.registry import REPRESENTATIONS, get_representation
from quantfake.detectors.representation import ResidualInput
from quantfake.detectors.split import FeaturesThenHead
from quantfake.errors import UnknownIdError
from quantfake.options import build_options

CONV = ("r50nodown", "r50tf")
FAST = TrainConfig(epochs=1, batch_size=8, lr=3e-3, holdout_fraction=0.25)


class _Probe(FeaturesThenHead, nn.Module):
    """Records what it is fed; a stand-in detector with the head API train.py uses."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(1, 1)
        self.seen: list[torch.Tensor] = []

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x)
        return x.mean(dim=(1, 2, 3))[:, None]

    def forward_head(self, feats: torch.Tensor) -> torch.Tensor:
        return self.fc(feats)

    def head_modules(self) -> list[nn.Module]:
        return [self.fc]


def _images(n: int, seed: int, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    flat = np.broadcast_to(rng.integers(0, 256, (n, 1, 1, 3), dtype=np.uint8), (n, size, size, 3)).copy()
    return flat, rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (1, 3, 9, 7)])
def test_wrapper_feeds_the_scaled_npr_residual(shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    x = torch.randn(shape)
    probe = _Probe()
    wrapped = ResidualInput(probe)
    out = wrapped(x)
    torch.testing.assert_close(probe.seen[-1], npr_residual(x) * 2.0 / 3.0, rtol=0, atol=0)
    assert not torch.equal(probe.seen[-1], x[..., : shape[2] // 2 * 2, : shape[3] // 2 * 2])
    torch.testing.assert_close(out, wrapped.forward_head(wrapped.forward_features(x)))
    assert wrapped.head_modules() == [probe.fc]


@pytest.mark.parametrize("det_id", CONV)
def test_default_build_is_the_bare_network(det_id: str) -> None:
    spec = get_detector(det_id)
    default = build_module(spec, tiny=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        bare = implementation(spec).build(True, None)
    assert type(default) is type(bare) and not isinstance(default, ResidualInput)
    assert list(default.state_dict()) == list(bare.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(default.state_dict().values(), bare.state_dict().values(), strict=True))
    npr_in = build_module(spec, tiny=True, representation="npr")
    assert isinstance(npr_in, ResidualInput)
    assert list(npr_in.state_dict()) == [f"inner.{k}" for k in bare.state_dict()]
    assert torch.equal(npr_in.inner.state_dict()[next(iter(bare.state_dict()))], next(iter(bare.state_dict().values())))


def test_cell_ids_with_and_without_the_option() -> None:
    raw = {"generators": "sd3", "precisions": "fp32", "modes": "txt2img", "detectors": "npr,clipd,r50nodown,r50tf",
           "detector_precisions": "w4,w2"}
    plain = build_options(raw)
    assert plain.representations == ("rgb",)
    assert all("+" not in c.id for c in detection_cells(plain) + detector_precision_cells(plain))
    assert {c.representation for c in detection_cells(plain)} == {"rgb"}

    both = build_options({**raw, "representations": "rgb,npr"})
    ids = [c.id for c in detection_cells(both)]
    assert ids == ["sd3-fp32-txt2img-npr", "sd3-fp32-txt2img-clipd", "sd3-fp32-txt2img-r50nodown",
                   "sd3-fp32-txt2img-r50nodown+npr", "sd3-fp32-txt2img-r50tf", "sd3-fp32-txt2img-r50tf+npr"]
    dp_ids = [c.id for c in detector_precision_cells(both)]
    assert "sd3-fp32-txt2img-r50nodown+npr@w2" in dp_ids and "sd3-fp32-txt2img-r50nodown@w2" in dp_ids
    assert len(dp_ids) == 6 * 2 and not any(i.startswith("sd3-fp32-txt2img-npr+") for i in dp_ids)
    cell = CellSpec("detector_precision", "sd3", "fp32", "txt2img", "r50nodown", "none", "w2", representation="npr")
    assert cell.id == "sd3-fp32-txt2img-r50nodown+npr@w2" and cell.params()["representation"] == "npr"


def test_unknown_and_unsupported_representations(tmp_path: Path) -> None:
    assert tuple(REPRESENTATIONS) == ("rgb", "npr")
    with pytest.raises(UnknownIdError, match=r"'hsv'.*rgb, npr"):
        get_representation("hsv")
    with pytest.raises(UnknownIdError, match="'hsv'"):
        build_options({"representations": "rgb,hsv"})
    for det_id in ("npr", "clipd", "univfd"):
        with pytest.raises(ValueError, match=rf"{det_id!r} does not accept representation 'npr'.*r50nodown, r50tf"):
            build_module(get_detector(det_id), tiny=True, representation="npr")
    with pytest.raises(ValueError, match="does not accept"):
        load_detector("clipd", "tiny", tiny_dir=tmp_path, representation="npr")
    with pytest.raises(MissingWeights, match=r"r50nodown\+npr\.safetensors"):
        load_detector("r50nodown", "pretrained", weights_dir=tmp_path, representation="npr")
    with pytest.raises(MissingWeights, match=r"r50tf\+npr\.safetensors"):
        load_detector("r50tf", "tiny", tiny_dir=tmp_path, representation="npr")


def _recording_json(calls: list[Any]) -> SimpleNamespace:
    def dumps(obj: Any, **kw: Any) -> str:
        calls.append(obj)
        return json.dumps(obj, **kw)

    return SimpleNamespace(dumps=dumps, dump=json.dump, loads=json.loads)


def test_npr_training_is_deterministic_and_keyed_apart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real, fake = _images(6, seed=3)
    calls: list[Any] = []
    monkeypatch.setattr(train_mod, "json", _recording_json(calls))
    rgb = train_detector("r50nodown", real, fake, FAST, tmp_path / "shared")
    rgb_key_src = calls[0]
    n_calls = len(calls)
    a = train_detector("r50nodown", real, fake, FAST, tmp_path / "shared", representation="npr")
    npr_key_src = calls[n_calls]  # the first dumps of a call is its cache key
    b = train_detector("r50nodown", real, fake, FAST, tmp_path / "other", representation="npr")

    assert "representation" not in rgb_key_src and "representation" not in rgb.config
    assert npr_key_src["representation"] == "npr"
    assert {k: v for k, v in npr_key_src.items() if k != "representation"} == rgb_key_src
    assert a.cache_key != rgb.cache_key and a.cache_key == b.cache_key
    assert a.weights_sha256 == b.weights_sha256 and a.loss_history == b.loss_history and not a.cached
    assert a.weights_sha256 != rgb.weights_sha256 and a.representation == "npr" and rgb.representation == "rgb"
    assert Path(a.weights_path).name == "r50nodown+npr.safetensors" and Path(rgb.weights_path).name == "r50nodown.safetensors"
    with safe_open(rgb.weights_path, "pt") as f:
        assert "representation" not in json.dumps(f.metadata())

    again = train_detector("r50nodown", real, fake, FAST, tmp_path / "shared", representation="npr")
    assert again.cached and again.weights_sha256 == a.weights_sha256
    assert train_detector("r50nodown", real, fake, FAST, tmp_path / "shared").cached  # rgb untouched by npr

    det = load_detector("r50nodown", "tiny", tiny_dir=tmp_path / "shared", representation="npr")
    assert det.checkpoint_sha256 == a.weights_sha256 and det.token == "r50nodown+npr"
    assert det.describe()["representation"] == "npr"
    rgb_det = load_detector("r50nodown", "tiny", tiny_dir=tmp_path / "shared")
    assert rgb_det.token == "r50nodown" and rgb_det.describe()["representation"] == "rgb"
    with pytest.raises(RuntimeError, match="inner"):  # an NPR checkpoint never loads into the RGB network
        load_detector("r50nodown", "tiny", checkpoint=a.weights_path)

    cache = ScoreCache(tmp_path / "scores.db")
    s_npr = score_images(det, fake[:2], cache=cache, progress=False)
    s_rgb = score_images(rgb_det, fake[:2], cache=cache, progress=False)
    assert len(cache) == 4 and not np.allclose(s_npr, s_rgb)
    with closing(sqlite3.connect(cache.path)) as con:
        ids = sorted(r[0] for r in con.execute("SELECT DISTINCT detector_id FROM scores"))
    assert ids == ["r50nodown", "r50nodown+npr"]
