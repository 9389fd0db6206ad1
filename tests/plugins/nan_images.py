"""Test plugin: pipelines of precision ``$QF_TEST_NAN_PRECISION`` decode NaN images, as SDXL at fp8rw did
on an H100 (diffusers then casts NaN pixels to uint8 with ``RuntimeWarning: invalid value encountered in cast``).

The VAE decoder's output becomes NaN through a forward hook, so the pipeline's own post-processing
(``VaeImageProcessor.postprocess`` -> ``numpy_to_pil``) runs on it unchanged; the library has no switch for it.
"""

from __future__ import annotations

import os
from typing import Any

import torch


def decode_nan(pipe: Any) -> Any:
    """Make ``pipe``'s VAE decoder return NaN pixels (a forward hook); the hook's handle."""
    return pipe.vae.decoder.register_forward_hook(lambda _module, _args, out: torch.full_like(out, float("nan")))


def pytest_configure(config) -> None:
    from quantfake.session.efficiency import runner

    target = os.environ["QF_TEST_NAN_PRECISION"]
    load = runner.load_for_cell

    def load_nan(generator, precision, options, device):
        loaded = load(generator, precision, options, device)
        if precision == target:
            decode_nan(loaded.pipe)
        return loaded

    runner.load_for_cell = load_nan
