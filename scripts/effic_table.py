"""Markdown tables of committed efficiency benchmark JSON (generators, detectors, overhead guard).

Reads every pytest-benchmark JSON under a folder (default ``benchmarks/h100``) written by
``bench/test_efficiency.py`` and prints the tables quoted in the README and in issue notes.

    python scripts/effic_table.py [benchmarks/h100]
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from quantfake.precisions import PRECISIONS
from quantfake.report.record import load_benchmark_json

GIB = 2**30


def load(folder: Path) -> pd.DataFrame:
    """One row per benchmark of every pytest-benchmark JSON in ``folder`` (empty files, from killed runs, and other
    JSON skipped)."""
    frames = []
    for path in sorted(folder.glob("*.json")):
        if path.stat().st_size == 0:
            print(f"skipped {path}: empty (its run was stopped before pytest-benchmark wrote it)", file=sys.stderr)
            continue
        try:
            payload = load_benchmark_json(path)  # every extra_info field becomes a column
        except ValueError as exc:  # a run record or baselines file kept beside the benchmark JSON
            print(f"skipped {exc}", file=sys.stderr)
            continue
        when = pd.Timestamp(payload.get("datetime") or 0)
        frames.append(pd.DataFrame([{**(b.get("extra_info") or {}), "name": b["name"], "file": path.name,
                                     "when": when} for b in payload["benchmarks"]]))
    if not frames:
        raise SystemExit(f"no pytest-benchmark JSON in {folder}")
    frame = pd.concat(frames, ignore_index=True)
    frame["compile"] = _extra(frame, "compile").fillna(False).astype(bool)
    # runs before the end-to-end cells had their own batch timed one image
    frame["e2e_images"] = _extra(frame, "e2e_images").fillna(1)
    return frame


def _extra(frame: pd.DataFrame, key: str) -> pd.Series:
    """An extra_info field as a column (NaN where a benchmark lacks it)."""
    return frame[key] if key in frame else pd.Series([None] * len(frame), index=frame.index)


def generator_cells(frame: pd.DataFrame, measure: str = "step_ms") -> pd.DataFrame:
    """The generator rows that have ``measure``, one per generator x precision x compile (x batch for end-to-end
    cells); the grid's cell beats the smoke's, and of two runs of one cell the newer is shown, for every
    precision alike (an unstable sort once showed one session's bf16 beside another session's fp8rw)."""
    gen = frame[_extra(frame, measure).notna()].copy()
    gen["smoke"] = gen["file"].str.contains("smoke")
    key = ["generator", "precision", "compile"] + (["e2e_images"] if measure == "e2e_ms_per_image" else [])
    return gen.sort_values(["smoke", "when"], ascending=[True, False], kind="stable").drop_duplicates(key)


def same_session_bf16(frame: pd.DataFrame, row: pd.Series, measure: str, match: tuple[str, ...] = ()) -> float | None:
    """The eager bf16 ``measure`` of the row's generator from the run nearest in time to the row's own, so a
    ratio compares cells of one machine session (a later call on the same warm machine may hold no bf16 cell)."""
    ref = frame[(frame["generator"] == row["generator"]) & (frame["precision"] == "bf16")
                & ~frame["compile"] & frame[measure].notna()]
    for column in match:
        ref = ref[ref[column] == row[column]]
    if ref.empty:
        return None
    return float(ref.loc[(ref["when"] - row["when"]).abs().idxmin(), measure])


def generator_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per generator x precision (x compile): step latency, ratio to eager bf16 of the same machine session,
    weights, peak, TFLOP/s, roofline."""
    gen = generator_cells(frame)
    rows = []
    for _, r in gen.sort_values(["generator", "compile", "step_ms"]).iterrows():
        bf16 = same_session_bf16(frame, r, "step_ms")
        rows.append({
            "generator": r["generator"], "precision": r["precision"] + (" +compile" if r["compile"] else ""),
            "rows x latent": f"{int(r['step_batch'])} x {int(r['latent_size'])}",
            "step ms (median)": f"{r['step_ms']:.1f}", "min": f"{r['step_min_ms']:.1f}",
            "vs bf16": f"{r['step_ms'] / bf16:.2f}" if bf16 else "-",
            "weights GiB": f"{r['weights_bytes'] / GIB:.2f}", "peak GiB": f"{r['peak_vram_gib']:.2f}",
            "TFLOP/step": f"{r['flops_per_step'] / 1e12:.2f}", "TFLOP/s": f"{r['tflops_per_s']:.0f}",
            "of peak": f"{r['roofline_fraction']:.0%}",
        })
    return pd.DataFrame(rows)


