"""Input representation of a detector: what its first layer sees (RGB pixels or the NPR residual).

Why: QMDD (IJCAI 2025) claims the NPR residual input (Tan et al., CVPR 2024) is quantization-friendly.
To measure that instead of believing it, the convolutional RGB detectors (``r50nodown``, ``r50tf``) can be
trained and evaluated on the residual; their cells then differ from the RGB ones only in the input.
``npr`` is not offered for the ``npr`` detector (it already is NPR) nor for the CLIP detectors (their
frozen towers were pretrained on RGB).  ``rgb`` is the default and leaves every module untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from quantfake.errors import UnknownIdError

from .npr import npr_residual

DEFAULT_REPRESENTATION = "rgb"


@dataclass(frozen=True)
class Representation:
    """A detector input; ``detectors`` lists the detector ids that accept it (None: every detector)."""

    id: str
    description: str
    detectors: tuple[str, ...] | None = None

    def accepts(self, detector_id: str) -> bool:
        return self.detectors is None or detector_id in self.detectors


REPRESENTATIONS: dict[str, Representation] = {
    r.id: r
    for r in (
        Representation("rgb", "normalized RGB pixels, as upstream (default)"),
        Representation("npr", "NPR residual x - up2(down2(x)) (nearest), scaled by 2/3, as NPR's conv1 input",
                       detectors=("r50nodown", "r50tf")),
    )
}


def get_representation(representation_id: str) -> Representation:
    """The representation ``representation_id``; ``UnknownIdError`` (a ``ValueError``) lists valid ids."""
    try:
        return REPRESENTATIONS[representation_id]
    except (KeyError, TypeError):
        raise UnknownIdError("representation", representation_id, REPRESENTATIONS) from None


def check_representation(detector_id: str, representation_id: str) -> Representation:
    """The representation, after checking that ``detector_id`` accepts it (``ValueError`` otherwise)."""
    rep = get_representation(representation_id)
    if not rep.accepts(detector_id):
        accepting = [r.id for r in REPRESENTATIONS.values() if r.accepts(detector_id)]
        raise ValueError(
            f"detector {detector_id!r} does not accept representation {representation_id!r} "
            f"(it accepts: {', '.join(accepting)}); {representation_id!r} is for: {', '.join(rep.detectors or ())}"
        )
    return rep


def representations_for(detector_id: str, representation_ids: tuple[str, ...]) -> tuple[str, ...]:
    """The subset of ``representation_ids`` that ``detector_id`` accepts (the cell grid's axis)."""
    return tuple(r for r in representation_ids if get_representation(r).accepts(detector_id))


def detector_token(detector_id: str, representation_id: str = DEFAULT_REPRESENTATION) -> str:
    """``r50nodown`` for RGB, ``r50nodown+npr`` otherwise: used in cell ids, file names and cache keys."""
    return detector_id if representation_id == DEFAULT_REPRESENTATION else f"{detector_id}+{representation_id}"


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
