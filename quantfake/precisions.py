"""Precision registry: how a generator's weights are stored and computed.

Naming is truthful: ``int8`` is bitsandbytes LLM.int8 (the student study this project grew from called it
"fp8"); ``fp8`` is real float8 e4m3 weight storage (diffusers layerwise casting, bf16 compute).
torchao backends, the low-bit post-training (simulated) quantizers, optimum-quanto (``quanto-*``) and GGUF
(``q8_0`` ... made by quantfake from the reference weights; ``gguf``: the user's own file) have ids of their own.

This module is data: importing it and validating ids loads no torch (dtypes are names, resolved on use).
Applying and verifying a precision (diffusers' quantize-at-load on CUDA, the same modules swapped in by hand
elsewhere) lives in :mod:`quantfake.precision_apply`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from quantfake.errors import PrecisionUnavailable, UnknownIdError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class PrecisionSpec:
    """One precision id and everything needed to apply and check it."""

    id: str
    description: str
    kind: str  # "dtype" | "layerwise" | "bnb" | "torchao" | "ptq" | "quanto" | "gguf"
    dtype: str  # torch dtype name of everything not quantized, and the compute dtype (``torch_dtype`` resolves it)
    is_reference: bool = False
    requires_cuda: bool = False
    min_compute_capability: tuple[int, int] | None = None
    bnb_kwargs: dict[str, Any] = field(default_factory=dict, repr=False)
    torchao_config: str | None = None
    torchao_granularity: str | None = None  # a torchao.quantization granularity class (``PerRow``), else default
    # lower bound of a dynamic float8 activation scale's amax: without it an all-zero row (SDXL's zeroed empty
    # negative prompt) gets scale 0 and quantizes to 0/0 = NaN (torchao's float8 training clamps at 1e-12 too)
    torchao_activation_lb: float | None = None
    quanto_weights: str | None = None  # diffusers QuantoConfig weights_dtype: int8 | int4 | float8
    gguf_type: str | None = None  # ggml type quantfake writes (Q8_0 ...); None with kind gguf: the user's file
    compiled: bool = False  # meant to run under torch.compile (--compile); eager cells are its baseline
    ptq_bits: int | None = None
    ptq_act_bits: int | None = None
    study_name: str | None = None  # what the student study called it, where that differs

    @property
    def torch_dtype(self) -> torch.dtype:
        """:attr:`dtype` as a ``torch.dtype`` (imports torch on first use, not with the registry)."""
        return dtype_from_name(self.dtype)

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
    return {"load_in_4bit": True, "bnb_4bit_quant_type": qt, "bnb_4bit_compute_dtype": "bfloat16"}


PRECISIONS: dict[str, PrecisionSpec] = {
    p.id: p
    for p in (
        PrecisionSpec("fp32", "float32 weights and compute (reference)", "dtype", "float32", is_reference=True),
        PrecisionSpec("fp16", "float16 weights and compute", "dtype", "float16"),
        PrecisionSpec("bf16", "bfloat16 weights and compute", "dtype", "bfloat16"),
        PrecisionSpec("fp8", "float8 e4m3 weight storage, bf16 compute (diffusers layerwise casting)",
                      "layerwise", "bfloat16"),
        PrecisionSpec("int8", "bitsandbytes LLM.int8 (8-bit integer weights, fp16 outlier path)", "bnb",
                      "bfloat16", bnb_kwargs={"load_in_8bit": True}, study_name="fp8"),
        PrecisionSpec("nf4", "bitsandbytes 4-bit NormalFloat weights, bf16 compute", "bnb", "bfloat16",
                      bnb_kwargs=_bnb4("nf4"), study_name="nf4"),
        PrecisionSpec("fp4", "bitsandbytes 4-bit float weights, bf16 compute", "bnb", "bfloat16",
                      bnb_kwargs=_bnb4("fp4"), study_name="fp4"),
        PrecisionSpec("fp8dq", "torchao float8 dynamic activation + float8 weight (e4m3)", "torchao",
                      "bfloat16", requires_cuda=True, min_compute_capability=(8, 9),
                      torchao_config="Float8DynamicActivationFloat8WeightConfig"),
        PrecisionSpec("int8wo", "torchao int8 weight-only", "torchao", "bfloat16",
                      torchao_config="Int8WeightOnlyConfig"),
        PrecisionSpec("int8dq", "torchao int8 dynamic activation + int8 weight", "torchao", "bfloat16",
                      torchao_config="Int8DynamicActivationInt8WeightConfig"),
        PrecisionSpec("fp8rw", "torchao row-wise float8 dynamic activation + float8 weight (e4m3, one scale per "
                      "row), meant to run compiled (--compile)", "torchao", "bfloat16", requires_cuda=True,
                      min_compute_capability=(8, 9), torchao_config="Float8DynamicActivationFloat8WeightConfig",
                      torchao_granularity="PerRow", torchao_activation_lb=1e-12, compiled=True),
        PrecisionSpec("quanto-int8", "optimum-quanto int8 weights (per-channel scales), bf16 compute", "quanto",
                      "bfloat16", quanto_weights="int8"),
        PrecisionSpec("quanto-int4", "optimum-quanto int4 weights (group-wise scales and shifts), bf16 compute",
                      "quanto", "bfloat16", quanto_weights="int4"),
        PrecisionSpec("quanto-fp8", "optimum-quanto float8 e4m3 weights (per-channel scales), bf16 compute", "quanto",
                      "bfloat16", quanto_weights="float8"),
        PrecisionSpec("q8_0", "GGUF Q8_0 linear weights (8-bit, 32-weight blocks) made from the reference, bf16 "
                      "compute (diffusers GGUF loader)", "gguf", "bfloat16", gguf_type="Q8_0"),
        PrecisionSpec("q5_0", "GGUF Q5_0 linear weights (5-bit, 32-weight blocks) made from the reference, bf16 "
                      "compute (diffusers GGUF loader)", "gguf", "bfloat16", gguf_type="Q5_0"),
        PrecisionSpec("q4_0", "GGUF Q4_0 linear weights (4-bit, 32-weight blocks) made from the reference, bf16 "
                      "compute (diffusers GGUF loader)", "gguf", "bfloat16", gguf_type="Q4_0"),
        PrecisionSpec("gguf", "the user's own GGUF file per generator (--gguf-dir DIR/<generator>.gguf; any type "
                      "diffusers reads, K-quants included), hashed and recorded", "gguf", "bfloat16"),
        PrecisionSpec("w8", "8-bit per-channel uniform weight PTQ (simulated), fp32 compute", "ptq",
                      "float32", ptq_bits=8),
        PrecisionSpec("w4", "4-bit per-channel uniform weight PTQ (simulated), fp32 compute", "ptq",
                      "float32", ptq_bits=4),
        PrecisionSpec("w2", "2-bit per-channel uniform weight PTQ (simulated), fp32 compute", "ptq",
                      "float32", ptq_bits=2),
        PrecisionSpec("w4a8", "4-bit weight PTQ + dynamic 8-bit activations (simulated)", "ptq",
                      "float32", ptq_bits=4, ptq_act_bits=8),
    )
}

#: Precisions run by default (the brief's core set); torchao and PTQ ids are opt-in via ``--precisions``.
DEFAULT_PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16", "fp8", "int8", "nf4", "fp4")

#: Floating dtype names a precision or a detector computes in, by the short id used in cell ids and options.
COMPUTE_DTYPES: dict[str, str] = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


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
    import torch

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


def dtype_from_name(name: str) -> torch.dtype:
    """``"bfloat16"`` (or the short id ``"bf16"``) -> ``torch.bfloat16``, with a clear error."""
    import torch

    full = COMPUTE_DTYPES.get(name, name)
    if full not in COMPUTE_DTYPES.values():
        raise UnknownIdError("dtype", name, COMPUTE_DTYPES.values())
    return getattr(torch, full)
