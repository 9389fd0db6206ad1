"""fp32 vs mixed precision, per detector at its native input: max |score difference| and decision flips.

For each detector (full-size random weights, and the tiny detectors trained on the tiny world), scores the
same images in fp32 and under ``torch.autocast`` fp16 / bf16 (detector precisions ``fp16amp`` / ``bf16amp``)
and writes the shift of each from fp32 (``quantfake.detectors.precision_check``) to one JSON file.

Images: full-size detectors get ``--n-images`` square crops of the shipped photographs at ``--size`` px
(NPR resizes them to 256, CLIP-D to 224 then crops, UnivFD crops 224; the two ResNet-50s read them at full
resolution); tiny detectors get the tiny world's evaluation reals at its 64 px. Random weights make the
scores meaningless as detections, not as numerics: the differences are what is measured.

    python scripts/detector_autocast_check.py --out $OUT/detector_autocast.json              # CUDA, ~1-3 min
    python scripts/detector_autocast_check.py --device cpu --profiles random --detectors npr --n-images 4
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from pathlib import Path
from typing import Any

import torch
from tabulate import tabulate

from quantfake.detector_precisions import DETECTOR_PRECISIONS
from quantfake.detectors import DETECTORS, load_detector
from quantfake.detectors.precision_check import compare_precisions
from quantfake.environment import collect_environment
from quantfake.options import build_options, parse_ids
from quantfake.realdata import tiny_real_set
from quantfake.store import atomic_write_json

PROFILES = ("random", "tiny")


def _detectors(profile: str, ids: list[str], device: str, store: Path | None) -> Any:
    """(id, fp32 detector, images) per detector; the tiny ones are trained (or read from the store) by the session."""
    if profile == "random":
        for det_id in ids:
            yield det_id, load_detector(det_id, "random", device=device)
        return
    from quantfake.session.engine import Session

    session = Session.open(build_options({"profile": "tiny", "device": device, "store": str(store) if store else "",
                                          "detectors": ",".join(ids)}))
    for det_id in ids:
        yield det_id, session.detectors.fp32(det_id)


def _images(profile: str, n: int, size: int, device: str, store: Path | None) -> list:
    if profile == "random":
        return list(tiny_real_set(size=size, n=n, seed=0).images)
    from quantfake.session.engine import Session

    session = Session.open(build_options({"profile": "tiny", "device": device, "store": str(store) if store else ""}))
    reals = list(session.reals.pool("evaluation").images)
    return (reals * (n // len(reals) + 1))[:n]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("detector_autocast.json"))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--profiles", default="random,tiny", help=f"comma-separated: {', '.join(PROFILES)}")
    ap.add_argument("--detectors", default="all", help=f"comma-separated ids or all: {', '.join(DETECTORS)}")
    ap.add_argument("--precisions", default="fp16amp,bf16amp",
                    help=f"detector precisions compared with fp32 (no calibration ones): {', '.join(DETECTOR_PRECISIONS)}")
    ap.add_argument("--n-images", type=int, default=64)
    ap.add_argument("--size", type=int, default=256, help="side of the full-size detectors' images (px)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--store", type=Path, default=None, help="store for the tiny world (default: $QUANTFAKE_STORE)")
    args = ap.parse_args()
    try:
        profiles = parse_ids(args.profiles, "profile", PROFILES, PROFILES)
        ids = list(parse_ids(args.detectors, "detector", DETECTORS, tuple(DETECTORS)))
        precisions = parse_ids(args.precisions, "detector precision", DETECTOR_PRECISIONS, ())
    except ValueError as exc:
        ap.error(str(exc))
    record: dict[str, Any] = {"device": args.device, "n_images": args.n_images, "size": args.size,
                              "precisions": list(precisions), "environment": collect_environment(), "results": {}}
    rows = []
    start = time.perf_counter()
    for profile in profiles:
        images = _images(profile, args.n_images, args.size, args.device, args.store)
        record["results"][profile] = {}
        for det_id, det in _detectors(profile, ids, args.device, args.store):
            res = compare_precisions(det, images, precisions, device=args.device, batch_size=args.batch_size)
            res["detector"] = {k: det.describe()[k] for k in ("checkpoint_sha256", "parameters", "preprocess")}
            record["results"][profile][det_id] = res
            for p, r in res["precisions"].items():
                rows.append((profile, det_id, p, f"{r['max_abs_score_diff']:.3g}", f"{r['mean_abs_score_diff']:.3g}",
                             f"{r['decision_flips']}/{r['n_images']}", f"{res['fp32_score_std']:.3g}"))
            record["seconds"] = time.perf_counter() - start
            args.out.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(args.out, record)
            del det
            gc.collect()
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()
    print(tabulate(rows, headers=["profile", "detector", "precision", "max |diff|", "mean |diff|", "flips",
                                  "fp32 score std"]))
    print(f"{time.perf_counter() - start:.0f} s on {args.device}; JSON: {args.out}")
    print(json.dumps({"seconds": round(record["seconds"], 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
