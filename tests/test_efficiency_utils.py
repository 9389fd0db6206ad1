"""CPU tests of quantfake.session.efficiency with tiny modules; expected byte counts are derived from the formats."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from quantfake.measure import (
    OverheadComparison,
    Timer,
    TimingStats,
    achieved_tflops,
    as_device,
    compare_overhead,
    component_weights_bytes,
    count_flops,
    device_info,
    is_oom,
    measure_matmul_peak_tflops,
    peak_memory,
    roofline_fraction,
    supports_float8,
    time_callable,
    weights_bytes,
    weights_bytes_by_dtype,
)

IN_FEATURES, OUT_FEATURES = 64, 32
N_WEIGHTS = IN_FEATURES * OUT_FEATURES
FP32_BIAS_BYTES = OUT_FEATURES * 4
MIB = 1024**2


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# ---------------------------------------------------------------- weights_bytes: plain storage


@pytest.mark.parametrize(("dtype", "bytes_per_element"), [(torch.float32, 4), (torch.float16, 2), (torch.bfloat16, 2)])
def test_weights_bytes_plain_linear(dtype: torch.dtype, bytes_per_element: int) -> None:
    layer = nn.Linear(IN_FEATURES, OUT_FEATURES).to(dtype)
    assert weights_bytes(layer) == (N_WEIGHTS + OUT_FEATURES) * bytes_per_element


def test_weights_bytes_counts_buffers_including_int64() -> None:
    norm = nn.BatchNorm1d(10)  # weight, bias (fp32) + running_mean, running_var (fp32) + num_batches_tracked (int64)
    assert weights_bytes(norm) == 4 * 10 * 4 + 8


def test_weights_bytes_counts_tied_weights_once() -> None:
    first, second = nn.Linear(8, 8, bias=False), nn.Linear(8, 8, bias=False)
    second.weight = first.weight
    assert weights_bytes(nn.Sequential(first, second)) == 8 * 8 * 4


def test_weights_bytes_rejects_non_module() -> None:
    with pytest.raises(TypeError, match="Tensor"):
        weights_bytes(torch.zeros(3))  # type: ignore[arg-type]


# ---------------------------------------------------------------- weights_bytes: bitsandbytes


def _bnb():
    return pytest.importorskip("bitsandbytes")


def test_weights_bytes_bnb_nf4_without_double_quant() -> None:
    bnb = _bnb()
    layer = bnb.nn.Linear4bit(IN_FEATURES, OUT_FEATURES, compute_dtype=torch.float32, quant_type="nf4",
                              compress_statistics=False).to("cpu")
    assert layer.weight.quant_state is not None, "moving to cpu should have quantized the weight"
    blocksize = layer.weight.quant_state.blocksize
    packed = N_WEIGHTS // 2  # two 4-bit codes per uint8
    absmax = (N_WEIGHTS // blocksize) * 4  # one fp32 scale per block
    codebook = 16 * 4  # the 16 NF4 levels in fp32
    assert weights_bytes(layer) == packed + absmax + codebook + FP32_BIAS_BYTES
    assert weights_bytes_by_dtype(layer)["uint8"] == packed


def test_weights_bytes_bnb_nf4_with_double_quant_counts_nested_state() -> None:
    bnb = _bnb()
    layer = bnb.nn.Linear4bit(IN_FEATURES, OUT_FEATURES, compute_dtype=torch.float32, quant_type="nf4",
                              compress_statistics=True).to("cpu")
    state = layer.weight.quant_state
    assert state.nested
    n_blocks = N_WEIGHTS // state.blocksize
    nested_blocks = -(-n_blocks // state.state2.blocksize)  # ceil
    expected = (N_WEIGHTS // 2 + n_blocks * 1  # packed weights + uint8-quantized absmax
                + 4  # fp32 offset subtracted before quantizing absmax
                + nested_blocks * 4 + 256 * 4  # fp32 absmax and 8-bit code of the nested state
                + 16 * 4 + FP32_BIAS_BYTES)
    assert weights_bytes(layer) == expected
    fp32_bytes = weights_bytes(nn.Linear(IN_FEATURES, OUT_FEATURES))
    assert weights_bytes(layer) < fp32_bytes


def test_weights_bytes_bnb_int8_counts_row_scales() -> None:
    bnb = _bnb()
    layer = bnb.nn.Linear8bitLt(IN_FEATURES, OUT_FEATURES, has_fp16_weights=False).to("cpu")
    assert layer.weight.dtype == torch.int8
    scb_bytes = OUT_FEATURES * 4  # one fp32 absmax per output row
    assert weights_bytes(layer) == N_WEIGHTS + scb_bytes + FP32_BIAS_BYTES


# ---------------------------------------------------------------- weights_bytes: torchao, layerwise casting


def test_weights_bytes_torchao_int8_uses_inner_tensors() -> None:
    quantization = pytest.importorskip("torchao.quantization")
    model = nn.Sequential(nn.Linear(IN_FEATURES, OUT_FEATURES))
    quantization.quantize_(model, quantization.Int8WeightOnlyConfig(set_inductor_config=False))
    assert model[0].weight.dtype == torch.float32, "torchao reports the logical dtype; storage must be found inside"
    per_row = OUT_FEATURES * (4 + 1)  # fp32 scale + int8 zero point per output row
    assert weights_bytes(model) == N_WEIGHTS + per_row + FP32_BIAS_BYTES


@pytest.mark.parametrize("precision", ["int8wo", "int8dq"])
def test_torchao_quantization_leaves_inductor_config_alone(precision: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """torchao's default turns on coordinate-descent tuning process-wide: compiled cells would not compare."""
    pytest.importorskip("torchao.quantization")
    from torch._inductor import config as inductor_config

    # nothing is computed here: int8dq's refusal on CPUs without AVX-512 (saturating int8 GEMMs) does not apply
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")

    from quantfake.precision_apply import quantize_module_
    from quantfake.precisions import get_precision

    with inductor_config.patch(coordinate_descent_tuning=False, coordinate_descent_check_all_directions=False):
        quantize_module_(nn.Sequential(nn.Linear(IN_FEATURES, OUT_FEATURES)), get_precision(precision))
        assert not inductor_config.coordinate_descent_tuning
        assert not inductor_config.coordinate_descent_check_all_directions


