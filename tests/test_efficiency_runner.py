"""The efficiency cells' decisions (which cells exist, which skip and why), without timing anything."""

from __future__ import annotations

import pytest

from quantfake.options import build_options
from quantfake.session.efficiency.cells import DetectorEfficiencyCell, EfficiencyCell
from quantfake.session.efficiency.runner import (
    DEADLINE_ENV,
    cell_params,
    deadline_skip_reason,
    detector_skip_reason,
    generator_skip_reason,
    overhead_message,
)


def test_cell_params_follow_the_options() -> None:
    o = build_options({"generators": "sd3,flux", "precisions": "fp32,nf4", "detectors": "npr", "device": "cpu"})
    assert [i for i, _ in cell_params("effic_cell", o)] == [  # a pipeline's step and end-to-end cells side by side
        "effic-sd3-fp32", "effic-e2e-sd3-fp32-b1", "effic-sd3-nf4", "effic-e2e-sd3-nf4-b1",
        "effic-flux-fp32", "effic-e2e-flux-fp32-b1", "effic-flux-nf4", "effic-e2e-flux-nf4-b1"]
    on_gpu = build_options({"generators": "sd3", "precisions": "nf4", "device": "cuda"})
    assert [i for i, _ in cell_params("effic_cell", on_gpu)] == [
        "effic-sd3-nf4", "effic-e2e-sd3-nf4-b1", "effic-e2e-sd3-nf4-b4"]
    assert [i for i, _ in cell_params("overhead_generator", o)] == ["effic-overhead-sd3", "effic-overhead-flux"]
    assert all(i.startswith("effic-det-npr-") for i, _ in cell_params("det_cell", o))
    random = build_options({"profile": "random", "generators": "sd3"})
    # the random profile builds whole full-size pipelines: the overhead guard runs there too
    assert cell_params("overhead_generator", random) == [("effic-overhead-sd3", "sd3")]
    with pytest.raises(ValueError, match="accepted"):
        cell_params("nope", o)


def test_skip_reasons_name_the_cause() -> None:
    assert generator_skip_reason(EfficiencyCell("sd3", "fp32", False), "cpu", "tiny") is None
    assert "GPU only" in generator_skip_reason(EfficiencyCell("sdxl", "bf16", False), "cpu", "random")
    assert "GPU only" in generator_skip_reason(EfficiencyCell("sd3", "bf16", True), "cpu", "tiny")
    assert "CUDA" in generator_skip_reason(EfficiencyCell("flux", "fp8dq", False), "cpu", "tiny")
    assert detector_skip_reason(DetectorEfficiencyCell("npr", "fp32", 1), "cpu", "tiny") is None
    assert "GPU only" in detector_skip_reason(DetectorEfficiencyCell("npr", "fp16", 1), "cpu", "tiny")


def test_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DEADLINE_ENV, raising=False)
    assert deadline_skip_reason() is None
    monkeypatch.setenv(DEADLINE_ENV, "100")
    assert deadline_skip_reason(now=99.0) is None
    assert "time budget spent" in deadline_skip_reason(now=101.0)


def test_overhead_message_reports_ratio_and_tolerance() -> None:
    extra = {"generator": "sd3", "overhead_pct": 31.2, "overhead_ratio_ci95": [1.27, 1.35],
             "overhead_tolerance": 0.25}
    msg = overhead_message(extra)
    assert "sd3" in msg and "31.2" in msg and "1.270" in msg and "25%" in msg


def test_overhead_tolerance_is_the_gpu_target_on_cuda() -> None:
    from quantfake.session.efficiency.runner import overhead_tolerance

    assert overhead_tolerance("cuda:1") == 0.03
    assert overhead_tolerance("cpu") == 0.25


def test_overhead_guard_is_inconclusive_only_when_its_ci_spans_the_band() -> None:
    from quantfake.session.efficiency.runner import overhead_inconclusive

    noisy = {"generator": "sd3", "overhead_ratio_ci95": [0.51, 1.72], "overhead_tolerance": 0.25}
    assert "inconclusive" in overhead_inconclusive(noisy) and "0.510..1.720" in overhead_inconclusive(noisy)
    slow = {"generator": "sd3", "overhead_ratio_ci95": [1.30, 1.40], "overhead_tolerance": 0.25}
    assert overhead_inconclusive(slow) is None  # a clear slow-down is judged (and fails the guard)


def test_e2e_batches_follow_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from quantfake.session.efficiency.runner import E2E_BATCHES, E2E_BATCHES_ENV, e2e_batches

    monkeypatch.delenv(E2E_BATCHES_ENV, raising=False)
    assert e2e_batches("cuda:0") == (1, *E2E_BATCHES) and e2e_batches("cpu") == (1,)
    monkeypatch.setenv(E2E_BATCHES_ENV, "")
    assert e2e_batches("cuda:0") == (1,)
    monkeypatch.setenv(E2E_BATCHES_ENV, "2,8")
    assert e2e_batches("cuda:0") == (1, 2, 8)
    for bad in ("1", "four"):
        monkeypatch.setenv(E2E_BATCHES_ENV, bad)
        with pytest.raises(ValueError, match=f"{E2E_BATCHES_ENV}={bad!r}: expected"):
            e2e_batches("cuda:0")


def test_every_timed_measurement_has_rounds_for_a_confidence_interval() -> None:
    from quantfake.session.efficiency.runner import ROUNDS, rounds_for

    for device in ("cpu", "cuda:1"):
        for measure in ("step", "e2e", "e2e_batch", "detector"):
            warmup, rounds = rounds_for(device, measure)
            assert warmup >= 1 and rounds >= 2, (device, measure)
    assert rounds_for("cuda:0", "e2e_batch") == ROUNDS["cuda"]["e2e_batch"]
