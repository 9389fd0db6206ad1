"""The detector-precision axis: the fake-image *detector* itself run at fp16 / bf16 / int8 / 4-3-2 bit.

Context (QMDD, IJCAI 2025): detectors quantized to 2-3 bits keep most of their accuracy when calibrated
(learned step sizes), while naive min-max 4-bit loses more. The low-bit ids here (w4 / w3 / w2) are min-max
per-channel fake quant from :mod:`quantfake.ptq`: the naive baseline a calibrated method would be measured
against.

int8 is real int8 arithmetic on CPU: FX graph-mode static post-training quantization of the convolutions
(observers calibrated on ``calib_batches``; FX handles residual adds without editing the model) plus
``quantize_dynamic`` for Linear layers. ``torch.ao.quantization`` is deprecated upstream in favour of
torchao's pt2e flow, but pt2e only yields int8 kernels after ``torch.compile``; FX still gives eager int8
modules on torch 2.13. A model FX cannot trace falls back to per-channel int8 *fake* quant of its convs
(reported as ``int8_conv_mode="fake_quant_per_channel"``).

:func:`quantize_detector` never modifies its input: it returns a quantized copy and a report.
"""

from __future__ import annotations

import copy
import warnings
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from quantfake.detector_precisions import DETECTOR_PRECISIONS, get_detector_precision
from quantfake.errors import PrecisionUnavailable
from quantfake.ptq import (
    FAKE_QUANT_TYPES,
    MinMaxCalibrator,
    packed_bytes,
    quantize_weights_,
)

# --------------------------------------------------------------------------------------------------
# storage accounting


def _tensor_bytes(t: Tensor) -> int:
    n = t.numel() * t.element_size()
    if t.is_quantized and t.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        scales, zps = t.q_per_channel_scales(), t.q_per_channel_zero_points()
        n += scales.numel() * scales.element_size() + zps.numel() * zps.element_size()
    elif t.is_quantized:
        n += 8  # one scale + one zero point
    return n


def _value_bytes(value: Any) -> int:
    if isinstance(value, Tensor):
        return _tensor_bytes(value)
    if isinstance(value, (tuple, list)):  # torch.ao dynamic Linear keeps (qweight, bias) tuples
        return sum(_value_bytes(v) for v in value)
    return 0


def model_bytes(module: nn.Module) -> int:
    """Honest storage of ``module``: state_dict tensors at their stored size, int8 quantized tensors at one
    byte plus their scales, and fake-quant weights at their packed bit width (plus per-channel steps)."""
    packed = {f"{name}.weight" if name else "weight": sub.ptq_bits
              for name, sub in module.named_modules() if isinstance(sub, FAKE_QUANT_TYPES)}
    total = 0
    for key, value in module.state_dict().items():
        if key in packed and isinstance(value, Tensor):
            total += packed_bytes(value.numel(), packed[key])
        else:
            total += _value_bytes(value)
    return total


def module_classes(module: nn.Module) -> dict[str, int]:
    """Count of module classes, to show that quantization visibly swapped layers."""
    return dict(Counter(type(m).__name__ for m in module.modules()))


# --------------------------------------------------------------------------------------------------
# fp16 / bf16


