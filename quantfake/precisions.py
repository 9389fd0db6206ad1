"""Precision registry: how a generator's weights are stored and computed.

Naming is truthful: ``int8`` is bitsandbytes LLM.int8 (the student study this project grew from called it
"fp8"); ``fp8`` is real float8 e4m3 weight storage (diffusers layerwise casting, bf16 compute).
torchao backends, the low-bit post-training (simulated) quantizers, optimum-quanto (``quanto-*``) and GGUF
(``q8_0`` ... made by quantfake from the reference weights; ``gguf``: the user's own file) have ids of their own.

Two application paths, one set of modules:
* CUDA + weights on disk: diffusers' own quantize-at-load (``PipelineQuantizationConfig``), memory-efficient
  for 12B models.
* Otherwise (CPU, or modules built in memory for the ``random`` profile): :func:`quantize_module_` swaps in the
  same bitsandbytes / torchao modules itself, so CI exercises every precision's arithmetic on CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from quantfake.errors import PrecisionUnavailable, QuantizationNotApplied, UnknownIdError


@dataclass(frozen=True)
class PrecisionSpec:
    """One precision id and everything needed to apply and check it."""

    id: str
    description: str
    kind: str  # "dtype" | "layerwise" | "bnb" | "torchao" | "ptq" | "quanto" | "gguf"
    torch_dtype: torch.dtype  # dtype of everything not quantized, and the compute dtype
    is_reference: bool = False
    requires_cuda: bool = False
    min_compute_capability: tuple[int, int] | None = None
    bnb_kwargs: dict[str, Any] = field(default_factory=dict, repr=False)
    torchao_config: str | None = None
    torchao_granularity: str | None = None  # a torchao.quantization granularity class (``PerRow``), else default
    quanto_weights: str | None = None  # diffusers QuantoConfig weights_dtype: int8 | int4 | float8
    gguf_type: str | None = None  # ggml type quantfake writes (Q8_0 ...); None with kind gguf: the user's file
    compiled: bool = False  # meant to run under torch.compile (--compile); eager cells are its baseline
    ptq_bits: int | None = None
    ptq_act_bits: int | None = None
    study_name: str | None = None  # what the student study called it, where that differs

    @property
    def quantizes(self) -> bool:
        """True when modules are replaced or re-stored (not a plain dtype cast)."""
        return self.kind != "dtype"

    @property
    def diffusers_backend(self) -> str | None:
        """The ``quant_backend`` name diffusers' ``PipelineQuantizationConfig`` uses, if any."""
        if self.kind == "bnb":
            return "bitsandbytes_4bit" if self.bnb_kwargs.get("load_in_4bit") else "bitsandbytes_8bit"
        if self.kind in ("torchao", "quanto"):
            return self.kind
        return None


def _bnb4(qt: str) -> dict[str, Any]:
    return {"load_in_4bit": True, "bnb_4bit_quant_type": qt, "bnb_4bit_compute_dtype": torch.bfloat16}


