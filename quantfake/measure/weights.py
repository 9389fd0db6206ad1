"""Bytes that a model's weights really occupy, for quantized storage formats where numel*dtype lies.

Why not ``sum(p.numel() * p.element_size())``: bitsandbytes keeps 4-bit weights as packed uint8 plus
per-block scales hanging off ``quant_state``; int8 weights carry a separate ``SCB`` scale vector;
torchao tensor subclasses report the *logical* dtype (e.g. float32) while storing int8/float8 inner
tensors. Every physical tensor is counted once (shared storage is de-duplicated).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

_MAX_NESTING = 8  # quant states / subclasses nest 2-3 deep; guards against reference cycles


def _is_plain_tensor(t: torch.Tensor) -> bool:
    """A tensor whose own storage is what it occupies (plain Tensor, Parameter or a storage-backed subclass)."""
    if type(t) in (torch.Tensor, nn.Parameter) or not hasattr(t, "__tensor_flatten__"):
        return True
    return False


def _quant_state_tensors(state: Any, depth: int) -> Iterator[torch.Tensor]:
    """Tensors of a bitsandbytes QuantState (absmax, code, offset, nested state2); duck-typed, no bnb import."""
    if state is None or depth > _MAX_NESTING:
        return
    if isinstance(state, (list, tuple)):  # legacy bnb list-form quant state
        for item in state:
            if isinstance(item, torch.Tensor):
                yield item
            elif hasattr(item, "absmax"):
                yield from _quant_state_tensors(item, depth + 1)
        return
    for name in ("absmax", "code", "offset"):
        value = getattr(state, name, None)
        if isinstance(value, torch.Tensor):
            yield value
    yield from _quant_state_tensors(getattr(state, "state2", None), depth + 1)


def _storage_leaves(t: torch.Tensor, depth: int = 0) -> Iterator[torch.Tensor]:
    """The physical tensors behind one parameter or buffer, including quantization side tensors."""
    if depth > _MAX_NESTING:
        raise ValueError(f"tensor subclass {type(t).__name__} nests deeper than {_MAX_NESTING} levels")
    if _is_plain_tensor(t):
        yield t
    else:  # torchao-style wrapper subclass: its logical dtype is not its storage
        inner_names, _ctx = t.__tensor_flatten__()
        for name in inner_names:
            yield from _storage_leaves(getattr(t, name), depth + 1)
    # bitsandbytes Params4bit: per-block absmax + codebook (+ nested double-quant state)
    yield from _quant_state_tensors(getattr(t, "quant_state", None), depth + 1)
    # bitsandbytes Int8Params: per-row scales (CB aliases the int8 data itself; de-dup drops it)
    for name in ("SCB", "CB"):
        extra = getattr(t, name, None)
        if isinstance(extra, torch.Tensor):
            yield extra


def _dedup_key(t: torch.Tensor) -> tuple[Any, ...]:
    """Same device, address and size means the same bytes (tied weights, aliased CB/data)."""
    if t.device.type == "meta" or t.numel() == 0:
        return ("id", id(t))
    return (t.device.type, t.device.index, t.data_ptr(), t.numel() * t.element_size())


def iter_storage_tensors(module: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """Every distinct physical tensor of ``module`` (parameters, buffers and their quantization state)."""
    seen: set[tuple[Any, ...]] = set()
    named = list(module.named_parameters(remove_duplicate=True)) + list(module.named_buffers(remove_duplicate=True))
    for name, tensor in named:
        if tensor is None:
            continue
        for leaf in _storage_leaves(tensor):
            key = _dedup_key(leaf)
            if key in seen:
                continue
            seen.add(key)
            yield name, leaf


def _leaf_bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def weights_bytes(module: nn.Module) -> int:
    """Bytes held by the parameters and buffers of ``module``, counting quantized storage as stored.

    Counts: plain tensors at their element size (so diffusers layerwise casting to float8 counts
    1 byte/element), bitsandbytes Params4bit packed data + quant_state tensors, Int8Params + SCB,
    torchao subclasses through their ``__tensor_flatten__`` inner tensors. Tensors that only
    partially overlap another's storage are counted twice (not seen in practice).
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"weights_bytes expects a torch.nn.Module, got {type(module).__name__}")
    return sum(_leaf_bytes(t) for _name, t in iter_storage_tensors(module))


def weights_bytes_by_dtype(module: nn.Module) -> dict[str, int]:
    """Bytes per storage dtype (e.g. ``{"uint8": ..., "float32": ...}``): shows *what* a quantizer left unquantized."""
    totals: Counter[str] = Counter()
    for _name, t in iter_storage_tensors(module):
        totals[str(t.dtype).removeprefix("torch.")] += _leaf_bytes(t)
    return dict(totals)


def component_weights_bytes(pipe: Any) -> dict[str, int]:
    """Weight bytes of each nn.Module component of a diffusers pipeline (tokenizers, schedulers skipped).

    Components sharing storage (rare) are counted in each; sum the dict only for distinct components.
    """
    components = getattr(pipe, "components", None)
    if not isinstance(components, dict):
        raise TypeError(
            f"component_weights_bytes expects a diffusers pipeline with a .components dict, got {type(pipe).__name__}"
        )
    return {name: weights_bytes(comp) for name, comp in components.items() if isinstance(comp, nn.Module)}