class CastDetector(nn.Module):
    """Runs ``inner`` in ``dtype`` and returns float32, so callers keep feeding fp32 batches."""

    def __init__(self, inner: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.inner, self.dtype = inner.to(dtype), dtype

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        out = self.inner(x.to(self.dtype) if x.is_floating_point() else x, *args, **kwargs)
        return out.float() if isinstance(out, Tensor) else out


class AutocastDetector(nn.Module):
    """Runs ``inner`` (fp32 weights) under ``torch.autocast`` in ``dtype`` on the input's device; returns float32.

    Mixed precision is a detector precision of its own (``fp16amp`` / ``bf16amp``): ``fp32`` never autocasts,
    so the full-precision reference is the upstream detector on every device.
    """

    def __init__(self, inner: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.inner, self.dtype = inner, dtype

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        with torch.autocast(x.device.type, dtype=self.dtype):
            out = self.inner(x, *args, **kwargs)
        return out.float() if isinstance(out, Tensor) else out


# --------------------------------------------------------------------------------------------------
# int8


def _require_batches(precision: str, calib_batches: Sequence[Tensor] | None) -> list[Tensor]:
    if not calib_batches:
        raise ValueError(f"precision {precision!r} needs calib_batches (a non-empty list of input tensors)")
    return list(calib_batches)


def _int8_fx(module: nn.Module, calib_batches: list[Tensor]) -> nn.Module:
    """Static int8 CNN body via FX PTQ (conv-bn(-relu) fused, observers calibrated on the batches)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*deprecated")
        warnings.filterwarnings("ignore", message=".*reduce_range will be deprecated")
        from torch.ao.quantization import get_default_qconfig_mapping
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

        # Static int8 everywhere FX can (convs, their fused BN/ReLU, residual adds, pooling) except Linear,
        # which stays fp32 here and gets dynamic int8 next. Conv-only static quant is not possible: FX
        # refuses to fuse conv+relu when the two carry different qconfigs.
        qmap = get_default_qconfig_mapping("x86").set_object_type(nn.Linear, None).set_object_type(F.linear, None)
        prepared = prepare_fx(module, qmap, example_inputs=(calib_batches[0],))
        with torch.no_grad():
            for batch in calib_batches:
                prepared(batch)
        return convert_fx(prepared)


def _int8_fake_convs(module: nn.Module) -> nn.Module:
    """Fallback when FX cannot trace: per-channel symmetric int8 fake quant of every conv weight."""
    quantize_weights_(module, 8, MinMaxCalibrator(), skip=_linear_names(module))
    return module


def _linear_names(module: nn.Module) -> list[str]:
    return [name for name, m in module.named_modules() if type(m) is nn.Linear]


def _int8(module: nn.Module, calib_batches: list[Tensor]) -> tuple[nn.Module, str]:
    module.eval()
    try:
        qmodel, mode = _int8_fx(module, calib_batches), "fx_static"
    except Exception as exc:  # noqa: BLE001 - any tracing failure means "not FX-traceable"
        warnings.warn(f"FX static int8 failed ({type(exc).__name__}: {exc}); using int8 fake-quant convs",
                      stacklevel=3)
        qmodel, mode = _int8_fake_convs(module), "fake_quant_per_channel"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*deprecated")
        from torch.ao.quantization import quantize_dynamic

        qmodel = quantize_dynamic(qmodel, {nn.Linear}, dtype=torch.qint8)
    return qmodel, mode


# --------------------------------------------------------------------------------------------------
# nf4 (CUDA)


def _nf4_linears_(module: nn.Module) -> int:
    import bitsandbytes as bnb

    count = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not nn.Linear:
                continue
            new = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                    quant_type="nf4", compute_dtype=torch.float32)
            new.weight = bnb.nn.Params4bit(child.weight.data.cpu(), requires_grad=False, quant_type="nf4")
            if child.bias is not None:
                new.bias = nn.Parameter(child.bias.data.cpu(), requires_grad=False)
            setattr(parent, name, new.to("cuda"))  # bitsandbytes packs on the move to the device
            count += 1
    return count


# --------------------------------------------------------------------------------------------------
# entry point


def quantize_detector(module: nn.Module, precision: str, calib_batches: list[Tensor] | None = None,
                      device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """A quantized copy of the detector ``module`` at ``precision`` and a report of what changed.

    ``calib_batches``: inputs as the detector sees them (after its preprocessing); required for int8.
    """
    spec = get_detector_precision(precision)
    if spec.requires_cuda and not torch.cuda.is_available():
        raise PrecisionUnavailable(f"detector precision {precision!r} needs CUDA (bitsandbytes NF4); "
                                   f"CPU precisions: {[p for p, s in DETECTOR_PRECISIONS.items() if not s.requires_cuda]}")
    if spec.kind == "int8" and torch.device(device).type != "cpu":
        # seen on an H100 with the rehearsal's CLIP-D: "Could not run 'quantized::linear_dynamic' ... CUDA backend"
        raise PrecisionUnavailable(
            f"detector precision {precision!r} runs torch.ao's quantized int8 kernels (fbgemm), which exist on CPU "
            f"only; on {device} use {[p for p, s in DETECTOR_PRECISIONS.items() if s.kind != 'int8']}, or --device cpu")
    qmodel = copy.deepcopy(module).eval()
    report: dict[str, Any] = {"precision": precision, "kind": spec.kind, "weight_bits": spec.weight_bits,
                              "bytes_before": model_bytes(module), "classes_before": module_classes(module)}
    if spec.kind == "cast":
        qmodel = CastDetector(qmodel, spec.torch_dtype)
    elif spec.kind == "autocast":
        qmodel = AutocastDetector(qmodel, spec.torch_dtype)
        report["autocast_dtype"] = str(spec.torch_dtype).removeprefix("torch.")
    elif spec.kind == "int8":
        qmodel, report["int8_conv_mode"] = _int8(qmodel, _require_batches(precision, calib_batches))
    elif spec.kind == "fake_quant":
        ptq = quantize_weights_(qmodel, spec.weight_bits, MinMaxCalibrator(symmetric=True))
        report["ptq"] = ptq.as_dict()
        report["calibrator"] = "minmax"
    elif spec.kind == "bnb_nf4":
        qmodel = qmodel.to("cuda")
        report["nf4_linears"] = _nf4_linears_(qmodel)
    report["bytes_after"] = model_bytes(qmodel)
    report["compression"] = report["bytes_after"] / max(report["bytes_before"], 1)
    report["classes_after"] = module_classes(qmodel)
    return qmodel, report


def uses_calibration(precision: str) -> bool:
    """Whether :func:`quantize_detector` at ``precision`` reads its calibration batches (they then key its scores)."""
    return get_detector_precision(precision).kind == "int8"