PRECISIONS: dict[str, PrecisionSpec] = {
    p.id: p
    for p in (
        PrecisionSpec("fp32", "float32 weights and compute (reference)", "dtype", torch.float32, is_reference=True),
        PrecisionSpec("fp16", "float16 weights and compute", "dtype", torch.float16),
        PrecisionSpec("bf16", "bfloat16 weights and compute", "dtype", torch.bfloat16),
        PrecisionSpec("fp8", "float8 e4m3 weight storage, bf16 compute (diffusers layerwise casting)",
                      "layerwise", torch.bfloat16),
        PrecisionSpec("int8", "bitsandbytes LLM.int8 (8-bit integer weights, fp16 outlier path)", "bnb",
                      torch.bfloat16, bnb_kwargs={"load_in_8bit": True}, study_name="fp8"),
        PrecisionSpec("nf4", "bitsandbytes 4-bit NormalFloat weights, bf16 compute", "bnb", torch.bfloat16,
                      bnb_kwargs=_bnb4("nf4"), study_name="nf4"),
        PrecisionSpec("fp4", "bitsandbytes 4-bit float weights, bf16 compute", "bnb", torch.bfloat16,
                      bnb_kwargs=_bnb4("fp4"), study_name="fp4"),
        PrecisionSpec("fp8dq", "torchao float8 dynamic activation + float8 weight (e4m3)", "torchao",
                      torch.bfloat16, requires_cuda=True, min_compute_capability=(8, 9),
                      torchao_config="Float8DynamicActivationFloat8WeightConfig"),
        PrecisionSpec("int8wo", "torchao int8 weight-only", "torchao", torch.bfloat16,
                      torchao_config="Int8WeightOnlyConfig"),
        PrecisionSpec("int8dq", "torchao int8 dynamic activation + int8 weight", "torchao", torch.bfloat16,
                      torchao_config="Int8DynamicActivationInt8WeightConfig"),
        PrecisionSpec("fp8rw", "torchao row-wise float8 dynamic activation + float8 weight (e4m3, one scale per "
                      "row), meant to run compiled (--compile)", "torchao", torch.bfloat16, requires_cuda=True,
                      min_compute_capability=(8, 9), torchao_config="Float8DynamicActivationFloat8WeightConfig",
                      torchao_granularity="PerRow", compiled=True),
        PrecisionSpec("quanto-int8", "optimum-quanto int8 weights (per-channel scales), bf16 compute", "quanto",
                      torch.bfloat16, quanto_weights="int8"),
        PrecisionSpec("quanto-int4", "optimum-quanto int4 weights (group-wise scales and shifts), bf16 compute",
                      "quanto", torch.bfloat16, quanto_weights="int4"),
        PrecisionSpec("quanto-fp8", "optimum-quanto float8 e4m3 weights (per-channel scales), bf16 compute", "quanto",
                      torch.bfloat16, quanto_weights="float8"),
        PrecisionSpec("q8_0", "GGUF Q8_0 linear weights (8-bit, 32-weight blocks) made from the reference, bf16 "
                      "compute (diffusers GGUF loader)", "gguf", torch.bfloat16, gguf_type="Q8_0"),
        PrecisionSpec("q5_0", "GGUF Q5_0 linear weights (5-bit, 32-weight blocks) made from the reference, bf16 "
                      "compute (diffusers GGUF loader)", "gguf", torch.bfloat16, gguf_type="Q5_0"),
        PrecisionSpec("q4_0", "GGUF Q4_0 linear weights (4-bit, 32-weight blocks) made from the reference, bf16 "
                      "compute (diffusers GGUF loader)", "gguf", torch.bfloat16, gguf_type="Q4_0"),
        PrecisionSpec("gguf", "the user's own GGUF file per generator (--gguf-dir DIR/<generator>.gguf; any type "
                      "diffusers reads, K-quants included), hashed and recorded", "gguf", torch.bfloat16),
        PrecisionSpec("w8", "8-bit per-channel uniform weight PTQ (simulated), fp32 compute", "ptq",
                      torch.float32, ptq_bits=8),
        PrecisionSpec("w4", "4-bit per-channel uniform weight PTQ (simulated), fp32 compute", "ptq",
                      torch.float32, ptq_bits=4),
        PrecisionSpec("w2", "2-bit per-channel uniform weight PTQ (simulated), fp32 compute", "ptq",
                      torch.float32, ptq_bits=2),
        PrecisionSpec("w4a8", "4-bit weight PTQ + dynamic 8-bit activations (simulated)", "ptq",
                      torch.float32, ptq_bits=4, ptq_act_bits=8),
    )
}

#: Precisions run by default (the brief's core set); torchao and PTQ ids are opt-in via ``--precisions``.
DEFAULT_PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16", "fp8", "int8", "nf4", "fp4")

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def get_precision(precision_id: str) -> PrecisionSpec:
    """Look up a precision id, failing with the list of valid ids."""
    try:
        return PRECISIONS[precision_id]
    except KeyError:
        raise UnknownIdError("precision", precision_id, PRECISIONS) from None


