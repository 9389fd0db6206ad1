"""GGUF weights for a generator's denoiser: written by quantfake from the reference weights, or the user's own file.

How people run Flux / SD3.5 on consumer GPUs: a ``.gguf`` file of block-quantized linear weights (Q8_0, Q5_0,
Q4_0, K-quants) loaded by diffusers' ``from_single_file`` with ``GGUFQuantizationConfig``; every ``nn.Linear``
whose weight arrives as a ``GGUFParameter`` becomes a ``GGUFLinear`` that dequantizes per call. This module
makes such a file from any profile's weights (diffusers-format keys, which ``from_single_file`` loads without
conversion), so the precision axis runs the exact loader and layers users run.

Which tensors are quantized: the weights of ``nn.Linear`` modules (diffusers converts only those) outside the
model's ``_keep_in_fp32_modules`` whose input width is a multiple of the block size (32); everything else is
stored as F32 and cast to the compute dtype on load, as llama.cpp-style converters keep small tensors unquantized.

The quantizers are the ``gguf`` package's (``gguf.quants.quantize``, bit-exact with ggml-quants.c). On CUDA the
same arithmetic runs in torch (:func:`quantize_blocks_torch`): gguf's numpy runs one core at 20-60 M weights/s
(measured on the 2-core CI box), 4-10 minutes for Flux's 12B. tests/test_gguf_backend.py proves the two
byte-identical.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

#: precision id suffix -> ggml quantization type name (the ids quantfake writes itself)
GGUF_TYPES: dict[str, str] = {"q8_0": "Q8_0", "q5_0": "Q5_0", "q4_0": "Q4_0"}
UNQUANTIZED = ("F32", "F16", "BF16")


@dataclass(frozen=True)
class GGUFSource:
    """Where a denoiser's GGUF weights came from: a file (hashed) or a state dict made in memory."""

    path: Path | None
    sha256: str | None
    origin: str  # "quantfake" (made from the profile's reference weights) | "user" (--gguf-dir)
    tensor_types: dict[str, int]  # ggml type name -> tensor count

    def record(self) -> dict[str, Any]:
        return {"gguf_path": str(self.path) if self.path else None, "gguf_sha256": self.sha256,
                "gguf_origin": self.origin, "gguf_file_tensor_types": dict(self.tensor_types)}


def qtype(name: str) -> Any:
    """``"Q8_0"`` -> ``gguf.GGMLQuantizationType.Q8_0``."""
    import gguf

    return gguf.GGMLQuantizationType[name]


def block_sizes(type_name: str) -> tuple[int, int]:
    """(weights per block, bytes per block) of a ggml type."""
    import gguf

    return gguf.GGML_QUANT_SIZES[qtype(type_name)]


def quantizable_weights(module: nn.Module, type_name: str) -> set[str]:
    """State-dict names of the weights to quantize: ``nn.Linear`` outside ``_keep_in_fp32_modules``, whole blocks."""
    block, _ = block_sizes(type_name)
    keep = tuple(getattr(module, "_keep_in_fp32_modules", None) or ())
    names = set()
    for name, sub in module.named_modules():
        if not isinstance(sub, nn.Linear) or any(part in keep for part in name.split(".")):
            continue
        if sub.in_features % block == 0:
            names.add(f"{name}.weight")
    return names


def _roundf(x: torch.Tensor) -> torch.Tensor:
    """gguf's ``np_roundf``: round half away from zero, written exactly as gguf writes it."""
    a = x.abs()
    floored = a.floor()
    return x.sign() * (floored + (2 * (a - floored)).floor())


def quantize_blocks_torch(x: torch.Tensor, type_name: str) -> torch.Tensor:
    """Port of gguf's ``Q8_0`` / ``Q5_0`` / ``Q4_0`` ``quantize_blocks`` to torch (any device); same bytes.

    ``x``: (..., n) with n a multiple of 32. Returns uint8 of shape (..., n / 32 * bytes_per_block).
    """
    block, _ = block_sizes(type_name)
    lead = x.shape[:-1]
    blocks = x.detach().to(torch.float32).reshape(-1, block)
    if type_name == "Q8_0":
        d = blocks.abs().amax(dim=1, keepdim=True) / 127
        inv = torch.where(d == 0, torch.zeros_like(d), 1 / d)
        qs = _roundf(blocks * inv).to(torch.int8).view(torch.uint8)
        out = torch.cat([d.to(torch.float16).view(torch.uint8), qs], dim=1)
    elif type_name in ("Q4_0", "Q5_0"):
        levels = 8 if type_name == "Q4_0" else 16
        imax = blocks.abs().argmax(dim=1, keepdim=True)
        d = blocks.gather(1, imax) / -levels
        inv = torch.where(d == 0, torch.zeros_like(d), 1 / d)
        q = torch.trunc(blocks * inv + (levels + 0.5)).clamp(0, 2 * levels - 1).to(torch.uint8)
        half = block // 2
        qs = (q[:, :half] & 0x0F) | (q[:, half:] << 4)
        parts = [d.to(torch.float16).view(torch.uint8)]
        if type_name == "Q5_0":  # the fifth bit of each of the 32 values, packed little-endian into 4 bytes
            bits = ((q >> 4) & 1).reshape(-1, 4, 8).to(torch.int32)
            shifts = torch.arange(8, device=x.device, dtype=torch.int32)
            parts.append((bits << shifts).sum(dim=2).to(torch.uint8))
        out = torch.cat([*parts, qs], dim=1)
    else:
        raise ValueError(f"no torch quantizer for {type_name!r}; accepted: {', '.join(GGUF_TYPES.values())}")
    return out.reshape(*lead, -1)


