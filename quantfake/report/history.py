"""Earlier runs: load a folder of run records and lay one metric out over time.

Why: a single run says where a precision stands; a history says whether a
change made it worse.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from quantfake.results import read_run_record

__all__ = ["load_history", "trend_frame"]

LOG = logging.getLogger(__name__)


def load_history(history_dir: str | Path) -> list[dict[str, Any]]:
    """All schema-1 run records directly in ``history_dir``, oldest first.

    Files that are not run records are skipped with a warning, so a history
    folder may also hold manifests or benchmark JSON.
    """
    root = Path(history_dir)
    if not root.is_dir():
        raise NotADirectoryError(f"history folder {str(root)!r} is not a directory")
    records: list[dict[str, Any]] = []
    for path in sorted(root.glob("*.json")):
        try:
            records.append(read_run_record(path))
        except (OSError, ValueError) as error:
            LOG.warning("skipping history file %s: not a readable run record (%s)", path, error)
    records.sort(key=lambda r: (str(r.get("created", "")), str(r.get("run_id"))))
    return records


def trend_frame(records: Sequence[dict[str, Any]], metric: str) -> pd.DataFrame:
    """Long frame (run_index, run_id, created, cell_id, value) of ``metric`` per cell per run."""
    rows: list[dict[str, Any]] = []
    for index, record in enumerate(records):
        for cell in record.get("cells", []):
            value = (cell.get("metrics") or {}).get(metric)
            if isinstance(value, (int, float)):
                rows.append({
                    "run_index": index, "run_id": record.get("run_id", str(index)),
                    "created": record.get("created", ""), "cell_id": cell.get("cell_id", ""),
                    "value": float(value),
                })
    return pd.DataFrame(rows, columns=["run_index", "run_id", "created", "cell_id", "value"])
