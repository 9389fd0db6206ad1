"""Refit the memory-fit constants from recorded GPU peaks and check every recorded peak against the estimate.

Reads ``benchmarks/h100/effic_random_*.json`` (bare full-size denoiser, one step at native size, H100) and
``benchmarks/rehearsal/effic_e2e_h200.json`` (whole full-size pipelines, H200: step, end to end at batch 1 and 4),
prints the constants refitted from them next to :mod:`quantfake.memory_fit`'s, then one row per recorded peak:
measured, estimated, error. ``--check`` exits 1 when a constant drifted from its refit by more than 2 % or an
estimate is under a recorded peak by more than :data:`MAX_UNDER` or over by more than :data:`MAX_OVER`.

    python scripts/memory_fit_calibration.py [--check]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from quantfake.generators import get_generator  # noqa: E402
from quantfake.memory_fit import (  # noqa: E402
    DEFAULT_MODEL,
    GIB,
    ActivationModel,
    Recipe,
    decode_activation_bytes,
    denoise_activation_bytes,
    estimate,
    full_size_memory,
)

DENOISER_FILES = "benchmarks/h100/effic_random_*.json"
PIPELINE_FILE = "benchmarks/rehearsal/effic_e2e_h200.json"
#: an estimate may be this much under a recorded peak (a fit through noisy points) ...
MAX_UNDER = 0.03
#: ... and this much over it: LLM.int8's extra memory ranges 0.23-1.01x its weights and the largest is used
MAX_OVER = 0.60
CONSTANT_DRIFT = 0.02
STEP_PRECISIONS = ("bf16", "fp16", "fp8", "nf4", "fp4", "int8wo")  # bf16 compute, no extra resident memory


def _benchmarks(pattern: str) -> list[tuple[str, dict[str, Any]]]:
    rows = []
    for path in sorted(REPO.glob(pattern)):
        for bench in json.loads(path.read_text())["benchmarks"]:
            extra = bench.get("extra_info") or {}
            if extra.get("generator") and extra.get("peak_vram_gib") and not extra.get("compile"):
                rows.append((path.name, extra))
    return rows


def refit(denoiser_rows: list, pipeline_rows: list) -> ActivationModel:
    """Constants from the records, by the rules the module docstring states."""
    units: dict[str, float] = defaultdict(float)
    for _file, e in denoiser_rows:
        if e["precision"] == "bf16":
            mem = full_size_memory(e["generator"], "bf16", {get_generator(e["generator"]).denoiser: 0})
            one = denoise_activation_bytes(mem, e["step_batch"], e["size"], replace(DEFAULT_MODEL, denoise_units={
                mem.family: 1.0}))
            act = (e["peak_vram_gib"] - e["weights_gib"]) * GIB
            units[mem.family] = max(units[mem.family], act / one)
    bf16_act = {e["generator"]: e["peak_vram_gib"] - e["weights_gib"] for _f, e in denoiser_rows
                if e["precision"] == "bf16"}
    extra: dict[str, float] = defaultdict(float)
    for _file, e in denoiser_rows:
        if e["precision"] in ("int8", "fp8dq"):
            held = e["peak_vram_gib"] - e["weights_gib"] - bf16_act[e["generator"]]
            extra[e["precision"]] = max(extra[e["precision"]], held / e["weights_gib"])
    xs, ys = [], []  # decode activation in side^2 x c0 x bytes units against images per call
    for _file, e in pipeline_rows:
        mem = full_size_memory(e["generator"], e["precision"], e["component_weights_bytes"])
        unit = decode_activation_bytes(mem, 0, e["size"], False, ActivationModel(1.0, 0.0))
        weights = sum(e["component_weights_bytes"].values())
        for images, key in ((1, "e2e_peak_vram_gib"), (4, "e2e_peak_vram_gib_b4")):
            if e.get(key):
                xs.append(images)
                ys.append((e[key] * GIB - weights) / unit)
    n, mx, my = len(xs), sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    assert n >= 4, "too few pipeline records to fit the decode"
    return ActivationModel(round(my - slope * mx, 2), round(slope, 2), {k: round(v, 1) for k, v in units.items()},
                           {k: round(v, 2) for k, v in extra.items()})


def checks(denoiser_rows: list, pipeline_rows: list) -> list[dict[str, Any]]:
    """One row per recorded peak: what was measured and what the module's constants estimate."""
    out = []
    for file, e in denoiser_rows:
        mem = full_size_memory(e["generator"], e["precision"], {get_generator(e["generator"]).denoiser: 0})
        mem = replace(mem, component_bytes={mem.denoiser: int(e["weights_bytes"])})
        est = estimate(mem, Recipe(batch=e["step_batch"] // mem.rows_per_image), e["size"]).phases_gib["denoise"]
        out.append({"file": file, "cell": f"{e['generator']}-{e['precision']}", "what": "denoiser step",
                    "measured_gib": e["peak_vram_gib"], "estimate_gib": est})
    for file, e in pipeline_rows:
        mem = full_size_memory(e["generator"], e["precision"], e["component_weights_bytes"])
        whole = estimate(mem, Recipe(batch=1), e["size"])
        out.append({"file": file, "cell": f"{e['generator']}-{e['precision']}", "what": "pipeline step",
                    "measured_gib": e["peak_vram_gib"], "estimate_gib": whole.phases_gib["denoise"]})
        for images, key in ((1, "e2e_peak_vram_gib"), (4, "e2e_peak_vram_gib_b4")):
            if e.get(key):
                out.append({"file": file, "cell": f"{e['generator']}-{e['precision']}", "what": f"end to end b{images}",
                            "measured_gib": e[key], "estimate_gib": estimate(mem, Recipe(batch=images),
                                                                             e["size"]).peak_gib})
    for row in out:
        row["error"] = row["estimate_gib"] / row["measured_gib"] - 1.0
        row["ok"] = -MAX_UNDER <= row["error"] <= MAX_OVER
    return out


def drifted(fitted: ActivationModel, used: ActivationModel) -> list[str]:
    """Constants of the module that differ from their refit by more than CONSTANT_DRIFT."""
    pairs = [("VAE_FIXED_UNITS", fitted.vae_fixed_units, used.vae_fixed_units),
             ("VAE_PER_IMAGE_UNITS", fitted.vae_per_image_units, used.vae_per_image_units)]
    pairs += [(f"DENOISE_UNITS[{k}]", v, used.denoise_units.get(k, float("nan"))) for k, v in fitted.denoise_units.items()]
    pairs += [(f"STEP_EXTRA_OF_WEIGHTS[{k}]", v, used.step_extra_of_weights.get(k, float("nan")))
              for k, v in fitted.step_extra_of_weights.items()]
    return [f"{name}: refit {a} vs {b}" for name, a, b in pairs if not abs(a - b) <= CONSTANT_DRIFT * abs(a)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 on drifted constants or estimates out of bounds")
    args = parser.parse_args(argv)
    denoiser_rows, pipeline_rows = _benchmarks(DENOISER_FILES), _benchmarks(PIPELINE_FILE)
    fitted = refit(denoiser_rows, pipeline_rows)
    print(f"refit from {len(denoiser_rows)} denoiser and {len(pipeline_rows)} pipeline records: {fitted}")
    print(f"quantfake.memory_fit:                            {DEFAULT_MODEL}")
    rows = checks(denoiser_rows, pipeline_rows)
    print(f"{'file':34s} {'cell':14s} {'what':16s} {'measured':>9s} {'estimate':>9s} {'error':>7s}")
    for r in rows:
        print(f"{r['file']:34s} {r['cell']:14s} {r['what']:16s} {r['measured_gib']:9.2f} {r['estimate_gib']:9.2f} "
              f"{r['error']:+7.1%}{'' if r['ok'] else '  OUT OF BOUNDS'}")
    bad, drift = [r for r in rows if not r["ok"]], drifted(fitted, DEFAULT_MODEL)
    print(f"{len(rows)} recorded peaks; {len(bad)} out of bounds (-{MAX_UNDER:.0%} .. +{MAX_OVER:.0%}); "
          f"{len(drift)} drifted constant(s)" + "".join(f"\n  {d}" for d in drift))
    return 1 if args.check and (bad or drift) else 0


if __name__ == "__main__":
    raise SystemExit(main())
