"""GPU checks for the foundation: diffusers' quantize-at-load on CUDA for the tiny pipelines, and the random
profile's full-size denoisers built on the GPU. Prints a table; writes JSON to $OUT (or ./gpu_foundation.json).

    python scripts/gpu_foundation.py
"""

from __future__ import annotations

import json
import os
import traceback

import torch

from quantfake.environment import collect_environment, quiet_libraries
from quantfake.generate import GenerationRequest, generate
from quantfake.loading import load_denoiser, load_pipeline
from quantfake.store import Store

quiet_libraries()
store = Store(os.environ.get("QUANTFAKE_STORE", "/tmp/qf-gpu-store"))
rows: list[dict] = []
for gen in ("sd15", "sdxl", "sd3", "flux"):
    for prec in ("fp32", "bf16", "fp8", "int8", "nf4", "fp4", "fp8dq", "int8wo"):
        row = {"check": "tiny-cuda", "generator": gen, "precision": prec}
        try:
            lp = load_pipeline(gen, prec, "tiny", device="cuda", store=store)
            den = lp.verification[lp.generator.denoiser]
            res = generate(lp, GenerationRequest(n_images=2, batch_size=2, steps=2, size=64), store, progress=False)
            row.update(ok=True, path="diffusers quantize-at-load" if lp.precision.kind in ("bnb", "torchao")
                       else "dtype/layerwise", quantized_modules=den["quantized_modules"],
                       weights_bytes=den["weights_bytes"],
                       classes=sorted(c for c in den["module_classes"] if "Linear" in c or "Conv" in c),
                       images=len(res.images), load_s=round(lp.load_seconds, 3))
        except Exception as exc:  # noqa: BLE001 - record and go on
            row.update(ok=False, error=f"{type(exc).__name__}: {exc}"[:300])
            traceback.print_exc()
        rows.append(row)
        print(json.dumps(row), flush=True)

for gen in ("sdxl", "sd3", "flux"):
    for prec in ("bf16", "nf4"):
        row = {"check": "random-build", "generator": gen, "precision": prec}
        try:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            model, seconds = load_denoiser(gen, prec, device="cuda")
            params = sum(p.numel() for p in model.parameters())
            from quantfake.measure import weights_bytes

            row.update(ok=True, build_s=round(seconds, 2), params=params,
                       weights_gib=round(weights_bytes(model) / 2**30, 2),
                       peak_alloc_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2))
            del model
        except Exception as exc:  # noqa: BLE001
            row.update(ok=False, error=f"{type(exc).__name__}: {exc}"[:300])
            traceback.print_exc()
        rows.append(row)
        print(json.dumps(row), flush=True)

out = os.path.join(os.environ.get("OUT", "."), "gpu_foundation.json")
with open(out, "w") as f:
    json.dump({"environment": collect_environment(), "rows": rows}, f, indent=2, default=str)
print(f"{'check':12s} {'gen':5s} {'prec':7s} ok   details")
for r in rows:
    print(f"{r['check']:12s} {r['generator']:5s} {r['precision']:7s} {str(r['ok']):5s}",
          {k: v for k, v in r.items() if k not in ("check", "generator", "precision", "ok")})
