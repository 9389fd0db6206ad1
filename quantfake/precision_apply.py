"""Applying and verifying a precision (:mod:`quantfake.precisions` holds the ids and their facts, as data).

Two application paths, one set of modules:
* CUDA + weights on disk: diffusers' own quantize-at-load (``PipelineQuantizationConfig``), memory-efficient
  for 12B models.
* Otherwise (CPU, or modules built in memory for the ``random`` profile): :func:`quantize_module_` swaps in the
  same bitsandbytes / torchao modules itself, so CI exercises every precision's arithmetic on CPU.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from quantfake.errors import QuantizationNotApplied
from quantfake.precisions import PrecisionSpec, require_available

# --------------------------------------------------------------------------------------------------
# diffusers' quantize-at-load path (CUDA)


def pipeline_quantization_config(spec: PrecisionSpec, components: list[str]) -> Any | None:
    """A diffusers ``PipelineQuantizationConfig`` for ``components``, or None for non-quantizing precisions."""
    if spec.kind not in ("bnb", "torchao", "quanto"):
        return None
    from diffusers.quantizers import PipelineQuantizationConfig

    if spec.kind == "quanto":
        from quantfake.backends.quanto import quanto_config

        return PipelineQuantizationConfig(quant_mapping={c: quanto_config(spec.quanto_weights) for c in components})

    if spec.kind == "bnb":
        return PipelineQuantizationConfig(
            quant_backend=spec.diffusers_backend, quant_kwargs=dict(spec.bnb_kwargs),
            components_to_quantize=list(components),
        )
    from diffusers import TorchAoConfig

    return PipelineQuantizationConfig(
        quant_mapping={c: TorchAoConfig(_torchao_config(spec)) for c in components}
    )


def _torchao_config(spec: PrecisionSpec) -> Any:
    """The torchao config of ``spec``, leaving torch.compile's settings alone.

    torchao's default ``set_inductor_config=True`` switches on coordinate-descent tuning for the whole
    process when a model is quantized, and never switches it off: every later compile in the same process,
    bf16 included, would be tuned too. On the H100, SD1.5 int8wo under torch.compile timed out at 200 s with
    that tuning and compiled in 63 s without it. Every precision therefore compiles with the same inductor
    settings, so compiled cells compare quantization, not tuning effort.

    ``spec.torchao_activation_lb`` bounds a dynamic activation scale from below, so an all-zero row quantizes to
    zeros instead of NaN (SDXL's fp8rw images were non-finite on the H100: benchmarks/backends_h100). torchao
    then quantizes activations with its torch path rather than the mslk kernel, which accepts no bound.
    """
    import torchao.quantization as tq

    extra: dict[str, Any] = {"granularity": getattr(tq, spec.torchao_granularity)()} if spec.torchao_granularity else {}
    if spec.torchao_activation_lb is not None:
        extra["activation_value_lb"] = spec.torchao_activation_lb
    return getattr(tq, spec.torchao_config)(set_inductor_config=False, **extra)


# --------------------------------------------------------------------------------------------------
# in-memory path: same modules, applied by us


def quantize_module_(module: nn.Module, spec: PrecisionSpec, device: torch.device | str = "cpu") -> nn.Module:
    """Apply ``spec`` to ``module`` in place and move it to ``device``.

    The bitsandbytes path mirrors diffusers' ``replace_with_bnb_linear``: every ``nn.Linear`` except the
    model's ``_keep_in_fp32_modules`` becomes ``Linear8bitLt`` / ``Linear4bit``, quantized on the move to
    ``device`` (bitsandbytes >= 0.45 quantizes on CPU too).
    """
    device = torch.device(device)
    require_available(spec, device)
    if spec.kind == "dtype":
        return module.to(device=device, dtype=spec.torch_dtype)
    if spec.kind == "layerwise":
        module.to(device=device, dtype=spec.torch_dtype)
        module.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=spec.torch_dtype)
        return module
    if spec.kind == "bnb":
        module.to(dtype=spec.torch_dtype)
        _replace_with_bnb(module, spec, skip=tuple(getattr(module, "_keep_in_fp32_modules", None) or ()))
        return module.to(device)
    if spec.kind == "torchao":
        from torchao.quantization import quantize_

        module.to(device=device, dtype=spec.torch_dtype)
        quantize_(module, _torchao_config(spec))
        return module
    if spec.kind == "quanto":
        from quantfake.backends.quanto import quantize_linears_

        module.to(device=device, dtype=spec.torch_dtype)
        return quantize_linears_(module, spec.quanto_weights, tuple(getattr(module, "_keep_in_fp32_modules", None) or ()))
    if spec.kind == "gguf":
        raise ValueError(f"{spec.id}: GGUF weights load through a file or state dict (quantfake.loading), "
                         "not by quantizing a module in place")
    if spec.kind == "ptq":
        from quantfake.ptq import MSECalibrator, quantize_weights_

        module.to(device=device, dtype=spec.torch_dtype)
        quantize_weights_(module, spec.ptq_bits, MSECalibrator(), act_bits=spec.ptq_act_bits)
        return module
    raise AssertionError(f"unhandled precision kind {spec.kind!r}")


def _replace_with_bnb(module: nn.Module, spec: PrecisionSpec, skip: tuple[str, ...], prefix: str = "") -> None:
    import bitsandbytes as bnb

    for name, child in list(module.named_children()):
        full = f"{prefix}.{name}" if prefix else name
        if any(full == s or full.startswith(s + ".") or name == s for s in skip):
            continue
        if isinstance(child, nn.Linear):
            setattr(module, name, _bnb_linear(bnb, child, spec))
        else:
            _replace_with_bnb(child, spec, skip, full)


def _bnb_linear(bnb: Any, linear: nn.Linear, spec: PrecisionSpec) -> nn.Module:
    has_bias = linear.bias is not None
    weight = linear.weight.data
    if spec.bnb_kwargs.get("load_in_8bit"):
        new = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, bias=has_bias,
                                  has_fp16_weights=False, threshold=6.0, device=weight.device)
        new.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
    else:
        qt = spec.bnb_kwargs["bnb_4bit_quant_type"]
        new = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=has_bias, quant_type=qt,
                                compute_dtype=getattr(torch, spec.bnb_kwargs["bnb_4bit_compute_dtype"]), device=weight.device)
        new.weight = bnb.nn.Params4bit(weight, requires_grad=False, quant_type=qt)
    if has_bias:
        new.bias = nn.Parameter(linear.bias.data, requires_grad=False)
    if weight.device.type == "meta":
        return new
    if isinstance(new.weight, bnb.nn.Int8Params) and weight.device.type != "cpu":
        # Int8Params quantizes only on a move *from the CPU* (bitsandbytes 0.50 ``Int8Params.to``); weights built
        # on the GPU (the random profile) would stay bf16 inside a Linear8bitLt. Quantize where they are, as
        # that move does, instead of a round trip through host memory. verify() catches it if this ever changes.
        new.weight = new.weight._quantize(weight.device)
        return new.to(weight.device)
    return new.to(weight.device)  # bitsandbytes quantizes on .to() (4-bit: same-device moves too)


# --------------------------------------------------------------------------------------------------
# verification


def _is_quantized_module(module: nn.Module, spec: PrecisionSpec) -> bool:
    """Whether ``module`` carries ``spec``'s quantization in its own (non-recursive) weights."""
    if spec.kind == "bnb":
        import bitsandbytes as bnb

        if spec.bnb_kwargs.get("load_in_8bit"):
            return isinstance(module, bnb.nn.Linear8bitLt) and module.weight.dtype == torch.int8
        return isinstance(module, bnb.nn.Linear4bit) and getattr(module.weight, "bnb_quantized", False)
    own = list(module.parameters(recurse=False))
    if spec.kind == "layerwise":
        return any(p.dtype == torch.float8_e4m3fn for p in own)
    if spec.kind == "torchao":
        return any(type(p.data) not in (torch.Tensor, nn.Parameter) for p in own)
    if spec.kind == "ptq":
        return getattr(module, "quantfake_ptq", None) is not None
    if spec.kind == "quanto":
        from quantfake.backends.quanto import is_quantized

        return is_quantized(module, spec.quanto_weights)
    if spec.kind == "gguf":
        from diffusers.quantizers.gguf.utils import GGUFParameter

        return any(isinstance(p, GGUFParameter) and (spec.gguf_type is None or p.quant_type.name == spec.gguf_type)
                   for p in own)
    return False


def describe_component(module: nn.Module, spec: PrecisionSpec) -> dict[str, Any]:
    """Module classes, parameter dtypes, weight bytes and the number of quantized modules of one component."""
    from quantfake.measure import weights_bytes

    classes: dict[str, int] = {}
    quantized = 0
    for sub in module.modules():
        if next(sub.parameters(recurse=False), None) is None:
            continue
        classes[type(sub).__name__] = classes.get(type(sub).__name__, 0) + 1
        quantized += _is_quantized_module(sub, spec)
    dtypes: dict[str, int] = {}
    for p in module.parameters():
        key = str(p.dtype).replace("torch.", "")
        dtypes[key] = dtypes.get(key, 0) + p.numel()
    info = {"class": type(module).__name__, "module_classes": classes, "param_dtypes": dtypes,
            "weights_bytes": weights_bytes(module), "quantized_modules": quantized}
    if spec.kind == "ptq":  # simulated quantization: memory holds fp32, storage would hold packed codes
        from quantfake.ptq import ptq_weights_bytes

        info["packed_weights_bytes"] = ptq_weights_bytes(module)
    if spec.kind == "gguf":
        from quantfake.backends.gguf import describe_gguf

        info.update(describe_gguf(module))
    return info


def verify(pipe: Any, spec: PrecisionSpec, components: list[str]) -> dict[str, dict[str, Any]]:
    """Prove ``spec`` took effect on each requested component of ``pipe``; raise if one was left alone.

    diffusers silently ignores component names a pipeline lacks (diffusers issue 11745); this does not.
    """
    available = {k: v for k, v in pipe.components.items() if isinstance(v, nn.Module)}
    missing = [c for c in components if c not in available]
    if missing:
        raise QuantizationNotApplied(
            f"{spec.id}: component(s) {missing} not in {type(pipe).__name__}; it has {sorted(available)}")
    report = {name: describe_component(mod, spec) for name, mod in available.items()}
    for name in components:
        info = report[name]
        if spec.quantizes and info["quantized_modules"] == 0:
            raise QuantizationNotApplied(
                f"{spec.id}: component {name!r} has no quantized module (classes: {info['module_classes']})")
        if not spec.quantizes:
            wanted = str(spec.torch_dtype).replace("torch.", "")
            floats = {d: n for d, n in info["param_dtypes"].items() if d.startswith(("float", "bfloat"))}
            if set(floats) != {wanted}:
                raise QuantizationNotApplied(f"{spec.id}: component {name!r} holds dtypes {floats}, wanted {wanted}")
        if spec.kind == "gguf":
            _check_gguf_bytes(spec, name, info)
    return report


def _check_gguf_bytes(spec: PrecisionSpec, name: str, info: dict[str, Any]) -> None:
    """Every GGUF type's bytes per weight must be its block layout's (Q4_0: 4.5 bits), and quantfake's own files
    hold the one type asked for: a file whose blocks were written or read wrong fails here, not in the pixels."""
    from quantfake.backends.gguf import expected_bits_per_weight

    for type_name, bits in info["gguf_bits_per_weight"].items():
        if bits != expected_bits_per_weight(type_name):
            raise QuantizationNotApplied(f"{spec.id}: component {name!r} stores {type_name} at {bits} bits per weight, "
                                         f"its block layout gives {expected_bits_per_weight(type_name)}")
    if spec.gguf_type and set(info["gguf_types"]) != {spec.gguf_type}:
        raise QuantizationNotApplied(f"{spec.id}: component {name!r} holds GGUF types {info['gguf_types']}, "
                                     f"wanted only {spec.gguf_type}")


def check_components(pipeline_cls: type, components: list[str]) -> None:
    """Fail early when a component to quantize is not part of ``pipeline_cls`` (no silent no-op)."""
    expected, _ = pipeline_cls._get_signature_keys(pipeline_cls)
    bad = [c for c in components if c not in expected]
    if bad:
        raise QuantizationNotApplied(
            f"component(s) {bad} are not part of {pipeline_cls.__name__}; its components: {sorted(expected)}")
