"""Summarize a --vram-budget rehearsal: per generator x precision, the memory fit chosen, s/image and peak GiB.

Reads the pytest-benchmark JSON of ``scripts/vram_budget_rehearsal.sh``'s stages (and its ``stages.tsv``: stage,
exit status, seconds) and writes one JSON document (``--out``) plus a Markdown table on stdout. s/image is measured
at the rehearsal's ``--steps``; ``s_per_image_native_est`` adds the remaining steps of the generator's default at the
measured step time (a derived number, labelled so).

    python scripts/vram_budget_summary.py OUT/vram_budget_*.json --stages OUT/stages.tsv --out OUT/summary.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from quantfake.generators import get_generator  # noqa: E402


def _status(extra: dict[str, Any]) -> str:
    if extra.get("memory_fit_refused"):
        return "refused: no recipe fits"
    if extra.get("oom"):
        return "out of memory"
    return "ran"


def row(extra: dict[str, Any]) -> dict[str, Any]:
    """One benchmark entry's numbers that answer "does it fit, how, how fast"."""
    fit = extra.get("memory_fit") or {}
    steps, step_ms, e2e_ms = extra.get("e2e_steps"), extra.get("step_ms"), extra.get("e2e_ms_per_image")
    native = get_generator(extra["generator"]).default_steps
    est = (e2e_ms + (native - steps) * step_ms) / 1e3 if e2e_ms and step_ms and steps else None
    return {
        "generator": extra["generator"], "precision": extra["precision"], "status": _status(extra),
        "memory_fit": fit.get("summary"), "offload_applied": fit.get("offload_applied"),
        "budget_gib": fit.get("budget_gib"), "estimate_gib": fit.get("estimate_gib"),
        "peak_gib": extra.get("e2e_peak_vram_gib"), "peak_reserved_gib": extra.get("e2e_peak_reserved_gib"),
        "steps": steps, "s_per_image": e2e_ms / 1e3 if e2e_ms else None, "step_ms": step_ms,
        "native_steps": native, "s_per_image_native_est": est, "load_s": extra.get("load_s"),
        "batch4": ("skipped: " + extra["e2e_b4_skipped"]) if extra.get("e2e_b4_skipped") else
                  "out of memory" if extra.get("e2e_b4_oom") else extra.get("e2e_ms_per_image_b4"),
        "device_name": extra.get("device_name"),
        "error": extra.get("memory_fit_refused") or extra.get("oom_error"),
    }


def merged_cells(paths: list[Path]) -> list[dict[str, Any]]:
    """One dict per generator x precision: its step cell's fields, its batch-1 end-to-end cell's, and a larger
    batch's as ``e2e_ms_per_image_b<n>`` (pytest-benchmark times one function per cell, so they are separate)."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for path in paths:
        if not path.exists():
            continue
        for bench in json.loads(path.read_text())["benchmarks"]:
            extra = bench.get("extra_info") or {}
            if not extra.get("generator"):
                continue
            cell = merged.setdefault((extra["generator"], extra["precision"]), {})
            images = extra.get("images", 1)
            if extra.get("measure") == "e2e" and images > 1:
                if extra.get("oom"):
                    cell[f"e2e_b{images}_oom"] = True
                else:
                    cell[f"e2e_ms_per_image_b{images}"] = extra.get("e2e_ms_per_image")
                continue
            cell.update({k: v for k, v in extra.items() if v is not None or k not in cell})
    return list(merged.values())


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("benchmark_json", nargs="*", type=Path)
    parser.add_argument("--stages", type=Path, help="stages.tsv: stage name, exit status, seconds")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    rows = [row(extra) for extra in merged_cells(args.benchmark_json)]
    stages = []
    if args.stages and args.stages.exists():
        for line in args.stages.read_text().splitlines():
            name, rc, seconds = line.split("\t")
            stages.append({"stage": name, "exit_status": int(rc), "seconds": int(seconds),
                           "timed_out": int(rc) in (124, 137)})
    args.out.write_text(json.dumps({"cells": rows, "stages": stages}, indent=1))
    print("| generator | precision | status | memory fit | estimate / peak GiB | s/image (steps) | "
          "s/image native (est.) | load s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['generator']} | {r['precision']} | {r['status']} | {_fmt(r['memory_fit'])} | "
              f"{_fmt(r['estimate_gib'])} / {_fmt(r['peak_gib'])} | {_fmt(r['s_per_image'])} ({_fmt(r['steps'])}) | "
              f"{_fmt(r['s_per_image_native_est'])} ({r['native_steps']}) | {_fmt(r['load_s'], 1)} |")
    for s in stages:
        print(f"stage {s['stage']}: exit {s['exit_status']} in {s['seconds']} s" + (" (timed out)" if s["timed_out"] else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
