"""Print the closing-note tables of a recorded run: AUC grid, drift table, detector-precision table.

    python scripts/summarize_run.py [RUN|latest] [--history reports/history]
"""

from __future__ import annotations

import argparse

import pandas as pd

from quantfake.results import load_run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", nargs="?", default="latest")
    ap.add_argument("--history", default="reports/history")
    args = ap.parse_args()
    rec = load_run(args.run, args.history)
    rows = []
    for c in rec["cells"]:
        p, m, ci, pr = c["params"], c["metrics"], c.get("ci95") or {}, c.get("paired") or {}
        rows.append({**p, "kind": c["kind"], "status": c["status"], **m,
                     "auc_ci": "[{:.3f}, {:.3f}]".format(*ci["auc"]) if "auc" in ci else "",
                     "delta_auc": pr.get("delta_auc"), "p_delong": pr.get("delta_auc_p_delong"),
                     "wilcoxon_p": pr.get("wilcoxon_p"), "ks": pr.get("ks"),
                     "bytes": ((c.get("extra") or {}).get("detector_quantization") or {}).get("bytes_after"),
                     "bytes_fp32": ((c.get("extra") or {}).get("detector_quantization") or {}).get("bytes_before"),
                     "ms_per_image": (c.get("extra") or {}).get("detector_ms_per_image"),
                     "ms_fp32": (c.get("extra") or {}).get("reference_detector_ms_per_image")})
    df = pd.DataFrame(rows)
    # params['detector'] is the detector token: non-RGB inputs get their own column (r50nodown+npr)
    print(f"run {rec['run_id']} profile {rec['profile']}: {len(df)} cells, "
          f"{df.status.value_counts().to_dict()}")
    det = df[df.kind == "detection"]
    if len(det):
        print("\nAUC (generator x precision x mode rows, detector columns)")
        print(det.pivot_table(index=["generator", "mode", "precision"], columns="detector", values="auc")
              .round(3).to_markdown())
        print("\nmedian per-image score shift vs reference: Wilcoxon p (detector columns)")
        print(det.pivot_table(index=["generator", "mode", "precision"], columns="detector", values="wilcoxon_p")
              .map(lambda v: f"{v:.1e}").to_markdown())
    fid = df[df.kind == "fidelity"]
    if len(fid):
        print("\nFidelity: drift vs reference precision (same seeds)")
        cols = [c for c in ("psnr", "ssim", "mad", "latent_rel_l2") if c in fid]
        print(fid.pivot_table(index=["generator", "precision"], columns="mode", values=cols).round(3).to_markdown())
    dq = df[df.kind == "detector_precision"]
    if len(dq):
        print("\nDetector precision (pooled over generators)")
        g = dq.groupby(["detector", "detector_precision"]).agg(
            bytes=("bytes", "first"), bytes_fp32=("bytes_fp32", "first"), ms_per_image=("ms_per_image", "median"),
            ms_fp32=("ms_fp32", "median"), auc=("auc", "mean"), delta_auc=("delta_auc", "mean"),
            p_delong_min=("p_delong", "min"), cells=("auc", "size"))
        print(g.round(4).to_markdown())


if __name__ == "__main__":
    main()
