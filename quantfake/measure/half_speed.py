"""How much slower fp16 / bf16 arithmetic is than fp32 on this CPU, measured in a fraction of a second.

CPUs without native half arithmetic (AVX2 only: no AVX-512 FP16 / BF16, no AMX) run fp16 / bf16 matmuls and
convolutions 10-25x slower than fp32 (issue 14). A CPU run says so once at the start, from this measurement,
so a slow half-precision cell is not mistaken for a hang, and grid estimates use the measured ratio.
"""

from __future__ import annotations

import functools
import time

import torch

#: a half-precision slow-down above this is worth a line at the start of a CPU run
SLOW_HALF_RATIO = 3.0


def _median_ms(fn, repeats: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2] * 1e3


@functools.cache
def half_slowdown() -> dict[str, float]:
    """``{"fp16": t16 / t32, "bf16": tbf16 / t32}`` for a 128x256 @ 256x256 matmul on this CPU (cached)."""
    out = {}
    gen = torch.Generator().manual_seed(0)
    a32, b32 = torch.randn(128, 256, generator=gen), torch.randn(256, 256, generator=gen)
    base = _median_ms(lambda: a32 @ b32)
    for name, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
        a, b = a32.to(dtype), b32.to(dtype)
        out[name] = _median_ms(lambda a=a, b=b: a @ b) / max(base, 1e-6)
    return out


def slow_half_message(ratios: dict[str, float]) -> str | None:
    """One line when half precision is slow on this CPU, else None."""
    slow = {k: v for k, v in ratios.items() if v > SLOW_HALF_RATIO}
    if not slow:
        return None
    parts = ", ".join(f"{k} {v:.0f}x" for k, v in slow.items())
    return (f"half precision is slow on this CPU ({parts} slower than fp32, measured): cells that compute in "
            "fp16 / bf16 (fp16, bf16, fp8, int8, nf4, fp4, torchao ids) take that much longer here; slow is not hung")
