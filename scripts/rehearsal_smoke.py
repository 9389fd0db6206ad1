"""Rehearsal smoke test on one GPU: whole full-size random pipelines, one image each, plus the saved-root path.

For every generator x precision: build the in-memory random pipeline on the device (``load_pipeline(...,
profile="random")``: built, quantized and verified), make one warm-up image and then one timed image at native
size and default steps (the suite's own call), and record s/image and peak GiB. Then, for the root
generators (default sd3): save the random model root once under ``--root``, load it back through the
``pretrained`` loader (diffusers quantize-at-load on CUDA) at ``--root-precision`` and print the per-component
verification. Each cell runs inside try/except and GPU memory is freed between cells, so one failure does not
stop the others. Prints a compact table; writes JSON to ``--out`` after every cell.

    python scripts/rehearsal_smoke.py --out $OUT/rehearsal_smoke.json
    python scripts/rehearsal_smoke.py --generators flux,sd3,sdxl --precisions bf16,nf4 --root /tmp/qf-root
"""

from __future__ import annotations

import argparse
import gc
import json
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch

from quantfake.environment import collect_environment, quiet_libraries
from quantfake.generators import get_generator
from quantfake.loading import LoadedPipeline, load_pipeline
from quantfake.measure.oom import is_oom
from quantfake.session.efficiency.cells import pipeline_call_kwargs
from quantfake.store import atomic_write_json

GIB = 2**30


