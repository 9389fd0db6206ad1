"""CPU tests of quantfake.session.efficiency.cells on the tiny denoisers: real shapes, real forwards, real counts."""

from __future__ import annotations

import functools

import diffusers
import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from quantfake.errors import UnknownIdError
from quantfake.generators import GENERATORS, get_generator, step_batch, text_sequence_length
from quantfake.measure import count_flops, weights_bytes
from quantfake.profiles import TINY_SIZE, TINY_VAE_FACTOR
from quantfake.session.efficiency.cells import (
    EfficiencyCell,
    denoiser_inputs,
    detector_cells,
    detector_input_size,
    efficiency_cells,
    latent_size_for,
    measure_denoiser_step,
    measure_detector,
    measure_generation_overhead,
    measure_pipeline_e2e,
    oom_guarded,
    reference_step_flops,
)
from quantfake.tiny import tiny_denoiser_config

# the tiny configs accept any latent divisible by 8 (three UNet downsamplings); 8 keeps each forward cheap
TEST_SIZE = 8 * TINY_VAE_FACTOR
TINY_LATENT = latent_size_for("tiny", TEST_SIZE)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def build_tiny_denoiser(generator_id: str) -> torch.nn.Module:
    """The denoiser ``build_tiny_pipeline`` puts in the pipeline (same class and config), built alone."""
    spec = get_generator(generator_id)
    torch.manual_seed(0)
    return getattr(diffusers, spec.denoiser_class)(**tiny_denoiser_config(spec)).eval()


@functools.cache
def tiny_denoiser(generator_id: str) -> torch.nn.Module:
    """Shared across tests (building a UNet costs seconds); tests that patch a model build their own."""
    return build_tiny_denoiser(generator_id)


