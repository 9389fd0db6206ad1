"""Detector precision axis: every id swaps modules and shrinks storage; int8 stays close."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from quantfake.detector_quant import (
    DETECTOR_PRECISIONS,
    get_detector_precision,
    model_bytes,
    quantize_detector,
)
from quantfake.errors import PrecisionUnavailable, UnknownIdError
from quantfake.ptq import verify_ptq


class _Block(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(ch, ch, 3, padding=1, bias=False), nn.BatchNorm2d(ch)
        self.conv2, self.bn2 = nn.Conv2d(ch, ch, 3, padding=1, bias=False), nn.BatchNorm2d(ch)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(x + self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))))


class _TinyDetector(nn.Module):
    """ResNet-like: stem, one residual block, pooled Linear head -> one logit."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.block = _Block(16)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.block(self.stem(x))).flatten(1))


def _detector() -> nn.Module:
    torch.manual_seed(0)
    net = _TinyDetector()
    with torch.no_grad():  # non-trivial BN statistics, as a trained detector would have
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return net.eval()


def _batches(n: int, seed: int) -> list[torch.Tensor]:
    """Noise images with per-image contrast and brightness, so pooled features differ between images."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        contrast = torch.rand(16, 1, 1, 1, generator=g) * 1.5 + 0.5
        brightness = torch.rand(16, 1, 1, 1, generator=g) * 2 - 1
        out.append(torch.randn(16, 3, 16, 16, generator=g) * contrast + brightness)
    return out


CPU_IDS = [p for p, s in DETECTOR_PRECISIONS.items() if not s.requires_cuda and s.kind not in ("reference", "autocast")]
AUTOCAST_IDS = [p for p, s in DETECTOR_PRECISIONS.items() if s.kind == "autocast"]


@pytest.mark.parametrize("precision", CPU_IDS)
def test_modules_change_and_bytes_shrink(precision):
    net = _detector()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    qnet, report = quantize_detector(net, precision, calib_batches=_batches(2, 1))
    assert report["classes_after"] != report["classes_before"]
    assert report["bytes_after"] < report["bytes_before"] == model_bytes(net)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # input left alone
    x = _batches(1, 2)[0]
    out = qnet(x)
    assert out.shape == (16, 1) and out.dtype == torch.float32 and torch.isfinite(out).all()


@pytest.mark.parametrize("precision", AUTOCAST_IDS)
def test_autocast_keeps_fp32_weights_and_computes_in_half(precision):
    """fp16amp / bf16amp: the weights stay fp32 (same bytes) and the layers really run in the autocast dtype."""
    net = _detector()
    qnet, report = quantize_detector(net, precision)
    assert report["bytes_after"] == report["bytes_before"] and report["autocast_dtype"] in ("float16", "bfloat16")
    assert all(p.dtype == torch.float32 for p in qnet.parameters())
    seen = []
    hook = qnet.inner.fc.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    x = _batches(1, 2)[0]
    with torch.no_grad():
        out, ref = qnet(x), net(x)
    hook.remove()
    assert seen == [getattr(torch, report["autocast_dtype"])] and out.dtype == torch.float32
    assert 0 < float((out - ref).abs().max()) < 0.05 * float(ref.abs().max())


def test_fake_quant_bytes_follow_bits():
    net = _detector()
    sizes = {p: quantize_detector(net, p)[1]["bytes_after"] for p in ("w4", "w3", "w2")}
    assert sizes["w2"] < sizes["w3"] < sizes["w4"] < model_bytes(net)
    qnet, _ = quantize_detector(net, "w3")
    v = verify_ptq(qnet)
    assert v["layers_quantized"] == 4 and v["all_within_grid"] and v["bits"] == [3]


def test_int8_close_to_fp32_with_residual():
    net = _detector()
    qnet, report = quantize_detector(net, "int8", calib_batches=_batches(4, 1))
    assert report["int8_conv_mode"] == "fx_static"
    assert "BatchNorm2d" not in report["classes_after"]  # folded into the int8 convs
    assert any(type(m).__module__.startswith("torch.ao.nn.intrinsic.quantized") for m in qnet.modules())
    x = _batches(1, 3)[0]
    with torch.no_grad():
        ref, out = net(x).flatten(), qnet(x).flatten()
    corr = float(torch.corrcoef(torch.stack([ref, out]))[0, 1])
    assert corr > 0.98, corr
    assert float((out - ref).abs().mean()) < 0.2 * float(ref.std())
    assert report["bytes_after"] < 0.5 * report["bytes_before"]


def test_int8_modules_are_real_int8():
    net = _detector()
    qnet, _ = quantize_detector(net, "int8", calib_batches=_batches(2, 1))
    qweights = [v for k, v in qnet.state_dict().items() if isinstance(v, torch.Tensor) and v.is_quantized]
    assert len(qweights) >= 3 and all(w.dtype == torch.qint8 for w in qweights)
    assert type(qnet.fc).__module__.startswith("torch.ao.nn.quantized.dynamic")


def test_errors_name_valid_values():
    with pytest.raises(UnknownIdError, match="fp16"):
        get_detector_precision("int4")
    with pytest.raises(ValueError, match="calib_batches"):
        quantize_detector(_detector(), "int8")
    assert DETECTOR_PRECISIONS["nf4"].requires_cuda
    if not torch.cuda.is_available():
        with pytest.raises(PrecisionUnavailable, match="CUDA"):
            quantize_detector(_detector(), "nf4")


def test_int8_detectors_are_refused_off_the_cpu_with_the_reason() -> None:
    """torch.ao's int8 kernels are CPU-only: on CUDA the rehearsal's CLIP-D int8 cell died in the operator."""
    from quantfake.detector_quant import quantize_detector
    from quantfake.errors import PrecisionUnavailable

    with pytest.raises(PrecisionUnavailable, match="CPU only.*nf4"):
        quantize_detector(torch.nn.Linear(4, 2), "int8", calib_batches=[torch.randn(2, 4)], device="cuda")