def reference_precision(available: list[str] | tuple[str, ...]) -> str:
    """The precision others are compared against: fp32 where present, else the widest available."""
    for candidate in ("fp32", "bf16", "fp16"):
        if candidate in available:
            return candidate
    return available[0]


def unavailable_reason(spec: PrecisionSpec, device: torch.device | str) -> str | None:
    """Why this machine cannot run ``spec`` (None when it can)."""
    device = torch.device(device)
    if spec.requires_cuda and device.type != "cuda":
        return f"{spec.id} needs a CUDA GPU (device is {device})"
    if spec.min_compute_capability and device.type == "cuda":
        cc = torch.cuda.get_device_capability(device)
        if cc < spec.min_compute_capability:
            need = ".".join(map(str, spec.min_compute_capability))
            return f"{spec.id} needs compute capability >= {need}; this GPU has {cc[0]}.{cc[1]}"
    for package in required_packages(spec):
        try:
            __import__({"optimum-quanto": "optimum.quanto"}.get(package, package))
        except ImportError:
            return f"{spec.id} needs the Python package {package!r} (pip install {package})"
    if spec.torchao_config in CPU_INT8_ACTIVATION_CONFIGS and device.type == "cpu":
        capability = torch.backends.cpu.get_cpu_capability()
        if capability not in CPU_INT8_ACTIVATION_CAPABILITIES:
            return (f"{spec.id}: int8 x int8 matmuls on a CPU with ATen capability {capability} (no AVX-512 VNNI) "
                    f"saturate: measured PSNR 26.7 dB against 46.8 dB on AVX-512 for the same tiny cell; "
                    f"CPUs with {', '.join(CPU_INT8_ACTIVATION_CAPABILITIES)} only")
    return None


def precision_note(spec: PrecisionSpec) -> str:
    """What else a precision needs to run as meant (``quantfake doctor``): --compile, or the user's GGUF files."""
    if spec.compiled:
        return " (meant compiled: run its efficiency cells with --compile, and once without for eager)"
    if spec.kind == "gguf" and spec.gguf_type is None:
        return " (reads --gguf-dir DIR/<generator>.gguf; a cell without it skips naming the path)"
    return ""


#: torchao configs that quantize activations to int8: on CPUs without VNNI their int8 GEMMs (u8 x s8 -> s16 pairs)
#: saturate, so the numbers measure the processor, not the precision (issue 14, AVX2 emulated on an EPYC)
CPU_INT8_ACTIVATION_CONFIGS: tuple[str, ...] = ("Int8DynamicActivationInt8WeightConfig",)
CPU_INT8_ACTIVATION_CAPABILITIES: tuple[str, ...] = ("AVX512",)


def required_packages(spec: PrecisionSpec) -> tuple[str, ...]:
    """The quantization backend ``spec`` runs on, as distribution names (its version is part of every generation
    key; :func:`unavailable_reason` imports it)."""
    return {"bnb": ("bitsandbytes",), "torchao": ("torchao",), "quanto": ("optimum-quanto",),
            "gguf": ("gguf",)}.get(spec.kind, ())


def require_available(spec: PrecisionSpec, device: torch.device | str) -> None:
    """Raise :class:`PrecisionUnavailable` with the reason when ``spec`` cannot run on ``device``."""
    reason = unavailable_reason(spec, device)
    if reason:
        raise PrecisionUnavailable(reason)


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
    """
    import torchao.quantization as tq

    extra = {"granularity": getattr(tq, spec.torchao_granularity)()} if spec.torchao_granularity else {}
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
                                compute_dtype=spec.bnb_kwargs["bnb_4bit_compute_dtype"], device=weight.device)
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
    from quantfake.efficiency import weights_bytes

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


def dtype_from_name(name: str) -> torch.dtype:
    """``"bfloat16"`` -> ``torch.bfloat16``, with a clear error."""
    try:
        return _DTYPES[name]
    except KeyError:
        raise UnknownIdError("dtype", name, _DTYPES) from None
