"""Per-worker timeline of a bench run: when each worker started and ended, how long it was busy, what it ran.

    python scripts/worker_timeline.py reports/history/<run-id>.json [--cells]

Reads the ``start_unix`` / ``end_unix`` / ``worker`` / ``device`` / ``cpu_threads`` timings every cell records
(fixtures/plugin.py; threads since ``--cpu-affinity`` for pytest workers, "?" in older records):
start is the first cell's start on that worker (process start and collection come before it), busy the sum of
its cells, idle = span - busy (waiting for a lock held by another worker, or between groups), and the
generation seconds of the image sets the worker made itself (each set counted once).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from tabulate import tabulate


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("record", type=Path)
    ap.add_argument("--cells", action="store_true", help="also list every cell in start order")
    args = ap.parse_args()
    cells = [c for c in json.loads(args.record.read_text())["cells"] if "start_unix" in (c.get("timings") or {})]
    if not cells:
        print("no cell timeline in this record (recorded since issue 17)")
        return 1
    t0 = min(c["timings"]["start_unix"] for c in cells)
    per: dict[str, list[dict]] = defaultdict(list)
    for c in cells:
        per[c["timings"].get("worker", "main")].append(c)
    rows = []
    for worker, own in sorted(per.items()):
        own.sort(key=lambda c: c["timings"]["start_unix"])
        start, end = own[0]["timings"]["start_unix"] - t0, own[-1]["timings"]["end_unix"] - t0
        busy = sum(c["timings"]["end_unix"] - c["timings"]["start_unix"] for c in own)
        sets = {(c.get("extra") or {}).get("generation_key"): c["timings"].get("generation_s", 0.0)
                for c in own if c["timings"].get("generated")}
        groups = list(dict.fromkeys(f"{c['params']['generator']}-{c['params']['precision']}" for c in own))
        threads = ",".join(sorted({str(c["timings"].get("cpu_threads", "?")) for c in own}))
        rows.append([worker, own[0]["timings"].get("device", ""), threads, len(own), f"{start:.1f}", f"{end:.1f}",
                     f"{busy:.1f}", f"{end - start - busy:.1f}", f"{sum(sets.values()):.1f}", " ".join(groups)])
    print(tabulate(rows, headers=["worker", "device", "threads", "cells", "first start s", "last end s", "busy s", "idle s",
                                  "generation s", "groups in order"], tablefmt="github"))
    if args.cells:
        for c in sorted(cells, key=lambda c: c["timings"]["start_unix"]):
            t = c["timings"]
            print(f"{t['start_unix'] - t0:8.1f} {t['end_unix'] - t0:8.1f} {t.get('worker', 'main'):5s} {c['cell_id']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
