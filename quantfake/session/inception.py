"""The FID Inception network of a session: loaded once, on first use, and the features of each image set kept
(the evaluation reals are shared by every fidelity cell)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from quantfake.fidelity import InceptionFeatures


class InceptionCache:
    """The FID Inception network, loaded once per session on first use, and the features of each image set
    (the evaluation reals are shared by every fidelity cell)."""

    def __init__(self, weights_dir: Path | str, device: str) -> None:
        self.weights_dir, self.device = weights_dir, device
        self._network: InceptionFeatures | None = None
        self._features: dict[tuple[str, ...], NDArray[np.float64]] = {}

    def features(self, images: list[Any], hashes: list[str]) -> NDArray[np.float64]:
        """[n, 2048] features of ``images``, kept by their content hashes for the rest of the session."""
        key = tuple(hashes)
        if key not in self._features:
            if self._network is None:
                from quantfake.fidelity import InceptionFeatures

                self._network = InceptionFeatures.from_dir(self.weights_dir, device=self.device)
            self._features[key] = self._network(images)
        return self._features[key]
