"""Where scripts/gate_rehearsal.sh plants its faults, read from a clean run's record (shell assignments).

    JPEG_PRECISION  a quantized precision whose fakes a cell compared with the reference precision (fidelity or
                    detection): its fakes get re-encoded at JPEG q30
    DROP_CELL       a detection / fidelity cell that passed: it is left out of the run
    SLOW_CELL       an efficiency step cell with a latency: it is delayed

Usage: python scripts/gate_targets.py RECORD.json   (prints NAME=value lines; a target it cannot find is empty)
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path
from typing import Any


def targets(record: dict[str, Any]) -> dict[str, str]:
    cells = [c for c in record.get("cells", []) if c.get("status") == "passed"]
    quality = [c for c in cells if c.get("kind") in ("fidelity", "detection")]
    compared = [c["params"]["precision"] for c in quality
                if c["params"].get("precision") != ((c.get("extra") or {}).get("reference_precision")
                                                    or (c.get("paired") or {}).get("reference_precision")
                                                    or c["params"].get("precision"))]
    steps = [c["cell_id"] for c in cells if c.get("kind") == "efficiency" and (c.get("params") or {}).get("measure") == "step"
             and "latency_ms" in (c.get("metrics") or {})]
    return {"JPEG_PRECISION": compared[0] if compared else "", "DROP_CELL": quality[0]["cell_id"] if quality else "",
            "SLOW_CELL": steps[0] if steps else ""}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("record", type=Path)
    args = parser.parse_args()
    for name, value in targets(json.loads(args.record.read_text())).items():
        print(f"{name}={shlex.quote(value)}")


if __name__ == "__main__":
    main()