def quantize_tensor(t: torch.Tensor, type_name: str) -> torch.Tensor:
    """Block-quantize ``t`` (last dim): the gguf package's quantizer on CPU, its torch port on a GPU."""
    if t.device.type == "cpu":
        import gguf

        return torch.from_numpy(gguf.quants.quantize(t.detach().to(torch.float32).numpy(), qtype(type_name)))
    return quantize_blocks_torch(t, type_name)


def quantized_state_dict(module: nn.Module, type_name: str) -> dict[str, torch.Tensor]:
    """``module``'s state dict with its quantizable weights as diffusers ``GGUFParameter`` (bytes + ggml type)."""
    from diffusers.quantizers.gguf.utils import GGUFParameter

    targets = quantizable_weights(module, type_name)
    out: dict[str, torch.Tensor] = {}
    for name, tensor in module.state_dict().items():
        if name in targets:
            out[name] = GGUFParameter(quantize_tensor(tensor, type_name), quant_type=qtype(type_name))
        else:
            out[name] = tensor.detach()
    return out


def write_gguf(state: dict[str, torch.Tensor], path: Path, arch: str) -> None:
    """Write ``state`` (GGUFParameters and plain tensors, stored F32) as a GGUF file, atomically."""
    import gguf
    from diffusers.quantizers.gguf.utils import GGUFParameter

    tmp = path.with_name(f".{path.name}.tmp")
    writer = gguf.GGUFWriter(tmp, arch=arch)
    for name, tensor in state.items():
        if isinstance(tensor, GGUFParameter):
            writer.add_tensor(name, tensor.as_tensor().cpu().numpy(), raw_dtype=tensor.quant_type)
        else:
            writer.add_tensor(name, tensor.to(torch.float32).cpu().numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(path)


def file_tensor_types(path: Path) -> dict[str, int]:
    """ggml type name -> number of tensors of that type in a GGUF file (header only)."""
    import gguf

    reader = gguf.GGUFReader(path)
    return dict(Counter(t.tensor_type.name for t in reader.tensors))


def ensure_gguf_file(reference: Callable[[], nn.Module], type_name: str, folder: Path, name: str) -> GGUFSource:
    """``folder/name`` made once from the weights of ``reference()`` (locked; a rerun reuses it), hashed."""
    from filelock import FileLock

    from quantfake.store import sha256_file

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    with FileLock(str(path) + ".lock"):
        if not path.exists():
            module = reference()
            write_gguf(quantized_state_dict(module, type_name), path, arch=type(module).__name__)
    return GGUFSource(path, sha256_file(path), "quantfake", file_tensor_types(path))


def load_gguf_model(cls: type, weights: Path | dict[str, torch.Tensor], config_folder: Path, subfolder: str,
                    compute_dtype: torch.dtype, device: str) -> nn.Module:
    """diffusers' GGUF path: ``cls.from_single_file`` with ``GGUFQuantizationConfig`` (a file or a state dict)."""
    from diffusers import GGUFQuantizationConfig

    source = str(weights) if isinstance(weights, Path) else weights
    model = cls.from_single_file(source, config=str(config_folder), subfolder=subfolder,
                                 quantization_config=GGUFQuantizationConfig(compute_dtype=compute_dtype),
                                 torch_dtype=compute_dtype, local_files_only=True, device=device)
    return model.to(device)


def find_user_gguf(gguf_dir: Path | None, generator: str) -> Path:
    """The user's file for ``generator``: ``<gguf-dir>/<generator>.gguf``; a clear error naming the path sought."""
    from quantfake.errors import MissingWeightsError

    expected = Path(gguf_dir or "<gguf-dir>") / f"{generator}.gguf"
    if gguf_dir is None or not expected.is_file():
        raise MissingWeightsError(f"GGUF weights of {generator!r}", [expected],
                                  hint=f"Put the denoiser's .gguf file at {expected} and pass --gguf-dir.")
    return expected


def user_gguf_source(path: Path) -> GGUFSource:
    """A user's file, hashed, with its tensor types (K-quants included) read from the header."""
    from quantfake.store import sha256_file

    return GGUFSource(path, sha256_file(path), "user", file_tensor_types(path))


def describe_gguf(module: nn.Module) -> dict[str, Any]:
    """Per-type counts, parameters and bytes of the module's GGUF weights, and the bits per weight they imply."""
    from diffusers.quantizers.gguf.utils import GGUFParameter

    types: Counter[str] = Counter()
    params: Counter[str] = Counter()
    nbytes: Counter[str] = Counter()
    for p in module.parameters():
        if isinstance(p, GGUFParameter):
            name = p.quant_type.name
            block, size = block_sizes(name)
            rows = p.shape[:-1].numel()
            logical = rows * (p.shape[-1] // size) * block
            types[name] += 1
            params[name] += logical
            nbytes[name] += p.numel() * p.element_size()
    return {"gguf_types": dict(types), "gguf_params": dict(params), "gguf_bytes": dict(nbytes),
            "gguf_bits_per_weight": {k: round(8 * nbytes[k] / params[k], 4) for k in types if params[k]}}


def expected_bits_per_weight(type_name: str) -> float:
    """Bits per weight of a ggml type from its block layout (Q8_0: 8.5, Q5_0: 5.5, Q4_0: 4.5)."""
    block, size = block_sizes(type_name)
    return round(8 * size / block, 4)
