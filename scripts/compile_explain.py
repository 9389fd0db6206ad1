"""Graph breaks of a denoiser under torch.compile (torch._dynamo.explain), per generator x precision.

Why: on the H100, torch.compile of torchao-quantized denoisers (SDXL fp8dq, SD3 int8wo) ran for minutes.
This shows whether dynamo splits the graph (many small graphs to compile) or the time is kernel
compilation. Runs on the tiny profile, on CPU, in seconds.

    python scripts/compile_explain.py sd3:int8wo sd3:bf16 sdxl:int8wo      (fp8dq cells need a CUDA GPU)
"""

from __future__ import annotations

import sys
import time

import torch

from quantfake.loading import load_pipeline
from quantfake.precisions import get_precision
from quantfake.session.efficiency.cells import denoiser_inputs
from quantfake.store import Store


def explain(generator: str, precision: str, device: str = "cpu") -> str:
    """One line: graphs, breaks, seconds, and the first break reason (if any)."""
    loaded = load_pipeline(generator, precision, "tiny", device=device, store=Store(".quantfake"))
    model = loaded.denoiser
    inputs = denoiser_inputs(generator, model, 2, 8, device, get_precision(precision).torch_dtype)
    torch._dynamo.reset()
    start = time.perf_counter()
    result = torch._dynamo.explain(model)(**inputs, return_dict=False)
    first = str(result.break_reasons[0].reason)[:160] if result.break_reasons else "-"
    return (f"{generator}-{precision}: {result.graph_count} graph(s), {result.graph_break_count} break(s), "
            f"{time.perf_counter() - start:.1f} s; first break: {first}")


if __name__ == "__main__":
    for cell in sys.argv[1:] or ["sd3:int8wo", "sd3:bf16", "sdxl:int8wo"]:  # fp8dq needs a CUDA GPU
        generator, _, precision = cell.partition(":")
        print(explain(generator, precision))
