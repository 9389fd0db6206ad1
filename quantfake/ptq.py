"""Low-bit post-training weight quantization (simulated) of a denoiser's Linear and Conv2d layers.

Why simulated: CPU and most GPUs have no 2/3/4-bit matmul kernels for arbitrary layers, but the *accuracy*
effect of a uniform per-output-channel quantizer only depends on the values the weights can take. Each touched
layer therefore keeps fp weights that hold exactly the dequantized values ``(code - zero_point) * step``; the
memory a real packed kernel would need is reported separately (``packed_weights_bytes``), never measured.

Pieces:
* :class:`Calibrator` picks per-output-channel step sizes (:class:`MinMaxCalibrator`, :class:`MSECalibrator`).
  Where AdaRound / BRECQ would plug in: those need calibration *activations* (they optimise rounding against
  each layer's or block's output), so they cannot satisfy ``scale(weight, bits)``. They would be a second
  protocol, ``LayerCalibrator.quantize(layer, inputs) -> (step, codes)``, fed by forward hooks that record a
  few denoiser inputs per layer, and :func:`quantize_weights_` would accept ``calib_inputs`` to drive it.
* :func:`quantize_weights_` swaps layers for :class:`FakeQuantLinear` / :class:`FakeQuantConv2d` (so module
  classes visibly change), tags each with ``quantfake_ptq`` and returns a :class:`PTQReport`.
* :func:`verify_ptq` re-derives from the weights themselves what was quantized.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ALLOWED_BITS = (2, 3, 4, 5, 6, 7, 8)
ALLOWED_ACT_BITS = (None, 8)
PTQ_MODES = {"w8": (8, None), "w4": (4, None), "w3": (3, None), "w2": (2, None), "w4a8": (4, 8)}


def _check_bits(bits: int) -> int:
    if bits not in ALLOWED_BITS:
        raise ValueError(f"bits={bits!r} not supported; accepted: {list(ALLOWED_BITS)}")
    return bits


def parse_ptq_mode(mode: str) -> tuple[int, int | None]:
    """``"w4a8"`` -> ``(4, 8)``: (weight bits, activation bits or None)."""
    if mode not in PTQ_MODES:
        raise ValueError(f"unknown PTQ mode {mode!r}; accepted: {sorted(PTQ_MODES)}")
    return PTQ_MODES[mode]


def code_range(bits: int, symmetric: bool) -> tuple[int, int]:
    """Integer code range: signed two's complement when symmetric, unsigned otherwise."""
    _check_bits(bits)
    if symmetric:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def _per_channel(weight: Tensor) -> Tensor:
    """View as ``[out_channels, everything else]`` in fp32 (quantization is per output channel)."""
    return weight.detach().reshape(weight.shape[0], -1).float()


def zero_points(weight: Tensor, step: Tensor, bits: int, symmetric: bool) -> Tensor:
    """Per-channel zero point (in code units) that centres the channel's [min, max] on the code range.

    Derived from ``step`` alone so a calibrator only has to return step sizes: shrinking ``step`` then
    clips both ends of the channel symmetrically around its centre.
    """
    if symmetric:
        return torch.zeros_like(step)
    w = _per_channel(weight)
    centre = (w.amin(dim=1) + w.amax(dim=1)) / 2
    return torch.round((2**bits - 1) / 2 - centre / step)


def fake_quant(weight: Tensor, step: Tensor, bits: int, symmetric: bool = True) -> Tensor:
    """Quantize-dequantize ``weight`` per output channel; returns fp32 values on the integer grid."""
    lo, hi = code_range(bits, symmetric)
    w = _per_channel(weight)
    s = step.reshape(-1, 1).float()
    zp = zero_points(weight, step, bits, symmetric).reshape(-1, 1)
    codes = torch.clamp(torch.round(w / s) + zp, lo, hi)
    return ((codes - zp) * s).reshape(weight.shape)


def channel_mse(weight: Tensor, dequant: Tensor) -> Tensor:
    """Per-output-channel mean squared reconstruction error."""
    return (_per_channel(weight) - _per_channel(dequant)).pow(2).mean(dim=1)


# --------------------------------------------------------------------------------------------------
# calibrators


@runtime_checkable
class Calibrator(Protocol):
    """Chooses per-output-channel step sizes for a weight tensor (weights only, no activations)."""

    name: str
    symmetric: bool

    def scale(self, weight: Tensor, bits: int) -> Tensor:
        """Step size per output channel, shape ``[weight.shape[0]]``, all > 0."""
        ...


