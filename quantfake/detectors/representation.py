"""Input representation of a detector: what its first layer sees (RGB pixels or the NPR residual).

The ids are registry data (:data:`quantfake.detectors.registry.REPRESENTATIONS`); this module applies them.

Why: QMDD (IJCAI 2025) claims the NPR residual input (Tan et al., CVPR 2024) is quantization-friendly.
To measure that instead of believing it, the convolutional RGB detectors (``r50nodown``, ``r50tf``) can be
trained and evaluated on the residual; their cells then differ from the RGB ones only in the input.
``npr`` is not offered for the ``npr`` detector (it already is NPR) nor for the CLIP detectors (their
frozen towers were pretrained on RGB).  ``rgb`` is the default and leaves every module untouched.
"""

from __future__ import annotations

import torch
from torch import nn

from .npr import npr_residual
from .registry import DEFAULT_REPRESENTATION, get_representation


class ResidualInput(nn.Module):
    """Feeds the wrapped detector ``npr_residual(x) * 2/3`` instead of ``x``.

    The wrapped module sits under ``inner`` so its state-dict keys become ``inner.*``: an NPR-input
    checkpoint cannot be loaded strictly into an RGB detector (or the reverse) by mistake.
    """

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    @staticmethod
    def residual(x: torch.Tensor) -> torch.Tensor:
        """Upstream NPR's ``conv1`` input, bit for bit (``* 2.0 / 3.0`` in that order, as npr.py)."""
        return npr_residual(x) * 2.0 / 3.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(self.residual(x))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner.forward_features(self.residual(x))  # type: ignore[operator]

    def forward_head(self, feats: torch.Tensor) -> torch.Tensor:
        return self.inner.forward_head(feats)  # type: ignore[operator]

    def head_modules(self) -> list[nn.Module]:
        """The wrapped detector's head (train.py's head-only and ``requires_grad`` logic uses it)."""
        return self.inner.head_modules()  # type: ignore[operator]


def apply_representation(module: nn.Module, representation_id: str) -> nn.Module:
    """``module`` itself for RGB (no wrapper, identical state dict), wrapped for a residual input."""
    get_representation(representation_id)
    return module if representation_id == DEFAULT_REPRESENTATION else ResidualInput(module)
