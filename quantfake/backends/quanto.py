"""optimum-quanto weight quantization (int8, int4, float8), the backend of the Quanto + diffusers write-up.

Two paths, the same modules: diffusers' ``QuantoConfig`` at load when weights come from a folder (tiny and
pretrained profiles, any device), and, for pipelines built in memory (random profile), the same replacement done
here: diffusers' ``_replace_with_quanto_layers`` swaps every ``nn.Linear`` outside ``modules_to_not_convert`` /
``_keep_in_fp32_modules`` for ``optimum.quanto.QLinear`` and freezes it; :func:`quantize_linears_` does exactly
that to a module that already holds its weights (``QLinear.from_module`` + ``freeze``).
"""

from __future__ import annotations

from typing import Any

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
    return module


def is_quantized(module: nn.Module, weights: str) -> bool:
    """Whether ``module`` is a frozen ``QLinear`` whose weight carries ``weights``' qtype."""
    from optimum.quanto import QLinear, QTensor

    if not isinstance(module, QLinear) or not isinstance(module.weight, QTensor):
        return False
    return module.weight.qtype.name.startswith(QUANTO_QTYPES[weights])
