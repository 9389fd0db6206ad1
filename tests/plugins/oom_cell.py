"""Test plugin: cells of precision ``$QF_TEST_OOM_PRECISION`` run out of memory (torch's own error).

The fidelity cell raises before computing; the efficiency cell's denoiser step raises inside the runner's OOM guard.
"""

from __future__ import annotations

import os

import torch


def _oom(what: str) -> torch.OutOfMemoryError:
    return torch.OutOfMemoryError(f"CUDA out of memory (injected by tests/plugins/oom_cell.py for {what})")


def pytest_configure(config) -> None:
    from quantfake.efficiency import runner
    from quantfake.world import World

    target = os.environ["QF_TEST_OOM_PRECISION"]
    fidelity_cell, step = World.fidelity_cell, runner.measure_denoiser_step

    def fidelity_with_oom(self, cell):
        if cell.precision == target:
            raise _oom(cell.id)
        return fidelity_cell(self, cell)

    def step_with_oom(model, inputs, device, **kw):
        if getattr(model, "dtype", None) is not None and os.environ.get("QF_TEST_OOM_STEP") == "1":
            raise _oom("a denoiser step")
        return step(model, inputs, device, **kw)

    World.fidelity_cell = fidelity_with_oom
    runner.measure_denoiser_step = step_with_oom
