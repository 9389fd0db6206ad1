"""Per-cell cost of a recorded tiny run, measured here and projected to a CPU where half precision is slow.

    python scripts/tiny_cost_table.py reports/history/<run-id>.json [--half-slowdown 25]

Columns: generation seconds charged to the cell (the image sets it had to make), the rest of the cell
(scoring, statistics, fidelity), and the projection for a CPU whose fp16 / bf16 arithmetic is
``--half-slowdown`` x fp32 (issue 14: 10-25x on AVX2-only EPYCs). The projection rescales each half-precision
cell's generation time by (target slow-down / this machine's measured slow-down of that dtype), from the
cells' own recorded times; the rest of a cell runs in fp32 and is kept. The reference (fp32) set of a
quantized cell is charged to the first cell that needed it, so the first cells also carry the tiny detectors'
training (their fakes and the training itself).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tabulate import tabulate  # noqa: E402

from quantfake.grids import half_kind  # noqa: E402
from quantfake.measure.half_speed import half_slowdown  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("record", type=Path)
    ap.add_argument("--half-slowdown", type=float, default=25.0)
    args = ap.parse_args()
    record = json.loads(args.record.read_text())
    here = half_slowdown()
    rows, totals, charged = [], [0.0, 0.0, 0.0], set()
    for cell in sorted(record["cells"], key=lambda c: (c.get("timings") or {}).get("start_unix", 0.0)):
        t, p = cell.get("timings") or {}, cell.get("params") or {}
        key = (cell.get("extra") or {}).get("generation_key")
        # a set's generation is charged to the first cell that needed it; later cells reuse it from memory
        gen = float(t.get("generation_s") or 0.0) if key and key not in charged and t.get("generated") else 0.0
        if gen:
            charged.add(key)
        rest = max(0.0, float(t.get("cell_s") or 0.0) - gen)
        kind = half_kind(p["precision"]) if p.get("precision") else None
        factor = max(1.0, args.half_slowdown / max(here.get(kind, 1.0), 1.0)) if kind else 1.0
        projected = gen * factor + rest
        rows.append([cell["cell_id"], cell["kind"], int(t.get("generated") or 0) if gen else 0, f"{gen:.1f}", f"{rest:.1f}",
                     f"{projected:.1f}"])
        totals = [totals[0] + gen, totals[1] + rest, totals[2] + projected]
    rows.append(["total", "", "", f"{totals[0]:.0f}", f"{totals[1]:.0f}", f"{totals[2]:.0f}"])
    print(f"this CPU: fp16 {here['fp16']:.1f}x, bf16 {here['bf16']:.1f}x fp32 (measured); projection: "
          f"{args.half_slowdown:.0f}x for both")
    print(tabulate(rows, headers=["cell", "kind", "images made", "generation s", "scoring+stats s",
                                  f"projected s ({args.half_slowdown:.0f}x half)"], tablefmt="github"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