_EPS = 1e-12


def _minmax_step(weight: Tensor, bits: int, symmetric: bool) -> Tensor:
    w = _per_channel(weight)
    lo, hi = code_range(bits, symmetric)
    if symmetric:
        step = w.abs().amax(dim=1) / max(hi, 1)
    else:
        step = (w.amax(dim=1) - w.amin(dim=1)) / (hi - lo)
    return step.clamp_min(_EPS)


@dataclass(frozen=True)
class MinMaxCalibrator:
    """Step covers the channel's full range: no clipping error, maximal rounding error."""

    symmetric: bool = True
    name: str = "minmax"

    def scale(self, weight: Tensor, bits: int) -> Tensor:
        return _minmax_step(weight, bits, self.symmetric)


@dataclass(frozen=True)
class MSECalibrator:
    """Grid search over clipping ratios of the min-max step, per channel, minimising reconstruction MSE.

    The grid includes ratio 1.0 (min-max itself), so its per-channel error is never above min-max's.
    """

    symmetric: bool = True
    n_grid: int = 40
    min_ratio: float = 0.2
    name: str = "mse"

    def scale(self, weight: Tensor, bits: int) -> Tensor:
        base = _minmax_step(weight, bits, self.symmetric)
        best_step, best_err = base.clone(), channel_mse(weight, fake_quant(weight, base, bits, self.symmetric))
        for ratio in torch.linspace(self.min_ratio, 1.0, self.n_grid)[:-1].tolist():
            step = (base * ratio).clamp_min(_EPS)
            err = channel_mse(weight, fake_quant(weight, step, bits, self.symmetric))
            better = err < best_err
            best_step = torch.where(better, step, best_step)
            best_err = torch.where(better, err, best_err)
        return best_step


# --------------------------------------------------------------------------------------------------
# fake-quant layers


def fake_quant_activation(x: Tensor, bits: int) -> Tensor:
    """Per-tensor dynamic symmetric fake quant of an activation (scale from this tensor's max |x|)."""
    qmax = 2 ** (bits - 1) - 1
    scale = x.detach().abs().amax().clamp_min(_EPS) / qmax
    return torch.clamp(torch.round(x / scale), -qmax - 1, qmax) * scale


class _FakeQuantMixin:
    """State shared by fake-quant layers: bits, step / zero-point buffers and optional activation bits."""

    weight: nn.Parameter
    ptq_bits: int
    act_bits: int | None

    def _init_quant(self, bits: int, act_bits: int | None, step: Tensor, zero_point: Tensor, tag: dict) -> None:
        self.ptq_bits, self.act_bits = bits, act_bits
        self.register_buffer("weight_step", step.to(self.weight.device, torch.float32))  # type: ignore[attr-defined]
        self.register_buffer("weight_zero_point", zero_point.to(self.weight.device, torch.float32))  # type: ignore[attr-defined]
        self.quantfake_ptq = tag

    def _maybe_quant_input(self, x: Tensor) -> Tensor:
        return fake_quant_activation(x, self.act_bits) if self.act_bits else x

    def extra_repr(self) -> str:  # noqa: D401 - nn.Module hook
        base = super().extra_repr()  # type: ignore[misc]
        return f"{base}, w_bits={self.ptq_bits}, a_bits={self.act_bits}"


class FakeQuantLinear(_FakeQuantMixin, nn.Linear):
    """nn.Linear whose weight holds dequantized low-bit values; inputs optionally fake-quantized."""

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(self._maybe_quant_input(x), self.weight, self.bias)


class FakeQuantConv2d(_FakeQuantMixin, nn.Conv2d):
    """nn.Conv2d whose weight holds dequantized low-bit values; inputs optionally fake-quantized."""

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(self._maybe_quant_input(x), self.weight, self.bias)


FAKE_QUANT_TYPES = (FakeQuantLinear, FakeQuantConv2d)
_QUANTIZABLE = {nn.Linear: FakeQuantLinear, nn.Conv2d: FakeQuantConv2d}


