"""What does quantization cost or save at run time? Latency, memory, weight bytes, FLOPs and roofline per cell.

Thin pytest-benchmark cells over :mod:`quantfake.efficiency.runner`; every measurement lands in
``benchmark.extra_info``. Profiles: ``tiny`` times the toy pipelines on CPU (wall time, peak RSS); ``random``
builds the full-size denoiser with random weights (GPU only); ``pretrained`` times real weights.
Environment knobs (set by ``scripts/gpu_efficiency.sh``): ``QUANTFAKE_EFFIC_DEADLINE`` (epoch seconds after
which remaining cells skip, so a time-boxed run still writes its JSON), ``QUANTFAKE_TF32=1`` (fp32
matmuls may use TF32; recorded in every cell) and ``QUANTFAKE_E2E_BATCHES`` (batches timed end to end after batch 1,
default 4; empty for none).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from quantfake.efficiency import runner
from quantfake.efficiency.runner import CellSkipped


def _cell(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``, with the runner's CellSkipped turned into a pytest skip and an out-of-memory cell into a
    failure (its JSON entry is written first, with ``oom`` and the error)."""
    try:
        extra = fn(*args)
    except CellSkipped as skip:
        pytest.skip(str(skip))
    if isinstance(extra, dict) and extra.get("oom"):
        pytest.fail(f"out of memory (recorded in the benchmark JSON; other cells go on): {extra.get('oom_error')}",
                    pytrace=False)
    if isinstance(extra, dict) and extra.get("memory_fit_refused"):
        pytest.fail(f"{extra['memory_fit_refused']} (recorded in the benchmark JSON; other cells go on)", pytrace=False)
    return extra


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Cells from the registries filtered by --generators / --precisions / --detectors / --compile."""
    from fixtures.plugin import bench_options

    for name in [f for f in runner.PARAMETRIZED_FIXTURES if f in metafunc.fixturenames]:
        params = runner.cell_params(name, bench_options(metafunc.config))
        metafunc.parametrize(name, [pytest.param(value, id=cell_id) for cell_id, value in params])


@pytest.fixture(scope="module")
def effic_device(qf_options) -> str:
    return runner.efficiency_device(qf_options.device, qf_options.vram_budget_gib)


@pytest.fixture(autouse=True)
def _deadline_and_cleanup():
    _cell(runner.start_cell)
    yield
    runner.end_cell()


def test_generator_efficiency(effic_cell, qf_options, effic_device, benchmark) -> None:
    """One denoiser step (and, with a whole pipeline, one image end to end) at one precision."""
    extra = _cell(runner.run_generator_cell, effic_cell, qf_options, effic_device, benchmark)
    assert extra["step_ms"] > 0 and extra["flops_per_step"] > 0 and extra["weights_bytes"] > 0


def test_generation_overhead(overhead_generator, qf_options, effic_device, benchmark) -> None:
    """Guard: the suite's generation path is not measurably slower than a bare diffusers call."""
    extra = _cell(runner.run_overhead_cell, overhead_generator, qf_options, effic_device, benchmark)
    reason = runner.overhead_inconclusive(extra)
    if reason:
        pytest.skip(reason)
    _low, high = extra["overhead_ratio_ci95"]  # the whole CI must sit under the tolerance, not just its low end
    assert high <= 1.0 + extra["overhead_tolerance"], runner.overhead_message(extra)


def test_detector_efficiency(det_cell, qf_options, effic_device, benchmark) -> None:
    """Images/s and peak memory of one detector at one dtype and batch size, next to its FLOP-bound limit."""
    extra = _cell(runner.run_detector_cell, det_cell, qf_options, effic_device, benchmark)
    assert extra["images_per_s"] > 0 and extra["flops_per_image"] > 0
