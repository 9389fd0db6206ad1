"""The detector-precision registry: ids of the detector axis and how each is applied (data; no torch).

:mod:`quantfake.detector_quant` applies them. Compute dtypes are the short ids of
:data:`quantfake.precisions.COMPUTE_DTYPES`, the one table of dtype names generators and detectors share.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from quantfake.errors import UnknownIdError
from quantfake.precisions import dtype_from_name

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class DetectorPrecision:
    """One detector precision id and how it is applied."""

    id: str
    kind: str  # "reference" | "cast" | "autocast" | "int8" | "fake_quant" | "bnb_nf4"
    weight_bits: int
    description: str
    dtype: str | None = None  # short compute dtype id (quantfake.precisions.COMPUTE_DTYPES); None: not a cast
    requires_cuda: bool = False
    needs_calibration: bool = False  # calib_batches required

    @property
    def torch_dtype(self) -> torch.dtype | None:
        """:attr:`dtype` as a ``torch.dtype`` (torch loads here, not with the registry)."""
        return None if self.dtype is None else dtype_from_name(self.dtype)


DETECTOR_PRECISIONS: dict[str, DetectorPrecision] = {
    p.id: p
    for p in (
        DetectorPrecision("fp32", "reference", 32, "full precision reference", "fp32"),
        DetectorPrecision("fp16", "cast", 16, "weights and compute in float16", "fp16"),
        DetectorPrecision("bf16", "cast", 16, "weights and compute in bfloat16", "bf16"),
        DetectorPrecision("int8", "int8", 8, "static int8 convs (FX PTQ) + dynamic int8 Linear", None,
                          needs_calibration=True),
        DetectorPrecision("w4", "fake_quant", 4, "4-bit per-channel weights (simulated), min-max"),
        DetectorPrecision("w3", "fake_quant", 3, "3-bit per-channel weights (simulated), min-max"),
        DetectorPrecision("w2", "fake_quant", 2, "2-bit per-channel weights (simulated), min-max"),
        DetectorPrecision("nf4", "bnb_nf4", 4, "bitsandbytes NF4 Linear layers (convs stay fp32)",
                          requires_cuda=True),
        # last, so the covering grid keeps the detector each earlier id was paired with
        DetectorPrecision("fp16amp", "autocast", 32, "fp32 weights, torch.autocast float16 compute (mixed precision)",
                          "fp16"),
        DetectorPrecision("bf16amp", "autocast", 32, "fp32 weights, torch.autocast bfloat16 compute (mixed precision)",
                          "bf16"),
    )
}


def get_detector_precision(precision: str) -> DetectorPrecision:
    """Registry lookup; an unknown id raises with the list of valid ids."""
    if precision not in DETECTOR_PRECISIONS:
        raise UnknownIdError("detector precision", precision, DETECTOR_PRECISIONS)
    return DETECTOR_PRECISIONS[precision]