def test_weights_bytes_layerwise_casting_float8_sequential() -> None:
    hooks = pytest.importorskip("diffusers.hooks")
    model = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 8))
    n_elements = sum(p.numel() for p in model.parameters())
    hooks.apply_layerwise_casting(model, storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.float32,
                                  skip_modules_pattern=None)
    assert weights_bytes(model) == n_elements  # one byte per element once stored as float8
    assert model(torch.randn(2, 16)).dtype == torch.float32


def test_weights_bytes_layerwise_casting_tiny_unet() -> None:
    diffusers = pytest.importorskip("diffusers")
    unet = diffusers.UNet2DModel(sample_size=8, in_channels=3, out_channels=3, layers_per_block=1,
                                 block_out_channels=(8, 16), down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4)
    fp32_bytes = weights_bytes(unet)
    unet.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.float32)
    fp8_elements = sum(p.numel() for p in unet.parameters() if p.dtype == torch.float8_e4m3fn)
    assert fp8_elements > 0
    assert weights_bytes(unet) == fp32_bytes - 3 * fp8_elements  # 4 -> 1 byte per cast element
    assert weights_bytes_by_dtype(unet)["float8_e4m3fn"] == fp8_elements


def test_component_weights_bytes_skips_non_modules() -> None:
    diffusers = pytest.importorskip("diffusers")
    unet = diffusers.UNet2DModel(sample_size=8, in_channels=3, out_channels=3, layers_per_block=1,
                                 block_out_channels=(8, 16), down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4)
    pipe = diffusers.DDPMPipeline(unet=unet, scheduler=diffusers.DDPMScheduler(num_train_timesteps=10))
    assert component_weights_bytes(pipe) == {"unet": weights_bytes(unet)}
    with pytest.raises(TypeError, match="components"):
        component_weights_bytes(object())


# ---------------------------------------------------------------- FLOPs and roofline


def test_count_flops_linear_is_two_b_in_out() -> None:
    batch, layer = 4, nn.Linear(16, 8)
    x = torch.randn(batch, 16)
    assert count_flops(layer, x) == 2 * batch * 16 * 8


def test_count_flops_scales_with_batch() -> None:
    layer = nn.Linear(16, 8)
    assert count_flops(layer, torch.randn(6, 16)) == 3 * count_flops(layer, torch.randn(2, 16))


def test_achieved_tflops_and_roofline_fraction() -> None:
    assert achieved_tflops(3e12, 1.5) == pytest.approx(2.0)
    assert roofline_fraction(2.0, 8.0) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="seconds"):
        achieved_tflops(1.0, 0.0)
    with pytest.raises(ValueError, match="peak"):
        roofline_fraction(1.0, 0.0)


def test_measure_matmul_peak_tflops_cpu_is_positive_and_cached() -> None:
    peak = measure_matmul_peak_tflops("cpu")
    assert peak > 0
    start = time.perf_counter()
    assert measure_matmul_peak_tflops("cpu") == peak  # cached: same value, no re-measurement
    assert time.perf_counter() - start < 0.01


# ---------------------------------------------------------------- timing


def test_timing_stats_from_known_samples() -> None:
    stats = TimingStats.from_samples([3.0, 1.0, 100.0, 2.0, 4.0])
    assert (stats.min_ms, stats.median_ms, stats.max_ms) == (1.0, 3.0, 100.0)
    assert stats.mean_ms == pytest.approx(22.0)
    assert stats.iqr_ms == pytest.approx(2.0)  # 75th pct 4.0 - 25th pct 2.0
    with pytest.raises(ValueError, match="at least one sample"):
        TimingStats.from_samples([])


