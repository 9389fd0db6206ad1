"""Generator x precision table of the tiny profile on this machine: runs / skipped (reason), denoiser weight
bytes (verified), and seconds per image from the store's manifests (run the bench first).

    python scripts/foundation_table.py [--store .quantfake]
"""

from __future__ import annotations

import argparse
import json
import statistics

from quantfake.environment import quiet_libraries
from quantfake.errors import PrecisionUnavailable
from quantfake.generators import GENERATORS
from quantfake.loading import load_pipeline
from quantfake.store import Store


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", default=".quantfake")
    ap.add_argument("--precisions", default="fp32,fp16,bf16,fp8,int8,nf4,fp4,fp8dq,int8wo,int8dq,w8,w4,w2")
    args = ap.parse_args()
    quiet_libraries()
    store = Store(args.store)
    precs = args.precisions.split(",")
    print("| generator | " + " | ".join(precs) + " |")
    print("|---" * (len(precs) + 1) + "|")
    for g in GENERATORS:
        cells = []
        for p in precs:
            try:
                lp = load_pipeline(g, p, "tiny", store=store)
            except PrecisionUnavailable as exc:
                cells.append(f"skip ({exc})")
                continue
            except Exception as exc:  # noqa: BLE001 - the table reports it
                cells.append(f"error ({type(exc).__name__})")
                continue
            den = lp.verification[lp.generator.denoiser]
            secs = []
            for folder in store.root.glob(f"images/{g}-{p}-txt2img-*"):
                secs += [json.loads(f.read_text())["seconds"] for f in folder.glob("[0-9]*.json")]
            s = f"{statistics.median(secs):.3f} s/img" if secs else "not generated"
            packed = f" (packed {den['packed_weights_bytes'] / 1e6:.2f} MB)" if "packed_weights_bytes" in den else ""
            cells.append(f"{den['weights_bytes'] / 1e6:.2f} MB{packed}, {s}")
        print(f"| {g} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
