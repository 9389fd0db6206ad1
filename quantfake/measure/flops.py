"""FLOPs and how close a measured step comes to the device's matmul peak (roofline fraction).

This is what shows whether a quantized step is slower because of *extra* work (dequantization) or
because its kernels run far from peak: the useful FLOPs of a step do not change with quantization.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from quantfake.measure.devices import DeviceLike, as_device
from quantfake.measure.timing import time_callable

_PEAK_CACHE: dict[tuple[str, torch.dtype, int], float] = {}


def count_flops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """FLOPs of ``fn(*args, **kwargs)`` counted by torch's FlopCounterMode (a multiply-add counts 2).

    Only ops with a registered formula (matmul, conv, SDPA, ...) count; custom quantized kernels
    (bitsandbytes gemv, torchao int8 mm) may be invisible. Count on the unquantized reference model
    and reuse that number for its quantized variants ("useful FLOPs").
    """
    with FlopCounterMode(display=False) as counter:
        fn(*args, **kwargs)
    return int(counter.get_total_flops())


def achieved_tflops(flops: int | float, seconds: float) -> float:
    """Throughput in TFLOP/s of ``flops`` done in ``seconds`` (pass ms / 1e3 for millisecond timings)."""
    if seconds <= 0:
        raise ValueError(f"seconds must be > 0, got {seconds}")
    if flops < 0:
        raise ValueError(f"flops must be >= 0, got {flops}")
    return flops / seconds / 1e12


def roofline_fraction(achieved: float, peak: float) -> float:
    """Achieved / peak throughput (same units), e.g. 0.4 = 40 % of the measured matmul peak."""
    if peak <= 0:
        raise ValueError(f"peak throughput must be > 0, got {peak}")
    if achieved < 0:
        raise ValueError(f"achieved throughput must be >= 0, got {achieved}")
    return achieved / peak


def measure_matmul_peak_tflops(device: DeviceLike | None = "cuda", dtype: torch.dtype | None = None,
                               n: int | None = None, repeats: int = 5) -> float:
    """Measured (not datasheet) dense matmul TFLOP/s: median of ``repeats`` n x n @ n x n products.

    Defaults: GPU bfloat16 with n=8192; CPU float32 with n=1024 so it stays quick. Cached per process
    for each (device, dtype, n), since it is a property of the machine, not of the benchmark cell.
    """
    dev = as_device(device)
    if dtype is None:
        dtype = torch.float32 if dev.type == "cpu" else torch.bfloat16
    if n is None:
        n = 1024 if dev.type == "cpu" else 8192
    if n < 1:
        raise ValueError(f"matrix size n must be >= 1, got {n}")
    key = (str(dev), dtype, n)
    if key not in _PEAK_CACHE:
        gen = torch.Generator(device=dev).manual_seed(0)
        a = torch.randn(n, n, device=dev, dtype=torch.float32, generator=gen).to(dtype)
        b = torch.randn(n, n, device=dev, dtype=torch.float32, generator=gen).to(dtype)
        out = torch.empty(n, n, device=dev, dtype=dtype)
        stats = time_callable(lambda: torch.mm(a, b, out=out), warmup=2, repeats=repeats, device=dev)
        _PEAK_CACHE[key] = achieved_tflops(2 * n**3, stats.median_ms / 1e3)
        del a, b, out
    return _PEAK_CACHE[key]