def _empty_like_layer(layer: nn.Module) -> nn.Module:
    """A fake-quant twin built on the meta device (no allocation); parameters are moved over afterwards."""
    if type(layer) is nn.Linear:
        return FakeQuantLinear(layer.in_features, layer.out_features, bias=layer.bias is not None, device="meta")
    assert type(layer) is nn.Conv2d
    return FakeQuantConv2d(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                           padding=layer.padding, dilation=layer.dilation, groups=layer.groups,
                           bias=layer.bias is not None, padding_mode=layer.padding_mode, device="meta")


# --------------------------------------------------------------------------------------------------
# apply + report


@dataclass
class LayerPTQ:
    """Reconstruction error of one quantized layer."""

    name: str
    kind: str
    shape: tuple[int, ...]
    weight_mse: float
    weight_rel_err: float  # ||w - w_q|| / ||w||
    packed_weights_bytes: int
    original_weights_bytes: int


@dataclass
class PTQReport:
    """What :func:`quantize_weights_` did. Byte counts are theoretical (packed codes), not measured."""

    bits: int
    act_bits: int | None
    calibrator: str
    symmetric: bool
    layers_quantized: int = 0
    packed_weights_bytes: int = 0  # integer codes at ``bits`` per weight
    quant_params_bytes: int = 0  # fp32 step (+ zero point when asymmetric) per output channel
    original_weights_bytes: int = 0  # the replaced weights at their original dtype
    layers: list[LayerPTQ] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def compression_ratio(self) -> float:
        """packed / original, codes only (≈ bits / 32 for fp32 weights)."""
        return self.packed_weights_bytes / max(self.original_weights_bytes, 1)

    @property
    def mean_weight_rel_err(self) -> float:
        return sum(layer.weight_rel_err for layer in self.layers) / max(len(self.layers), 1)

    def as_dict(self) -> dict[str, Any]:
        return {"bits": self.bits, "act_bits": self.act_bits, "calibrator": self.calibrator,
                "symmetric": self.symmetric, "layers_quantized": self.layers_quantized,
                "packed_weights_bytes": self.packed_weights_bytes, "quant_params_bytes": self.quant_params_bytes,
                "original_weights_bytes": self.original_weights_bytes, "compression_ratio": self.compression_ratio,
                "mean_weight_rel_err": self.mean_weight_rel_err, "skipped": list(self.skipped)}


def packed_bytes(numel: int, bits: int) -> int:
    """Bytes of ``numel`` integer codes packed densely at ``bits`` each."""
    return math.ceil(numel * bits / 8)


def _skipped(name: str, skip: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pat) or name == pat or name.startswith(pat + ".") for pat in skip)


def quantize_layer(layer: nn.Module, bits: int, calibrator: Calibrator, act_bits: int | None = None,
                   step: Tensor | None = None) -> tuple[nn.Module, LayerPTQ]:
    """Fake-quant twin of one nn.Linear / nn.Conv2d (exact types); ``step`` overrides the calibrator."""
    if type(layer) not in _QUANTIZABLE:
        raise TypeError(f"cannot quantize {type(layer).__name__}; accepted: nn.Linear, nn.Conv2d")
    _check_bits(bits)
    if act_bits not in ALLOWED_ACT_BITS:
        raise ValueError(f"act_bits={act_bits!r} not supported; accepted: {list(ALLOWED_ACT_BITS)}")
    weight = layer.weight.data
    with torch.no_grad():
        step = (calibrator.scale(weight, bits) if step is None else step).float()
        zp = zero_points(weight, step, bits, calibrator.symmetric)
        dq = fake_quant(weight, step, bits, calibrator.symmetric)
        err = (weight.float() - dq).pow(2)
        rel = float(err.sum().sqrt() / weight.float().norm().clamp_min(_EPS))
    new = _empty_like_layer(layer)
    new.weight = nn.Parameter(dq.to(weight.dtype), requires_grad=layer.weight.requires_grad)
    new.bias = layer.bias
    new.train(layer.training)
    tag = {"bits": bits, "act_bits": act_bits, "calibrator": calibrator.name, "symmetric": calibrator.symmetric}
    new._init_quant(bits, act_bits, step, zp, tag)
    info = LayerPTQ(name="", kind=type(layer).__name__, shape=tuple(weight.shape), weight_mse=float(err.mean()),
                    weight_rel_err=rel, packed_weights_bytes=packed_bytes(weight.numel(), bits),
                    original_weights_bytes=weight.numel() * weight.element_size())
    return new, info


