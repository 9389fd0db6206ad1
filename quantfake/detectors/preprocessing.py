"""Explicit, recordable test-time preprocessing policies.

Every detector's upstream test transform is written down as a :class:`PreprocessPolicy`
so that each score can record exactly what the detector saw (``as_dict``) and the score
cache can key on it (``sha256``).  Resizing and cropping mirror torchvision's PIL code
path (which the upstream repos use): ``Resize(int)`` scales the shorter side keeping the
aspect ratio (long side truncated with ``int``), ``Resize((h, w))`` is exact, both via
``PIL.Image.resize`` (antialiased when shrinking), and ``CenterCrop`` zero-pads images
smaller than the crop and places the window at ``int(round((H - h) / 2))``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import torch

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

INTERPOLATIONS: dict[str, int] = {
    "nearest": Image.NEAREST,
    "bilinear": Image.BILINEAR,
    "bicubic": Image.BICUBIC,
    "lanczos": Image.LANCZOS,
}

ImageBatch = Sequence[Image.Image] | np.ndarray


@dataclass(frozen=True)
class PreprocessPolicy:
    """Resize (optional) -> centre crop (optional) -> [0, 1] -> (x - mean) / std.

    ``resize``: ``None`` (keep native resolution), an int (shorter side, aspect kept) or
    ``(height, width)`` (exact).  ``crop``: ``None`` or the side of a square centre crop.
    ``note`` says which upstream file the choice comes from.
    """

    resize: int | tuple[int, int] | None
    crop: int | None
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    note: str = ""

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"unknown interpolation {self.interpolation!r}; accepted: {', '.join(INTERPOLATIONS)}"
            )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready record of the policy (what every result stores)."""
        d = asdict(self)
        d["resize"] = list(self.resize) if isinstance(self.resize, tuple) else self.resize
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    def sha256(self) -> str:
        """Stable hash of everything that changes the pixels fed to the detector."""
        d = self.as_dict()
        d.pop("note")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()

    def __call__(self, images: ImageBatch) -> torch.Tensor:
        """List of RGB PIL images or uint8 NHWC array -> float32 NCHW tensor."""
        import torch  # the policy itself is registry data; torch only to apply it

        arrays = [self._one(img) for img in as_pil_list(images)]
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise ValueError(
                f"images end up with different sizes {sorted(shapes)} under policy {self.as_dict()}; "
                "use a policy with a fixed resize/crop or score them in separate calls"
            )
        batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div_(255.0)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(1, 3, 1, 1)
        return (batch - mean) / std

    def _one(self, img: Image.Image) -> np.ndarray:
        if self.resize is not None:
            img = img.resize(resized_wh(img.size, self.resize), INTERPOLATIONS[self.interpolation])
        arr = np.asarray(img, dtype=np.uint8)
        if self.crop is not None:
            arr = center_crop(arr, self.crop)
        return arr


def resized_wh(size_wh: tuple[int, int], resize: int | tuple[int, int]) -> tuple[int, int]:
    """Output (width, height) of torchvision ``Resize(resize)`` for an image of ``size_wh``."""
    w, h = size_wh
    if isinstance(resize, tuple):
        return resize[1], resize[0]
    if w <= h:
        return resize, int(resize * h / w)
    return int(resize * w / h), resize


def center_crop(arr: np.ndarray, size: int) -> np.ndarray:
    """torchvision ``CenterCrop(size)`` on an HWC array, zero-padding too-small images."""
    h, w = arr.shape[:2]
    if h < size or w < size:
        # torchvision pads diff // 2 before and (diff + 1) // 2 after, with zeros
        dh, dw = max(size - h, 0), max(size - w, 0)
        arr = np.pad(arr, ((dh // 2, (dh + 1) // 2), (dw // 2, (dw + 1) // 2), (0, 0)))
        h, w = arr.shape[:2]
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return arr[top : top + size, left : left + size]


def as_pil_list(images: ImageBatch) -> list[Image.Image]:
    if isinstance(images, np.ndarray):
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(
                f"expected a uint8 NHWC array with 3 channels, got dtype={images.dtype} shape={images.shape}"
            )
        return [Image.fromarray(a) for a in images]
    out = []
    for img in images:
        if not isinstance(img, Image.Image):
            raise TypeError(f"expected PIL.Image.Image or a uint8 NHWC numpy array, got {type(img).__name__}")
        out.append(img.convert("RGB") if img.mode != "RGB" else img)
    return out