@pytest.mark.parametrize("generator_id", list(GENERATORS))
def test_inputs_run_through_every_denoiser(generator_id: str) -> None:
    spec = get_generator(generator_id)
    model = tiny_denoiser(generator_id)
    rows = step_batch(spec, 1)
    inputs = denoiser_inputs(generator_id, model, rows, TINY_LATENT, "cpu", torch.float32)
    with torch.inference_mode():
        out = model(**inputs, return_dict=False)[0]
    latent_in = inputs["sample"] if "sample" in inputs else inputs["hidden_states"]
    assert out.shape == latent_in.shape  # a denoiser predicts noise / velocity of its input's shape
    assert torch.isfinite(out).all()
    assert latent_in.shape[0] == rows
    if spec.family == "flux":  # packed 2x2 patches, one id row per patch, T5-only text
        assert latent_in.shape[1] == (TINY_LATENT // 2) ** 2 == inputs["img_ids"].shape[0]
        assert inputs["encoder_hidden_states"].shape[1] == inputs["txt_ids"].shape[0] == text_sequence_length(spec)
        assert ("guidance" in inputs) == bool(spec.denoiser_config["guidance_embeds"])


def test_cfg_doubles_rows_except_for_flux() -> None:
    assert step_batch(get_generator("sd15"), 3) == 6
    assert step_batch(get_generator("sdxl"), 1) == 2
    assert step_batch(get_generator("sd3"), 1) == 2
    assert step_batch(get_generator("flux"), 1) == 1  # guidance is an embedding, not a second row
    assert step_batch(get_generator("fluxs"), 2) == 2
    assert step_batch(get_generator("sd15"), 1, guidance=1.0) == 1  # guidance 1 switches CFG off
    with pytest.raises(ValueError, match="images must be >= 1"):
        step_batch(get_generator("sd15"), 0)


def test_text_lengths_and_sdxl_condition_widths() -> None:
    assert text_sequence_length(get_generator("sd3")) == 77 + 256
    assert text_sequence_length(get_generator("flux")) == 512
    assert text_sequence_length(get_generator("fluxs")) == 256
    model = tiny_denoiser("sdxl")
    inputs = denoiser_inputs("sdxl", model, 2, TINY_LATENT, "cpu", torch.float32)
    cfg = model.config
    assert inputs["added_cond_kwargs"]["time_ids"].shape == (2, 6)
    assert inputs["added_cond_kwargs"]["text_embeds"].shape[1] == (
        cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim)


def test_latent_size_and_flux_packing_errors() -> None:
    assert latent_size_for("tiny", TINY_SIZE) == TINY_SIZE // TINY_VAE_FACTOR
    assert latent_size_for("random", 1024) == 128
    with pytest.raises(ValueError, match="not a multiple"):
        latent_size_for("random", 1020)
    with pytest.raises(ValueError, match="must be even"):
        denoiser_inputs("flux", tiny_denoiser("flux"), 1, 7, "cpu", torch.float32)


@pytest.mark.parametrize("generator_id", ["sd15", "sdxl", "sd35", "flux"])
def test_meta_twin_counts_the_same_flops_as_a_real_forward(generator_id: str) -> None:
    model = tiny_denoiser(generator_id)
    inputs = denoiser_inputs(generator_id, model, step_batch(get_generator(generator_id), 1), TINY_LATENT,
                             "cpu", torch.float32)
    with torch.inference_mode(), sdpa_kernel(SDPBackend.MATH):  # the math path exposes attention matmuls
        real = count_flops(lambda: model(**inputs, return_dict=False))
    twin = reference_step_flops(model, inputs)
    assert twin > 0
    assert twin == real


def test_meta_twin_scales_with_batch() -> None:
    model = tiny_denoiser("sd3")
    one = reference_step_flops(model, denoiser_inputs("sd3", model, 1, TINY_LATENT, "cpu", torch.float32))
    two = reference_step_flops(model, denoiser_inputs("sd3", model, 2, TINY_LATENT, "cpu", torch.float32))
    assert two == 2 * one


def test_measure_denoiser_step_reports_consistent_fields() -> None:
    model = tiny_denoiser("flux")
    inputs = denoiser_inputs("flux", model, 1, TINY_LATENT, "cpu", torch.float32)
    peak_tflops = 2.0
    result = measure_denoiser_step(model, inputs, "cpu", repeats=3, warmup=1, peak_tflops=peak_tflops)
    assert result["step_ms"] > 0 and result["step_repeats"] == 3
    assert result["clock"] == "perf_counter"
    assert result["flops_per_step"] == reference_step_flops(model, inputs) > 0
    expected_tflops = result["flops_per_step"] / (result["step_ms"] / 1e3) / 1e12
    assert result["tflops_per_s"] == pytest.approx(expected_tflops)
    assert result["roofline_fraction"] == pytest.approx(expected_tflops / peak_tflops)
    assert result["weights_bytes"] == weights_bytes(model)
    assert result["peak_rss_gib"] > 0 and result["peak_vram_gib"] is None


def test_oom_in_a_cell_is_recorded_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    model = build_tiny_denoiser("flux")
    inputs = denoiser_inputs("flux", model, 1, TINY_LATENT, "cpu", torch.float32)
    flops = reference_step_flops(model, inputs)

    def no_memory(*args: object, **kwargs: object) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(model, "forward", no_memory)
    result = oom_guarded(lambda: measure_denoiser_step(model, inputs, "cpu", repeats=2, warmup=0,
                                                       flops_per_step=flops, peak_tflops=1.0))
    assert result["oom"] is True
    assert "OutOfMemoryError" in result["oom_error"]


def test_other_errors_are_not_swallowed() -> None:
    def broken() -> dict:
        raise RuntimeError("shape mismatch in a kernel")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        oom_guarded(broken)
    assert oom_guarded(lambda: {"step_ms": 1.0}) == {"step_ms": 1.0, "oom": False}


def test_cell_ids_come_from_the_registries() -> None:
    cells = efficiency_cells(["sd15", "flux"], ["fp32", "nf4"], (False, True))
    assert [c.id for c in cells] == [
        "effic-sd15-fp32", "effic-sd15-fp32-compile", "effic-sd15-nf4", "effic-sd15-nf4-compile",
        "effic-flux-fp32", "effic-flux-fp32-compile", "effic-flux-nf4", "effic-flux-nf4-compile",
    ]
    assert [c.id for c in efficiency_cells(["sd3"], ["nf4"], (True,), e2e_batches=(1, 4))] == [
        "effic-sd3-nf4-compile", "effic-e2e-sd3-nf4-b1-compile", "effic-e2e-sd3-nf4-b4-compile"]
    with pytest.raises(ValueError, match="accepted: step, e2e"):
        EfficiencyCell("sd3", "nf4", measure="decode")
    with pytest.raises(UnknownIdError, match="valid precision ids: fp32"):
        efficiency_cells(["sd15"], ["int3"])
    with pytest.raises(UnknownIdError, match="valid generator ids"):
        efficiency_cells(["sd9"], ["fp32"])
    assert [c.id for c in detector_cells(["npr"], ["bf16"], [1, 64])] == ["effic-det-npr-bf16-b1",
                                                                          "effic-det-npr-bf16-b64"]
    with pytest.raises(ValueError, match="accepted: fp32, bf16, fp16"):
        detector_cells(["npr"], ["int4"])


def test_detector_throughput_and_flop_bound() -> None:
    from quantfake.detectors import get_detector
    from quantfake.detectors.loaded import build_module

    spec = get_detector("npr")
    size = detector_input_size(spec, tiny=True)
    assert size == 64
    assert detector_input_size(get_detector("clipd"), tiny=False) == 224
    assert detector_input_size(get_detector("r50nodown"), tiny=False) == 512  # full resolution: SD1.5 output
    module = build_module(spec, tiny=True)
    peak_tflops = 0.5
    result = measure_detector(module, 4, size, "cpu", torch.float32, repeats=2, warmup=1, peak_tflops=peak_tflops)
    assert result["images_per_s"] == pytest.approx(4 / (result["batch_ms"] / 1e3))
    assert result["flops_per_image"] > 0
    assert result["flop_bound_images_per_s"] == pytest.approx(peak_tflops * 1e12 / result["flops_per_image"])
    # the fraction of the FLOP-bound limit reached is the roofline fraction
    assert result["images_per_s"] / result["flop_bound_images_per_s"] == pytest.approx(result["roofline_fraction"])
    assert result["weights_bytes"] == weights_bytes(module)


def test_pipeline_e2e_and_overhead_on_the_tiny_pipeline(tmp_path) -> None:
    from quantfake.loading import load_pipeline
    from quantfake.store import Store

    loaded = load_pipeline("fluxs", "fp32", "tiny", device="cpu", store=Store(tmp_path))
    e2e = measure_pipeline_e2e(loaded, steps=1, size=TEST_SIZE, device="cpu", repeats=2, warmup=1)
    assert e2e["e2e_ms"] > 0 and e2e["load_s"] == loaded.load_seconds > 0
    assert e2e["pipeline_weights_bytes"] == sum(e2e["component_weights_bytes"].values())
    assert e2e["component_weights_bytes"]["transformer"] == weights_bytes(loaded.denoiser)
    overhead = measure_generation_overhead(loaded, steps=1, size=TEST_SIZE, device="cpu", pairs=2, warmup=1)
    low, high = overhead["overhead_ratio_ci95"]
    assert 0 < low <= overhead["overhead_ratio_median"] <= high
    assert overhead["suite_median_ms"] > 0 and overhead["bare_median_ms"] > 0