def test_time_callable_orders_stats_and_measures_sleep() -> None:
    calls: list[int] = []

    def work() -> None:
        calls.append(1)
        time.sleep(0.002)

    stats = time_callable(work, warmup=2, repeats=5, device="cpu")
    assert len(calls) == 7 and len(stats.samples_ms) == 5
    assert stats.min_ms <= stats.median_ms <= stats.max_ms
    assert stats.iqr_ms >= 0
    assert stats.min_ms >= 2.0  # sleep never returns early
    assert stats.clock == "perf_counter"


def test_time_callable_rejects_bad_repeats() -> None:
    with pytest.raises(ValueError, match="repeats"):
        time_callable(lambda: None, repeats=0)


def test_timer_elapsed_unavailable_before_exit() -> None:
    timer = Timer("cpu")
    with pytest.raises(RuntimeError, match="elapsed_ms"):
        _ = timer.elapsed_ms


# ---------------------------------------------------------------- peak memory


def test_peak_memory_cpu_sees_resident_allocation() -> None:
    with peak_memory("cpu") as mem:
        kept = torch.ones(16 * MIB)  # 64 MiB, pages touched
    assert mem.max_allocated_gib is None and mem.max_reserved_gib is None  # no GPU fields on CPU
    assert mem.rss_delta_gib is not None and mem.rss_delta_gib * 1024 >= 0.9 * 64
    assert mem.process_peak_rss_gib >= mem.rss_after_gib
    del kept


def test_peak_memory_cpu_windowed_peak_catches_transient_allocation() -> None:
    with peak_memory("cpu") as mem:
        transient = torch.ones(16 * MIB)
        del transient
    if not mem.peak_rss_is_windowed:
        pytest.skip("RSS high-water mark could not be reset on this system")
    assert (mem.process_peak_rss_gib - mem.rss_before_gib) * 1024 >= 0.9 * 64


# ---------------------------------------------------------------- devices and OOM


def test_device_helpers_on_cpu() -> None:
    info = device_info("cpu")
    assert info["type"] == "cpu" and info["usable_cores"] >= 1 and info["compute_capability"] is None
    assert supports_float8("cpu") is False
    with pytest.raises(ValueError, match="accepted device types: cpu, cuda"):
        as_device("tpu")


def test_is_oom_recognises_real_cpu_allocation_failure() -> None:
    with pytest.raises(RuntimeError) as caught:
        torch.empty(2**50, dtype=torch.uint8)  # 1 PiB: refused by the allocator at once
    assert is_oom(caught.value)


@pytest.mark.parametrize("exc", [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    RuntimeError("CUDA error: out of memory"),
    RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
    MemoryError(),
])
def test_is_oom_positive(exc: BaseException) -> None:
    assert is_oom(exc)


def test_is_oom_follows_exception_chain() -> None:
    try:
        try:
            raise torch.OutOfMemoryError("CUDA out of memory")
        except torch.OutOfMemoryError as inner:
            raise ValueError("denoising step failed") from inner
    except ValueError as outer:
        assert is_oom(outer)


@pytest.mark.parametrize("exc", [
    ValueError("shape mismatch: 3 vs 4"),
    RuntimeError("out of resource: shared memory, Required: 131072, Hardware limit: 101376"),
    RuntimeError("CUDA error: an illegal memory access was encountered"),
])
def test_is_oom_negative(exc: BaseException) -> None:
    assert not is_oom(exc)


# ---------------------------------------------------------------- overhead comparison


def test_overhead_from_samples_known_ratio() -> None:
    b_ms = [10.0, 12.0, 11.0, 9.0, 10.5]
    result = OverheadComparison.from_samples([1.1 * b for b in b_ms], b_ms)
    assert result.ratio_median == pytest.approx(1.1)
    assert result.ratio_ci95 == pytest.approx((1.1, 1.1))
    assert result.overhead_pct == pytest.approx(10.0)
    assert not result.is_within(0.03) and result.is_within(0.11)
    with pytest.raises(ValueError, match="pair up"):
        OverheadComparison.from_samples([1.0, 2.0], [1.0])


def _matmul_work() -> None:
    a = torch.randn(96, 96)
    for _ in range(20):
        a = torch.tanh(a @ a)


def test_overhead_identical_functions_ratio_near_one() -> None:
    def fn_a() -> None:
        _matmul_work()

    def fn_b() -> None:
        _matmul_work()

    result = compare_overhead(fn_a, fn_b, pairs=30, warmup=3, device="cpu")
    assert len(result.a_ms) == len(result.b_ms) == 30
    assert result.ratio_ci95[0] <= result.ratio_median <= result.ratio_ci95[1]
    assert 0.85 <= result.ratio_median <= 1.15


def test_overhead_detects_real_overhead() -> None:
    result = compare_overhead(lambda: time.sleep(0.004), lambda: time.sleep(0.002), pairs=10, warmup=1)
    assert result.ratio_median > 1.4
    assert not result.is_within(0.03)