def e2e_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per generator x precision (x compile) x batch: end-to-end ms per image (text encoders, denoiser steps,
    VAE), its ratio to eager bf16 at the same batch and steps from the same machine session, images/hour and
    peak VRAM. A cell whose calls made non-finite images (a red cell) says so beside its time."""
    e2e = generator_cells(frame, "e2e_ms_per_image")  # older runs recorded e2e_ms only, without the batch
    if e2e.empty:
        return pd.DataFrame()
    rows = []
    for _, r in e2e.sort_values(["generator", "e2e_images", "e2e_ms_per_image"]).iterrows():
        bf16 = same_session_bf16(frame, r, "e2e_ms_per_image", match=("e2e_images", "e2e_steps"))
        rows.append({
            "generator": r["generator"], "precision": r["precision"] + (" +compile" if r["compile"] else ""),
            "batch": int(r["e2e_images"]), "steps": int(r["e2e_steps"]),
            "ms/image (median)": f"{r['e2e_ms_per_image']:.1f}" + _nonfinite_note(r),
            "vs bf16": f"{r['e2e_ms_per_image'] / bf16:.2f}" if bf16 else "-",
            "images/hour": f"{r['images_per_hour']:.0f}", "peak GiB": f"{r['e2e_peak_vram_gib']:.2f}",
        })
    return pd.DataFrame(rows)


def _nonfinite_note(row: pd.Series) -> str:
    """`` (NaN images in 3 of 3 calls)`` for a cell that timed non-finite images; runs before the count: ``""``."""
    bad = row.get("e2e_nonfinite_calls")
    return f" (NaN images in {int(bad)} of {int(row['e2e_calls'])} calls)" if pd.notna(bad) and bad > 0 else ""


def compile_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Each torch.compile cell against the same precision in eager mode: speed-up, compile time, kernels."""
    gen = generator_cells(frame)
    eager = gen[~gen["compile"]].set_index(["generator", "precision"])["step_ms"]
    rows = []
    for _, r in gen[gen["compile"]].sort_values(["generator", "precision"]).iterrows():
        base = eager.get((r["generator"], r["precision"]))
        tuning, kernels = r.get("compile_tuning"), r.get("compile_kernels")  # absent from the first runs
        rows.append({
            "generator": r["generator"], "precision": r["precision"],
            "eager ms": f"{base:.1f}" if base is not None else "-", "compiled ms": f"{r['step_ms']:.1f}",
            "compiled / eager": f"{r['step_ms'] / base:.2f}" if base is not None else "-",
            "compile s": f"{r['compile_s']:.0f}",
            "kernels": f"{int(kernels)}" if kernels is not None and pd.notna(kernels) else "-",
            "tuning": ("coordinate descent" if tuning["coordinate_descent_tuning"] else "default")
            if isinstance(tuning, dict) else "not recorded",
        })
    return pd.DataFrame(rows)


def compact_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Precision rows x generator columns: "median step ms (x eager bf16), weight GiB" (the README table)."""
    full = generator_table(frame)
    full["cell"] = full["step ms (median)"] + " ms (" + full["vs bf16"] + "x), " + full["weights GiB"] + " GiB"
    registry = list(PRECISIONS)  # rows in the registry's order, compiled variants last
    order = sorted(set(full["precision"]), key=lambda p: (" " in p, registry.index(p.split()[0])))
    table = full.pivot(index="precision", columns="generator", values="cell").reindex(order).fillna("-")
    return table.reset_index()


def detector_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per detector x dtype x batch: images/s, peak memory, FLOP-bound images/s and the fraction reached."""
    det = frame[_extra(frame, "images_per_s").notna()]
    if det.empty:  # a run of generator cells only
        return pd.DataFrame()
    rows = []
    for _, r in det.sort_values(["detector", "precision", "batch"]).iterrows():
        rows.append({
            "detector": r["detector"], "dtype": r["precision"], "batch": int(r["batch"]),
            "input": f"{int(r['input_size'])} px", "images/s": f"{r['images_per_s']:.0f}",
            "batch ms": f"{r['batch_ms']:.1f}", "peak GiB": f"{r['peak_vram_gib']:.2f}",
            "GFLOP/image": f"{r['flops_per_image'] / 1e9:.1f}",
            "FLOP-bound images/s": f"{r['flop_bound_images_per_s']:.0f}", "of bound": f"{r['roofline_fraction']:.1%}",
        })
    return pd.DataFrame(rows)


def overhead_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Overhead guard: suite vs bare median ms, the paired ratio and its 95 % CI, the fixed cost per image."""
    ov = frame[_extra(frame, "overhead_ratio_median").notna()]
    if ov.empty:
        return pd.DataFrame()
    rows = []
    for _, r in ov.sort_values(["file", "generator"]).iterrows():
        low, high = r["overhead_ratio_ci95"]
        rows.append({
            "file": r["file"], "generator": r["generator"], "steps": int(r["steps"]),
            "suite ms": f"{r['suite_median_ms']:.1f}", "bare ms": f"{r['bare_median_ms']:.1f}",
            "ratio (median)": f"{r['overhead_ratio_median']:.3f}", "95% CI": f"{low:.3f}..{high:.3f}",
            "ms/image": f"{r['suite_median_ms'] - r['bare_median_ms']:.1f}",
            "guard": "fail" if high > 1 + r["overhead_tolerance"] else "pass",  # as bench/test_efficiency.py
        })
    return pd.DataFrame(rows)


def main(argv: list[str]) -> None:
    folder = Path(argv[0] if argv else "benchmarks/h100")
    frame = load(folder)
    names = sorted({str(n) for n in _extra(frame, "device_name").dropna()})
    print(f"device: {', '.join(names) or 'unknown'}; torch {', '.join(sorted(set(_extra(frame, 'torch_version').dropna())))}\n")
    for title, table in (("Summary: median step latency (ratio to eager bf16), weights", compact_table(frame)),
                         ("Generators (one denoiser step, random weights)", generator_table(frame)),
                         ("End to end (encode + denoise + decode, random weights)", e2e_table(frame)),
                         ("torch.compile against eager, same precision", compile_table(frame)),
                         ("Detectors (random init, native input size)", detector_table(frame)),
                         ("Overhead guard", overhead_table(frame))):
        if not table.empty:
            print(f"### {title}\n\n{table.to_markdown(index=False)}\n")


if __name__ == "__main__":
    main(sys.argv[1:])
