"""A scoring batch that runs out of memory is halved and retried, keeps what was scored, and is remembered;
other errors, and running out of memory at batch 1, still surface (the cell is then recorded as out of memory)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from quantfake.detectors import load_detector, score_images, scoring


class RunsOutAbove(nn.Module):
    """The detector's module, except that a batch larger than ``limit`` fails as CUDA's allocator does."""

    def __init__(self, inner: nn.Module, limit: int, message: str = "CUDA out of memory. Tried to allocate 16.00 GiB.",
                 error: type[Exception] = torch.OutOfMemoryError) -> None:
        super().__init__()
        self.inner, self.limit, self.message, self.error, self.batches = inner, limit, message, error, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(len(x))
        if len(x) > self.limit:
            raise self.error(self.message)
        return self.inner(x)


@pytest.fixture
def detector(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(scoring, "_FITTING_BATCH", {})
    return load_detector("r50nodown", "random")


def _images(n: int) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (n, 48, 48, 3), dtype=np.uint8)


def test_out_of_memory_halves_the_batch_keeps_every_score_and_remembers_the_fit(detector) -> None:
    images = _images(5)
    reference = score_images(detector, images, batch_size=1, progress=False)
    limited = RunsOutAbove(detector.module, limit=2)
    squeezed = detector.with_module(limited, detector.precision)
    with pytest.warns(UserWarning, match=r"r50nodown on cpu: out of memory at batch 4 of 48x48 px images; "
                                             r"retrying at 2"):
        scores = score_images(squeezed, images, batch_size=4, progress=False)
    assert limited.batches == [4, 2, 2, 1]
    np.testing.assert_allclose(scores, reference, rtol=1e-5, atol=1e-6)
    limited.batches.clear()
    score_images(squeezed, images, batch_size=4, progress=False)
    assert limited.batches == [2, 2, 1], "the next call starts at the batch that fit"


def test_out_of_memory_at_batch_one_and_other_errors_surface(detector) -> None:
    with pytest.raises(torch.OutOfMemoryError), pytest.warns(UserWarning, match="retrying at 1"):
        score_images(detector.with_module(RunsOutAbove(detector.module, limit=0), detector.precision), _images(3),
                     batch_size=2, progress=False)
    scoring._FITTING_BATCH.clear()  # the failed call above remembered batch 1
    broken = RunsOutAbove(detector.module, limit=0, message="mat1 and mat2 shapes cannot be multiplied",
                          error=RuntimeError)
    with pytest.raises(RuntimeError, match="shapes"):
        score_images(detector.with_module(broken, detector.precision), _images(3), batch_size=2, progress=False)
    assert broken.batches == [2], "a non-memory error is not retried"
