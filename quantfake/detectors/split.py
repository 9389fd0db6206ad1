"""The features/head split every detector module follows.

Training (``train.py``) and the NPR-residual wrapper (``representation.py``) rely on it: frozen
features are computed once, and only ``head_modules()`` are fitted on ``forward_head``'s output.
"""

from __future__ import annotations

import torch


class FeaturesThenHead:
    """Mixin placed before ``nn.Module`` (or a trunk such as ``ResNet``): ``forward`` = head(features(x)).

    Subclasses provide ``forward_features``, ``forward_head`` and ``head_modules()`` (the modules a head-only
    fine-tune trains). No stubs here: in front of a trunk in the MRO they would shadow its ``forward_features``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))  # type: ignore[attr-defined]
