"""What one rank of ``quantfake generate`` did, as JSON in the store: the generation costs ``quantfake plan`` reads.

A bench over a store that ``quantfake generate`` filled generates nothing, so its run record holds no generation
cost: the 2-GPU rehearsal's only seconds per image were lines in a log (benchmarks/multigpu_h100). Each rank
therefore writes ``<store>/generate_records/<stamp>-rank<N>.json`` with every set it made (images, generation
seconds), every unit it ran (claimed and done, seconds since its work start) and its start-up phases;
:func:`per_image_costs` turns the records of one launch (all ranks) into seconds per image, loading included.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from quantfake.store import atomic_write_json

#: The ``kind`` field that tells a generate record from a run record or pytest-benchmark JSON.
RECORD_KIND = "quantfake-generate"
RECORDS_DIR = "generate_records"


def generate_record(*, rank: int, num_processes: int, device: str, device_name: str, options: Mapping[str, Any],
                    units: Sequence[Mapping[str, Any]], sets: Sequence[Mapping[str, Any]],
                    phases: Mapping[str, float]) -> dict[str, Any]:
    """The record of one rank. ``units``: ``unit`` (name), ``job``, ``began_s``, ``ended_s``; ``sets``: ``unit``,
    ``generator``, ``precision``, ``mode``, ``role``, ``generated``, ``reused``, ``seconds``, ``status``."""
    return {"kind": RECORD_KIND, "rank": rank, "num_processes": num_processes, "device": device,
            "device_name": device_name, "options": dict(options), "units": [dict(u) for u in units],
            "sets": [dict(s) for s in sets], "phases": dict(phases)}


def write_generate_record(store_root: Path, record: Mapping[str, Any]) -> Path:
    """Write atomically under the store; the name sorts by time and says the rank."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = Path(store_root) / RECORDS_DIR / f"{stamp}-rank{record['rank']}.json"
    atomic_write_json(path, record)
    return path


def is_generate_record(data: Mapping[str, Any]) -> bool:
    return data.get("kind") == RECORD_KIND


def per_image_costs(records: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str, str], float]:
    """Seconds per generated image for every (generator, precision, mode) the records' eval sets made.

    A unit's time not spent generating (loading and quantizing the pipeline, the store) is charged to its first
    set that generated images, as a bench record charges the load to the first cell of a set; the shards of one
    set, on several ranks, add up (their seconds and their images).
    """
    seconds: dict[tuple[str, str, str], float] = {}
    images: dict[tuple[str, str, str], int] = {}
    for record in records:
        for unit in record.get("units", []):
            own = [s for s in record.get("sets", []) if s.get("unit") == unit["unit"]]
            load = max(0.0, unit["ended_s"] - unit["began_s"] - sum(s.get("seconds", 0.0) for s in own))
            for s in own:
                if s.get("role") != "eval" or not s.get("generated"):
                    continue
                key = (s["generator"], s["precision"], s["mode"])
                seconds[key] = seconds.get(key, 0.0) + s["seconds"] + load
                images[key] = images.get(key, 0) + s["generated"]
                load = 0.0
    return {key: seconds[key] / images[key] for key in seconds}
