"""optimum-quanto weight quantization (int8, int4, float8), the backend of the Quanto + diffusers write-up.

Two paths, the same modules: diffusers' ``QuantoConfig`` at load when weights come from a folder (tiny and
pretrained profiles, any device), and, for pipelines built in memory (random profile), the same replacement done
here: diffusers' ``_replace_with_quanto_layers`` swaps every ``nn.Linear`` outside ``modules_to_not_convert`` /
``_keep_in_fp32_modules`` for ``optimum.quanto.QLinear`` and freezes it; :func:`quantize_linears_` does exactly
that to a module that already holds its weights (``QLinear.from_module`` + ``freeze``).
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

#: precision weights name (diffusers' ``QuantoConfig.weights_dtype``) -> optimum.quanto qtype attribute
QUANTO_QTYPES: dict[str, str] = {"int8": "qint8", "int4": "qint4", "float8": "qfloat8"}


def quanto_config(weights: str) -> Any:
    """diffusers' ``QuantoConfig`` for ``weights`` (deprecated upstream for 1.0, still the documented path)."""
    import warnings

    from diffusers import QuantoConfig

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return QuantoConfig(weights_dtype=weights)


def quantize_linears_(module: nn.Module, weights: str, skip: tuple[str, ...] = ()) -> nn.Module:
    """Replace ``module``'s ``nn.Linear`` children (outside ``skip``) by frozen ``QLinear`` in place, as diffusers."""
    import optimum.quanto as oq

    qtype = getattr(oq, QUANTO_QTYPES[weights])
    for name, child in list(module.named_children()):
        if name in skip:
            continue
        if isinstance(child, nn.Linear):
            q = oq.QLinear.from_module(child, weights=qtype)
            q.freeze()
            q.requires_grad_(False)
            setattr(module, name, q)
        else:
            quantize_linears_(child, weights, skip)
    return allow_inference_mode_(module)


def allow_inference_mode_(module: nn.Module) -> nn.Module:
    """Let packed (int4) ``QLinear`` run under ``torch.inference_mode``, which quantfake generates and times under.

    optimum-quanto 0.2.7's ``WeightQBitsTensor`` fails there with "Cannot set version_counter for inference tensor"
    (optimum-quanto issue 304, closed unfixed; the view-op cause is pytorch issue 170419); int8 / float8 work.
    Each such layer runs with inference mode off and gradients off, which computes the same numbers.
    """
    from optimum.quanto import QLinear
    from optimum.quanto.tensor.weights import WeightQBitsTensor

    for sub in module.modules():
        if isinstance(sub, QLinear) and isinstance(sub.weight, WeightQBitsTensor) and "forward" not in vars(sub):
            sub.forward = functools.partial(_outside_inference_mode, sub.forward)
    return module


def _outside_inference_mode(forward: Any, *args: Any, **kwargs: Any) -> Any:
    with torch.inference_mode(False), torch.no_grad():
        return forward(*args, **kwargs)


def is_quantized(module: nn.Module, weights: str) -> bool:
    """Whether ``module`` is a frozen ``QLinear`` whose weight carries ``weights``' qtype."""
    from optimum.quanto import QLinear, QTensor

    if not isinstance(module, QLinear) or not isinstance(module.weight, QTensor):
        return False
    return module.weight.qtype.name.startswith(QUANTO_QTYPES[weights])
