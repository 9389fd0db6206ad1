"""Test plugin: cells of precision ``$QF_TEST_OOM_PRECISION`` run out of memory (torch's own error).

Where (``$QF_TEST_OOM_AT``): ``cell`` (default) raises in the fidelity cell before it computes; ``generation`` raises
inside the generation of that precision's images (what a detection or fidelity cell does first). The efficiency
cell's denoiser step raises inside the runner's OOM guard with ``QF_TEST_OOM_STEP=1``.
"""

from __future__ import annotations

import os

import torch


def _oom(what: str) -> torch.OutOfMemoryError:
    return torch.OutOfMemoryError(f"CUDA out of memory (injected by tests/plugins/oom_cell.py for {what})")


def pytest_configure(config) -> None:
    from quantfake.session import fakes, fidelity_cell
    from quantfake.session.efficiency import runner

    target, where = os.environ["QF_TEST_OOM_PRECISION"], os.environ.get("QF_TEST_OOM_AT", "cell")
    measure, generate, step = fidelity_cell.measure_fidelity, fakes.generate, runner.measure_denoiser_step

    def fidelity_with_oom(session, cell):
        if cell.precision == target:
            raise _oom(cell.id)
        return measure(session, cell)

    def generate_with_oom(loaded, req, store, **kw):
        if loaded.precision.id == target:
            raise _oom(f"generating {loaded.generator.id}-{loaded.precision.id} {req.mode}")
        return generate(loaded, req, store, **kw)

    def step_with_oom(model, inputs, device, **kw):
        if getattr(model, "dtype", None) is not None and os.environ.get("QF_TEST_OOM_STEP") == "1":
            raise _oom("a denoiser step")
        return step(model, inputs, device, **kw)

    if where == "generation":
        fakes.generate = generate_with_oom
    else:
        fidelity_cell.measure_fidelity = fidelity_with_oom
    runner.measure_denoiser_step = step_with_oom
