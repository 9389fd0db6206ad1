"""What does quantization cost or save at run time? Latency, memory, weight bytes, FLOPs and roofline per cell.

Thin pytest-benchmark cells over :mod:`quantfake.session.efficiency.runner`: pytest-benchmark times every round (the
runner's sampler is ``benchmark.pedantic``), every measurement lands in ``benchmark.extra_info``, and each cell is
recorded in the run record (kind ``efficiency``) for ``quantfake compare``; under pytest-xdist too. Profiles:
``tiny`` times the toy pipelines on CPU (wall time, peak RSS); ``random`` builds full-size pipelines with random
weights (GPU only); ``pretrained`` times real weights.
Environment knobs (set by ``scripts/gpu_efficiency.sh``): ``QUANTFAKE_EFFIC_DEADLINE`` (epoch seconds after
which remaining cells skip, so a time-boxed run still writes its JSON), ``QUANTFAKE_TF32=1`` (fp32
matmuls may use TF32; recorded in every cell) and ``QUANTFAKE_E2E_BATCHES`` (batches timed end to end after batch 1,
default 4; empty for none).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from quantfake.session.efficiency import runner
from quantfake.session.efficiency.runner import CellSkipped


def _cell(recorder: Any, request: pytest.FixtureRequest, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` recorded in the run record; the runner's CellSkipped becomes a pytest skip, and an
    out-of-memory cell or one that timed non-finite images a failure (its run-record entry and JSON entry are
    written first, with the error or the timings)."""
    try:
        extra = fn(*args)
    except CellSkipped as skip:
        pytest.skip(str(skip))
    result = runner.efficiency_result(request.node.callspec.id, extra)
    recorder.add(result)
    if extra.get("oom"):
        pytest.fail(f"out of memory (recorded in the run record and the benchmark JSON; other cells go on): "
                    f"{extra.get('oom_error')}", pytrace=False)
    if extra.get("memory_fit_refused"):
        pytest.fail(f"{extra['memory_fit_refused']} (recorded in the run record and the benchmark JSON; other cells "
                    "go on)", pytrace=False)
    if result.status == "failed":
        pytest.fail(f"{result.message} (timings recorded in the run record and the benchmark JSON; other cells go on)",
                    pytrace=False)
    return extra


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Cells from the registries filtered by --generators / --precisions / --detectors / --compile."""
    from fixtures.plugin import bench_options

    for name in [f for f in runner.PARAMETRIZED_FIXTURES if f in metafunc.fixturenames]:
        params = runner.cell_params(name, bench_options(metafunc.config))
        metafunc.parametrize(name, [pytest.param(value, id=cell_id, marks=[
            pytest.mark.xdist_group(runner.xdist_group(cell_id, value))]) for cell_id, value in params])


@pytest.fixture(scope="module")
def effic_device(qf_device_options) -> str:
    return runner.efficiency_device(qf_device_options.device, qf_device_options.vram_budget_gib)


@pytest.fixture(autouse=True)
def _deadline_and_cleanup():
    try:
        runner.start_cell()
    except CellSkipped as skip:
        pytest.skip(str(skip))
    yield
    runner.end_cell()


def test_generator_efficiency(effic_cell, qf_options, effic_device, benchmark, qf_recorder, request) -> None:
    """One denoiser step, or whole images end to end, at one precision."""
    extra = _cell(qf_recorder, request, runner.run_generator_cell, effic_cell, qf_options, effic_device, benchmark)
    assert extra["latency_ms"] > 0
    if effic_cell.measure == "step":
        assert extra["flops_per_step"] > 0 and extra["weights_bytes"] > 0


def test_generation_overhead(overhead_generator, qf_options, effic_device, benchmark, qf_recorder, request) -> None:
    """Guard: the suite's generation path is not measurably slower than a bare diffusers call."""
    extra = _cell(qf_recorder, request, runner.run_overhead_cell, overhead_generator, qf_options, effic_device,
                  benchmark)
    reason = runner.overhead_inconclusive(extra)
    if reason:
        pytest.skip(reason)
    _low, high = extra["overhead_ratio_ci95"]  # the whole CI must sit under the tolerance, not just its low end
    assert high <= 1.0 + extra["overhead_tolerance"], runner.overhead_message(extra)


def test_detector_efficiency(det_cell, qf_options, effic_device, benchmark, qf_recorder, request) -> None:
    """Images/s and peak memory of one detector at one dtype and batch size, next to its FLOP-bound limit."""
    extra = _cell(qf_recorder, request, runner.run_detector_cell, det_cell, qf_options, effic_device, benchmark)
    assert extra["images_per_s"] > 0 and extra["flops_per_image"] > 0