def free_memory() -> None:
    """Drop everything the last cell left, so the next cell's peak is its own."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / GIB if device.startswith("cuda") else None


def time_one_image(lp: LoadedPipeline, steps: int, size: int, device: str) -> dict[str, Any]:
    """One warm-up image, then one timed image (CUDA events and wall clock, synchronized)."""
    spec = lp.generator

    def call() -> Any:
        with torch.inference_mode():
            return lp.pipe(**pipeline_call_kwargs(spec, steps, size, images=1))

    cuda = device.startswith("cuda")
    call()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start_ev, end_ev = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start_ev.record()
    start = time.perf_counter()
    out = call()
    if cuda:
        end_ev.record()
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    pixels = np.asarray(out.images[0], dtype=np.float32)
    return {"s_per_image": start_ev.elapsed_time(end_ev) / 1e3 if cuda else wall, "wall_s_per_image": wall,
            "steps": steps, "size": size, "gen_peak_gib": peak_gib(device),
            "image_mean": float(pixels.mean()), "image_std": float(pixels.std())}


def summary(lp: LoadedPipeline) -> dict[str, Any]:
    """Per-component verification, compact: class, quantized modules, weight GiB, parameter dtypes."""
    return {name: {"class": info["class"], "quantized_modules": info["quantized_modules"],
                   "weights_gib": round(info["weights_bytes"] / GIB, 3), "param_dtypes": info["param_dtypes"]}
            for name, info in lp.verification.items()}


def failure(exc: BaseException) -> dict[str, Any]:
    traceback.print_exc()
    return {"ok": False, "oom": is_oom(exc), "error": f"{type(exc).__name__}: {exc}"[:500]}


def memory_cell(generator: str, precision: str, device: str, steps: int | None, size: int | None) -> dict[str, Any]:
    """The in-memory random pipeline of one generator x precision: build, verify, one timed image."""
    spec = get_generator(generator)
    row: dict[str, Any] = {"check": "memory", "generator": generator, "precision": precision}
    holder: dict[str, Any] = {}
    try:
        free_memory()
        holder["lp"] = lp = load_pipeline(generator, precision, "random", device=device)
        row.update(load_s=lp.load_seconds, load_peak_gib=peak_gib(device), model_key=lp.model_key,
                   components=summary(lp))
        row.update(time_one_image(lp, steps or spec.default_steps, size or spec.native_size, device), ok=True)
    except Exception as exc:  # noqa: BLE001 - record and go on with the next cell
        row.update(failure(exc))
    finally:
        holder.clear()
        free_memory()
    return row


def root_cell(generator: str, precision: str, root: Path, device: str, steps: int | None,
              size: int | None) -> dict[str, Any]:
    """Save the random model root once, load it through the pretrained loader at ``precision``, one image."""
    from quantfake.fullsize import ensure_random_model_root

    spec = get_generator(generator)
    row: dict[str, Any] = {"check": "root", "generator": generator, "precision": precision}
    holder: dict[str, Any] = {}
    try:
        free_memory()
        start = time.perf_counter()
        folder = ensure_random_model_root(generator, root, device)
        row.update(root=str(folder), save_s=time.perf_counter() - start,
                   root_gib=sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / GIB)
        free_memory()
        holder["lp"] = lp = load_pipeline(generator, precision, "pretrained", device=device, model_root=root)
        row.update(load_s=lp.load_seconds, load_peak_gib=peak_gib(device), model_key=lp.model_key,
                   source=lp.source, components=summary(lp))
        row.update(time_one_image(lp, steps or spec.default_steps, size or spec.native_size, device), ok=True)
    except Exception as exc:  # noqa: BLE001
        row.update(failure(exc))
    finally:
        holder.clear()
        free_memory()
    return row


def fmt(value: Any, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"\n{'check':6s} {'gen':5s} {'prec':5s} {'ok':5s} {'load s':>7s} {'s/image':>8s} {'peak GiB':>9s} "
          f"{'load GiB':>9s}  denoiser")
    for r in rows:
        den = r.get("components", {}).get(get_generator(r["generator"]).denoiser, {})
        detail = (f"{den.get('class')} q={den.get('quantized_modules')} {den.get('weights_gib')} GiB" if den
                  else r.get("error", ""))
        print(f"{r['check']:6s} {r['generator']:5s} {r['precision']:5s} {str(r.get('ok')):5s} "
              f"{fmt(r.get('load_s')):>7s} {fmt(r.get('s_per_image')):>8s} {fmt(r.get('gen_peak_gib')):>9s} "
              f"{fmt(r.get('load_peak_gib')):>9s}  {detail}")
    for r in rows:
        if r["check"] == "root" and r.get("components"):
            print(f"\n{r['generator']} root {r.get('root')} ({fmt(r.get('root_gib'))} GiB, saved in "
                  f"{fmt(r.get('save_s'), '.1f')} s) loaded at {r['precision']}, model key {r.get('model_key')}:")
            for name, info in r["components"].items():
                print(f"  {name:15s} {info['class']:30s} quantized={info['quantized_modules']:5d} "
                      f"{info['weights_gib']:8.3f} GiB  {info['param_dtypes']}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--generators", default="flux,sd3,sdxl")
    p.add_argument("--precisions", default="bf16,nf4")
    p.add_argument("--root-generators", default="sd3", help="generators whose model root is saved and reloaded")
    p.add_argument("--root-precision", default="nf4")
    p.add_argument("--root", type=Path, default=Path("/tmp/quantfake-random-root"),
                   help="model root to write (kept: later runs reuse it; never put it under $OUT)")
    p.add_argument("--out", type=Path, default=Path("rehearsal_smoke.json"))
    p.add_argument("--device", default="cuda")
    p.add_argument("--steps", type=int, default=None, help="default: each generator's own")
    p.add_argument("--size", type=int, default=None, help="default: each generator's native size")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_libraries()
    split = lambda s: [x.strip() for x in s.split(",") if x.strip()]  # noqa: E731
    rows: list[dict[str, Any]] = []
    record: dict[str, Any] = {"args": vars(args), "environment": collect_environment(), "rows": rows}

    def save(row: dict[str, Any]) -> None:
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "components"}, default=str), flush=True)
        atomic_write_json(args.out, record)

    for generator in split(args.generators):
        for precision in split(args.precisions):
            save(memory_cell(generator, precision, args.device, args.steps, args.size))
    for generator in split(args.root_generators):
        save(root_cell(generator, args.root_precision, args.root, args.device, args.steps, args.size))
    print_table(rows)
    print(f"\nJSON: {args.out}")
    return 0 if all(r.get("ok") for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
