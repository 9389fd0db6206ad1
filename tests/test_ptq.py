"""Known-answer and ordering tests for simulated low-bit weight PTQ."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from quantfake.ptq import (
    FakeQuantConv2d,
    FakeQuantLinear,
    MinMaxCalibrator,
    MSECalibrator,
    apply_ptq_mode,
    channel_mse,
    code_range,
    fake_quant,
    levels_per_channel,
    parse_ptq_mode,
    ptq_weights_bytes,
    quantize_weights_,
    verify_ptq,
)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.SiLU(), nn.Conv2d(16, 16, 3, padding=1),
                         nn.Flatten(), nn.Linear(16 * 8 * 8, 64), nn.SiLU(), nn.Linear(64, 8))


def _weight() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(32, 128)


def test_error_shrinks_with_bits():
    w = _weight()
    cal = MinMaxCalibrator()
    err = {b: float(channel_mse(w, fake_quant(w, cal.scale(w, b), b)).mean()) for b in (8, 4, 2)}
    assert err[8] < err[4] / 50
    assert err[4] < err[2] / 5


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_mse_calibrator_never_worse_than_minmax(bits, symmetric):
    w = _weight()
    mm = channel_mse(w, fake_quant(w, MinMaxCalibrator(symmetric).scale(w, bits), bits, symmetric))
    mse = channel_mse(w, fake_quant(w, MSECalibrator(symmetric).scale(w, bits), bits, symmetric))
    assert torch.all(mse <= mm + 1e-12)
    if bits <= 4:  # clipping pays off at low bit width on Gaussian weights
        assert mse.mean() < 0.9 * mm.mean()


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_levels_per_channel_bounded(bits, symmetric):
    w = _weight()
    dq = fake_quant(w, MSECalibrator(symmetric).scale(w, bits), bits, symmetric)
    levels = levels_per_channel(dq)
    assert int(levels.max()) <= 2**bits
    assert int(levels.min()) >= 2  # not collapsed to a constant


def test_minmax_symmetric_is_exact_on_grid_values():
    step = torch.tensor([0.5, 0.25])
    codes = torch.tensor([[-7.0, 3.0, 7.0, 0.0], [1.0, -2.0, 7.0, -7.0]])
    w = codes * step[:, None]
    assert torch.allclose(fake_quant(w, MinMaxCalibrator().scale(w, 4), 4), w)
    assert code_range(4, True) == (-8, 7) and code_range(4, False) == (0, 15)


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_quantize_weights_report_and_verify(bits):
    net = _net()
    x = torch.randn(2, 3, 8, 8)
    ref = net(x).detach()
    report = quantize_weights_(net, bits, MinMaxCalibrator())
    assert report.layers_quantized == 4
    assert abs(report.compression_ratio - bits / 32) < 1e-3
    assert isinstance(net[0], FakeQuantConv2d) and isinstance(net[4], FakeQuantLinear)
    assert net[0].quantfake_ptq["bits"] == bits and net.quantfake_ptq["layers"] == 4
    v = verify_ptq(net)
    assert v["layers_quantized"] == 4 and v["all_within_grid"] and v["bits"] == [bits]
    assert v["unquantized_layers"] == []
    assert all(layer.weight_rel_err > 0 for layer in report.layers)
    out = net(x)
    assert out.shape == ref.shape and torch.isfinite(out).all()
    assert ptq_weights_bytes(net) < sum(p.numel() * 4 for p in _net().parameters())


def test_output_error_ordering_and_skip():
    x = torch.randn(4, 3, 8, 8)
    ref = _net()(x).detach()
    errs = {}
    for mode in ("w8", "w4", "w2"):
        net = _net()
        apply_ptq_mode(net, mode)
        with torch.no_grad():
            errs[mode] = float((net(x) - ref).pow(2).mean())
    assert errs["w8"] < errs["w4"] < errs["w2"]
    net = _net()
    report = quantize_weights_(net, 4, skip=["0", "6"])
    assert report.layers_quantized == 2 and set(report.skipped) == {"0", "6"}
    assert type(net[0]) is nn.Conv2d and verify_ptq(net)["unquantized_layers"] == ["0", "6"]


def test_w4a8_quantizes_activations():
    torch.manual_seed(0)
    lin = nn.Sequential(nn.Linear(16, 4))
    w4 = nn.Sequential(nn.Linear(16, 4))
    w4.load_state_dict(lin.state_dict())
    quantize_weights_(lin, 4, act_bits=8)
    quantize_weights_(w4, 4)
    x = torch.randn(8, 16)
    assert lin[0].act_bits == 8
    assert not torch.allclose(lin(x), w4(x))  # the input went through an 8-bit grid
    assert torch.allclose(lin(x), w4(x), atol=0.05)


def test_bad_arguments_name_accepted_values():
    with pytest.raises(ValueError, match="accepted"):
        parse_ptq_mode("w5a5")
    with pytest.raises(ValueError, match="accepted"):
        quantize_weights_(_net(), 1)
    with pytest.raises(TypeError, match="accepted"):
        from quantfake.ptq import quantize_layer

        quantize_layer(nn.ReLU(), 4, MinMaxCalibrator())
