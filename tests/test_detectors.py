"""Golden tests for quantfake.detectors: preprocessing, architectures, checkpoints, cache."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from quantfake.detectors import (
    DETECTORS,
    LoadedDetector,
    MissingWeights,
    ScoreCache,
    UnsafeCheckpoint,
    get_detector,
    load_checkpoint,
    load_detector,
    save_state_dict,
    score_images,
)
from quantfake.detectors.loaded import build_module
from quantfake.detectors.npr import NPR, npr_residual
from quantfake.detectors.r50nodown import R50NoDown
from quantfake.detectors.r50tf import R50TF, PrototypeScores
from quantfake.image_io import image_sha256

IMNET_MEAN, IMNET_STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
CLIP_MEAN, CLIP_STD = np.array([0.48145466, 0.4578275, 0.40821073]), np.array([0.26862954, 0.26130258, 0.27577711])


def _img(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _norm(arr: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """HWC uint8 -> CHW float, computed independently of the library."""
    return ((arr.astype(np.float64) / 255.0 - mean) / std).transpose(2, 0, 1)


def test_registry_ids_and_unknown_id() -> None:
    assert sorted(DETECTORS) == ["clipd", "npr", "r50nodown", "r50tf", "univfd"]
    for det_id, spec in DETECTORS.items():
        assert spec.id == det_id and spec.fixed_threshold == 0.0 and spec.checkpoint_files
    with pytest.raises(ValueError) as err:
        get_detector("nope")
    assert "'nope'" in str(err.value) and all(i in str(err.value) for i in DETECTORS)


def test_npr_upstream_preprocessing_resizes_to_256_bilinear() -> None:
    arr = _img(300, 200, 0)
    out = get_detector("npr").preprocess([Image.fromarray(arr)])
    expected = _norm(np.asarray(Image.fromarray(arr).resize((256, 256), Image.BILINEAR)), IMNET_MEAN, IMNET_STD)
    assert out.shape == (1, 3, 256, 256)
    np.testing.assert_allclose(out[0].numpy(), expected, atol=1e-5)


def test_clipd_upstream_preprocessing_shorter_side_bicubic_then_centre_crop() -> None:
    arr = _img(300, 400, 1)  # H=300, W=400: shorter side -> 224, W -> int(224 * 400 / 300) = 298
    out = get_detector("clipd").preprocess(arr[None])
    resized = np.asarray(Image.fromarray(arr).resize((298, 224), Image.BICUBIC))
    expected = _norm(resized[:, 37 : 37 + 224], CLIP_MEAN, CLIP_STD)  # left = round((298 - 224) / 2) = 37
    assert out.shape == (1, 3, 224, 224)
    np.testing.assert_allclose(out[0].numpy(), expected, atol=1e-5)


def test_univfd_upstream_preprocessing_crops_without_resize_and_zero_pads_small_images() -> None:
    big, small = _img(300, 260, 2), _img(64, 64, 3)
    policy = get_detector("univfd").preprocess
    out_big = policy([Image.fromarray(big)])
    np.testing.assert_allclose(out_big[0].numpy(), _norm(big[38:262, 18:242], CLIP_MEAN, CLIP_STD), atol=1e-5)
    out_small = policy([Image.fromarray(small)])[0].numpy()  # 64 -> 224: 80 zero pixels each side
    padded = np.zeros((224, 224, 3), dtype=np.uint8)
    padded[80:144, 80:144] = small
    np.testing.assert_allclose(out_small, _norm(padded, CLIP_MEAN, CLIP_STD), atol=1e-5)


@pytest.mark.parametrize("det_id", ["r50nodown", "r50tf"])
def test_full_resolution_detectors_only_normalise(det_id: str) -> None:
    arrs = np.stack([_img(48, 40, 4), _img(48, 40, 5)])
    out = get_detector(det_id).preprocess(arrs)
    assert out.shape == (2, 3, 48, 40)
    for i in range(2):
        np.testing.assert_allclose(out[i].numpy(), _norm(arrs[i], IMNET_MEAN, IMNET_STD), atol=1e-5)


def test_tiny_policies_on_64px_world() -> None:
    arr = _img(64, 64, 6)
    np.testing.assert_allclose(get_detector("npr").tiny_preprocess(arr[None])[0].numpy(),
                               _norm(arr, IMNET_MEAN, IMNET_STD), atol=1e-5)
    clipd = get_detector("clipd").tiny_preprocess(arr[None])[0].numpy()
    np.testing.assert_allclose(clipd, _norm(np.asarray(Image.fromarray(arr).resize((32, 32), Image.BICUBIC)),
                                            CLIP_MEAN, CLIP_STD), atol=1e-5)
    univfd = get_detector("univfd").tiny_preprocess(arr[None])[0].numpy()
    np.testing.assert_allclose(univfd, _norm(arr[4:60, 4:60], CLIP_MEAN, CLIP_STD), atol=1e-5)


def test_policy_records_and_rejects_mixed_sizes() -> None:
    policy = get_detector("r50nodown").preprocess
    record = policy.as_dict()
    assert record["resize"] is None and record["crop"] is None and record["mean"] == pytest.approx(list(IMNET_MEAN))
    assert policy.sha256() != get_detector("clipd").preprocess.sha256()
    with pytest.raises(ValueError, match="different sizes"):
        policy([Image.fromarray(_img(32, 32, 0)), Image.fromarray(_img(40, 32, 0))])


def test_npr_residual_matches_numpy_slicing() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 10)
    xn = x.numpy()
    up = np.repeat(np.repeat(xn[..., ::2, ::2], 2, axis=-2), 2, axis=-1)
    np.testing.assert_array_equal(npr_residual(x).numpy(), xn - up)
    odd = torch.randn(1, 3, 9, 7)  # upstream crashes on odd sides; we drop the last row/column
    on = odd.numpy()[..., :8, :6]
    np.testing.assert_array_equal(npr_residual(odd).numpy(), on - np.repeat(np.repeat(on[..., ::2, ::2], 2, -2), 2, -1))


def test_npr_feeds_two_thirds_of_residual_to_conv1() -> None:
    torch.manual_seed(0)
    model = NPR(width=8, layers=(1, 1)).eval()
    seen: list[torch.Tensor] = []
    model.conv1.register_forward_hook(lambda m, inp, out: seen.append(inp[0]))
    x = torch.randn(1, 3, 16, 16)
    model(x)
    torch.testing.assert_close(seen[0], npr_residual(x) * 2.0 / 3.0)


def test_upstream_layouts_and_strides() -> None:
    npr_sd = NPR().state_dict()  # full width: truncated ResNet-50, 3x3 stem, fc1 512 -> 1
    assert npr_sd["conv1.weight"].shape == (64, 3, 3, 3) and npr_sd["fc1.weight"].shape == (1, 512)
    assert not any(k.startswith(("layer3", "layer4", "fc.")) for k in npr_sd)
    assert "layer2.0.downsample.0.weight" in npr_sd and "layer1.2.conv3.weight" in npr_sd
    nodown = R50NoDown(width=8, layers=(1, 1, 1, 1))
    assert nodown.conv1.stride == (1, 1) and nodown.maxpool.stride == 1 and nodown.fc.weight.shape == (1, 256)
    tf = R50TF(width=8, layers=(1, 1, 1, 1), embed_dim=16)
    assert tf.backbone.conv1.stride == (1, 1) and tf.backbone.maxpool.stride == 2
    keys = tf.state_dict()
    assert keys["backbone.fc.0.weight"].shape == (16, 256) and keys["proto.centers"].shape == (1, 16)
    assert "proto.logsigmas" in keys


def test_prototype_layer_matches_formula() -> None:
    torch.manual_seed(0)
    layer = PrototypeScores(4, num_centers=2)
    with torch.no_grad():
        layer.centers.copy_(torch.randn(2, 4))
        layer.logsigmas.copy_(torch.tensor([0.3, -0.5]))
    f = torch.randn(3, 4)
    fn, cn, ls = f.double().numpy(), layer.centers.detach().double().numpy(), np.maximum([0.3, -0.5], 0)
    expected = np.zeros(3)
    for k in range(2):
        d = fn - cn[k]
        expected += np.sign(d.sum(1)) * (d**2).sum(1) / (2 * np.exp(2 * ls[k])) + 4 * ls[k]
    np.testing.assert_allclose(layer(f)[:, 0].detach().numpy(), expected, rtol=1e-5)


def test_checkpoint_round_trip_is_bitwise(tmp_path: Path) -> None:
    torch.manual_seed(0)
    state = {"a": torch.randn(3, 4), "b": torch.randn(5).half(), "c": torch.arange(6)}
    sha = save_state_dict(state, tmp_path / "w.safetensors")
    loaded = load_checkpoint(tmp_path / "w.safetensors")
    assert loaded.sha256 == sha == hashlib.sha256((tmp_path / "w.safetensors").read_bytes()).hexdigest()
    for k, v in state.items():
        assert loaded.state_dict[k].dtype == v.dtype and torch.equal(loaded.state_dict[k], v)
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, tmp_path / "w.pth")
    wrapped = load_checkpoint(tmp_path / "w.pth").state_dict
    assert sorted(wrapped) == sorted(state) and all(torch.equal(wrapped[k], state[k]) for k in state)


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (self.marker,))


def test_malicious_pickle_is_refused_and_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    torch.save({"model": {"w": torch.zeros(1)}, "payload": _Evil(marker)}, tmp_path / "evil.pth")
    with pytest.raises(UnsafeCheckpoint, match="--trust-checkpoints"):
        load_checkpoint(tmp_path / "evil.pth")
    assert not marker.exists()


def test_missing_weights_names_every_searched_path(tmp_path: Path) -> None:
    with pytest.raises(MissingWeights) as err:
        load_detector("npr", "pretrained", weights_dir=tmp_path)
    assert isinstance(err.value, FileNotFoundError)
    for name in get_detector("npr").checkpoint_files:
        assert str(tmp_path / name) in str(err.value)
    with pytest.raises(MissingWeights, match=str(tmp_path / "r50tf.safetensors")):
        load_detector("r50tf", "tiny", tiny_dir=tmp_path)


def test_pretrained_npr_loads_upstream_state_dict(tmp_path: Path) -> None:
    torch.manual_seed(1)
    reference = NPR()
    torch.save(reference.state_dict(), tmp_path / "NPR.pth")
    det = load_detector("npr", "pretrained", weights_dir=tmp_path)
    assert det.checkpoint_sha256 == hashlib.sha256((tmp_path / "NPR.pth").read_bytes()).hexdigest()
    for k, v in reference.state_dict().items():
        assert torch.equal(det.module.state_dict()[k], v)
    record = det.describe()
    assert record["preprocess"]["resize"] == [256, 256] and record["checkpoint_path"].endswith("NPR.pth")


def test_univfd_head_loads_from_fc_weights() -> None:
    module = build_module(get_detector("univfd"), tiny=True)
    head = {"weight": torch.full((1, 16), 0.5), "bias": torch.tensor([-1.0])}
    from quantfake.detectors.univfd import load_upstream

    load_upstream(module, head)
    assert torch.equal(module.fc.weight, head["weight"]) and torch.equal(module.fc.bias, head["bias"])
    with pytest.raises(KeyError, match="weight and bias"):
        load_upstream(module, {"fc.w": torch.zeros(1)})


class _Counting(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.images_seen = inner, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.images_seen += x.shape[0]
        return self.inner(x)


def _tiny_loaded(det_id: str, module: nn.Module) -> LoadedDetector:
    spec = get_detector(det_id)
    return LoadedDetector(spec=spec, profile="tiny", module=module.eval(), preprocess=spec.tiny_preprocess,
                          checkpoint_path=None, checkpoint_sha256="test-sha")


def test_score_cache_second_call_computes_nothing(tmp_path: Path) -> None:
    torch.manual_seed(0)
    counting = _Counting(NPR(width=8, layers=(1, 1)))
    det = _tiny_loaded("npr", counting)
    images = np.random.default_rng(0).integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    cache = ScoreCache(tmp_path / "scores.sqlite")
    first = score_images(det, images, batch_size=2, cache=cache, progress=False)
    assert counting.images_seen == 5 and len(cache) == 5
    second = score_images(det, images, batch_size=2, cache=ScoreCache(tmp_path / "scores.sqlite"), progress=False)
    assert counting.images_seen == 5
    np.testing.assert_array_equal(first, second)
    hashes = [image_sha256(im) for im in images]
    third = score_images(det, [Image.fromarray(im) for im in images], cache=cache, image_sha256s=hashes, progress=False)
    assert counting.images_seen == 5
    np.testing.assert_array_equal(first, third)
    other = det.with_module(counting, precision="bf16-test")  # another precision: a different key
    score_images(other, images[:2], cache=cache, progress=False)
    assert counting.images_seen == 7
    direct = score_images(det, images, batch_size=5, progress=False)  # no cache: same numbers
    np.testing.assert_allclose(direct, first, rtol=1e-5, atol=1e-6)


def test_pretrained_univfd_reads_local_tower_and_fc_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from quantfake.detectors import univfd
    from quantfake.detectors.clip_backbone import TowerMismatch

    torch.manual_seed(0)
    small = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4,
             "image_size": 224, "patch_size": 32, "projection_dim": 16, "hidden_act": "quick_gelu"}
    CLIPVisionModelWithProjection(CLIPVisionConfig(**small)).save_pretrained(tmp_path / "clip-vit-large-patch14")
    fc = {"weight": torch.randn(1, 16), "bias": torch.randn(1)}
    torch.save(fc, tmp_path / "fc_weights.pth")
    with pytest.raises(TowerMismatch, match="patch_size is 32, expected 14"):  # not UnivFD's ViT-L/14
        load_detector("univfd", "pretrained", weights_dir=tmp_path)
    monkeypatch.setattr(univfd, "FULL_CONFIG", {**univfd.FULL_CONFIG, **small})
    det = load_detector("univfd", "pretrained", weights_dir=tmp_path)
    assert torch.equal(det.module.fc.weight, fc["weight"]) and det.backbone_dir == str(tmp_path / "clip-vit-large-patch14")
    scores = score_images(det, np.zeros((2, 64, 64, 3), dtype=np.uint8), progress=False)
    assert scores.shape == (2,) and np.isfinite(scores).all() and scores[0] == pytest.approx(scores[1])
    with pytest.raises(MissingWeights, match="clip-vit-large-patch14"):
        load_detector("univfd", "pretrained", weights_dir=tmp_path / "empty")