def quantize_weights_(module: nn.Module, bits: int, calibrator: Calibrator | None = None,
                      skip: Iterable[str] = (), act_bits: int | None = None) -> PTQReport:
    """Replace every nn.Linear / nn.Conv2d under ``module`` (in place) by its fake-quantized twin.

    ``skip``: qualified layer names or fnmatch patterns (``"conv_in"``, ``"*.time_emb*"``) left in full
    precision. Subclasses of Linear/Conv2d (e.g. MultiheadAttention's out_proj) are skipped and listed,
    because their owners may bypass ``forward``. ``module`` itself is tagged ``quantfake_ptq`` as well.
    """
    calibrator = calibrator or MinMaxCalibrator()
    if not isinstance(calibrator, Calibrator):
        raise TypeError(f"calibrator {calibrator!r} lacks scale(weight, bits) / name / symmetric")
    report = PTQReport(bits=_check_bits(bits), act_bits=act_bits, calibrator=calibrator.name,
                       symmetric=calibrator.symmetric)
    skip = tuple(skip)
    for parent_name, parent in list(module.named_modules()):
        for child_name, child in list(parent.named_children()):
            name = f"{parent_name}.{child_name}" if parent_name else child_name
            if not isinstance(child, (nn.Linear, nn.Conv2d)) or isinstance(child, FAKE_QUANT_TYPES):
                continue
            if type(child) not in _QUANTIZABLE or _skipped(name, skip):
                report.skipped.append(name)
                continue
            new, info = quantize_layer(child, bits, calibrator, act_bits)
            info.name = name
            setattr(parent, child_name, new)
            report.layers.append(info)
            report.layers_quantized += 1
            report.packed_weights_bytes += info.packed_weights_bytes
            report.original_weights_bytes += info.original_weights_bytes
            report.quant_params_bytes += info.shape[0] * (4 if calibrator.symmetric else 8)
    if report.layers_quantized:
        module.quantfake_ptq = {"bits": bits, "act_bits": act_bits, "calibrator": calibrator.name,
                                "symmetric": calibrator.symmetric, "layers": report.layers_quantized}
    return report


def apply_ptq_mode(module: nn.Module, mode: str, calibrator: Calibrator | None = None,
                   skip: Iterable[str] = ()) -> PTQReport:
    """:func:`quantize_weights_` from a mode id such as ``"w4a8"``."""
    bits, act_bits = parse_ptq_mode(mode)
    return quantize_weights_(module, bits, calibrator or MSECalibrator(), skip=skip, act_bits=act_bits)


def levels_per_channel(weight: Tensor) -> Tensor:
    """Number of distinct values in each output channel of ``weight``."""
    w = torch.sort(_per_channel(weight), dim=1).values
    return (w[:, 1:] != w[:, :-1]).sum(dim=1) + 1


def verify_ptq(module: nn.Module) -> dict[str, Any]:
    """Evidence from the module itself: which layers are fake-quant and whether their weights fit the grid."""
    layers: dict[str, dict[str, Any]] = {}
    unquantized = []
    for name, sub in module.named_modules():
        if isinstance(sub, FAKE_QUANT_TYPES):
            levels = int(levels_per_channel(sub.weight.data).max())
            layers[name] = {"class": type(sub).__name__, "bits": sub.ptq_bits, "act_bits": sub.act_bits,
                            "max_levels_per_channel": levels, "within_grid": levels <= 2**sub.ptq_bits}
        elif type(sub) in _QUANTIZABLE:
            unquantized.append(name)
    return {"layers_quantized": len(layers), "all_within_grid": all(v["within_grid"] for v in layers.values()),
            "bits": sorted({v["bits"] for v in layers.values()}), "layers": layers,
            "unquantized_layers": unquantized}


def ptq_weights_bytes(module: nn.Module) -> int:
    """Storage of ``module``'s parameters with fake-quant weights counted as packed codes plus their steps."""
    total = 0
    for sub in module.modules():
        for pname, p in sub.named_parameters(recurse=False):
            if isinstance(sub, FAKE_QUANT_TYPES) and pname == "weight":
                total += packed_bytes(p.numel(), sub.ptq_bits) + sub.weight_step.numel() * 4
                if not sub.quantfake_ptq["symmetric"]:
                    total += sub.weight_zero_point.numel() * 4
            else:
                total += p.numel() * p.element_size()
    return total

