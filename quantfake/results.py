"""Run records: one JSON per benchmark run, appended to a history folder.

Cells can be produced by several pytest-xdist workers at once.  Each worker
writes one JSON file per cell into ``<history>/.partial/<run_id>/`` (atomic
tmp-file + ``os.replace``), and the controller calls :meth:`RunRecorder.finalize`
to merge them into ``<history>/<run_id>.json``.  Run ids start with a UTC
timestamp, then a counter that grows by one with every run of the history folder,
so sorting file names sorts runs by time, runs of the same second included.
Session-level *notices* (excluded real images, short real pools, repaired store
entries) are written beside the cells and merged into ``notices``.

The record schema (``schema: 1``) is read by the report writers; keep the key
names stable.  Non-finite floats (NaN, inf) are stored as ``null`` so the files
are strict JSON.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import re
import secrets
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock

from quantfake.environment import collect_environment
from quantfake.store import atomic_write_json

__all__ = [
    "SCHEMA_VERSION",
    "STATUSES",
    "CellResult",
    "RunRecorder",
    "new_run_id",
    "list_runs",
    "load_run",
    "read_run_record",
    "write_json_atomic",
    "jsonable",
    "cells_by_id",
    "iter_cells",
]

SCHEMA_VERSION = 1
STATUSES: tuple[str, ...] = ("passed", "failed", "error", "skipped")
RUN_ALIASES: tuple[str, ...] = ("latest", "previous")
#: ``<UTC time>-<counter>-<4 hex>``; the older ``<UTC time>-<8 hex>`` ids are still read
_RUN_ID_RE = re.compile(r"^\d{8}T\d{6}Z-(?:\d{6}-[0-9a-f]{4}|[0-9a-f]{8})$")
_RUN_COUNTER = ".run-counter"
_process_counter = itertools.count(1)


def jsonable(value: Any) -> Any:
    """Plain-JSON copy: numpy scalars/arrays to Python, tuples to lists, NaN/inf to None."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy scalar or array
        return jsonable(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> Path:
    """Run records and baselines: strict JSON (no NaN) in the order given, written atomically by the store's
    writer (temp file in the same folder, fsync, ``os.replace``)."""
    target = Path(path)
    atomic_write_json(target, jsonable(data), sort_keys=False, allow_nan=False)
    return target


@dataclass
class CellResult:
    """One benchmark cell (e.g. generator x precision x mode x detector) and its numbers.

    ``ci95`` maps metric -> [lo, hi]; ``se`` maps metric -> bootstrap standard
    error (used by the regression test in :mod:`quantfake.baselines`);
    ``paired`` holds :func:`quantfake.stats.paired_shift` output plus
    ``reference_precision``, or None when there is no reference.
    """

    cell_id: str
    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    status: str = "passed"
    message: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    ci95: dict[str, list[float]] = field(default_factory=dict)
    se: dict[str, float] = field(default_factory=dict)
    n: dict[str, int] = field(default_factory=dict)
    paired: dict[str, Any] | None = None
    scores: dict[str, list[float]] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.cell_id:
            raise ValueError("cell_id must be a non-empty string")
        if self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r}; accepted: {list(STATUSES)}")

    def to_dict(self) -> dict[str, Any]:
        """Strict-JSON dict in the record schema's key order."""
        return jsonable({f.name: getattr(self, f.name) for f in fields(self)})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CellResult:
        """Inverse of :meth:`to_dict`; unknown keys go to ``extra['unknown_keys']`` rather than vanish."""
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        unknown = {k: v for k, v in data.items() if k not in known}
        cell = cls(**kwargs)
        # JSON stores NaN as null; bring it back so arithmetic on metrics stays float.
        cell.metrics = {k: (math.nan if v is None else float(v)) for k, v in cell.metrics.items()}
        cell.se = {k: (math.nan if v is None else float(v)) for k, v in cell.se.items()}
        cell.ci95 = {k: [math.nan if x is None else float(x) for x in v] for k, v in cell.ci95.items()}
        if unknown:
            cell.extra = {**cell.extra, "unknown_keys": unknown}
        return cell


def new_run_id(now: datetime | None = None, history_dir: str | os.PathLike[str] | None = None) -> str:
    """``<UTC yyyymmddThhmmssZ>-<counter>-<4 hex>``: sorts by time, and within one second by a counter.

    The counter lives in ``<history_dir>/.run-counter`` and grows under a file lock, so two runs started in the
    same second on one history sort in the order they started (not by a random suffix); without a history
    folder it counts within this process. The hex suffix keeps ids unique across history folders.
    """
    now = now or datetime.now(timezone.utc)
    counter = _next_count(Path(history_dir)) if history_dir is not None else next(_process_counter)
    return f"{now.astimezone(timezone.utc):%Y%m%dT%H%M%SZ}-{counter % 1_000_000:06d}-{secrets.token_hex(2)}"


def _next_count(history_dir: Path) -> int:
    """The next value of the history's run counter (1 for a new history)."""
    history_dir.mkdir(parents=True, exist_ok=True)
    path = history_dir / _RUN_COUNTER
    with FileLock(str(path) + ".lock"):
        try:
            count = int(path.read_text().strip() or 0) + 1
        except (FileNotFoundError, ValueError):
            count = 1 + len(list_runs(history_dir))
        write_json_atomic(path, count)
    return count


def _cell_filename(cell_id: str) -> str:
    """Readable but filesystem-safe, with a hash so distinct ids never collide."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", cell_id)[:120]
    return f"{safe}-{hashlib.sha1(cell_id.encode()).hexdigest()[:8]}.json"


class RunRecorder:
    """Collects cells of one run (from one or many processes) and writes the run record.

    Every process of a run must use the same ``run_id`` (the controller creates
    it and hands it to workers).  A cell added twice keeps the last version.
    """

    def __init__(
        self,
        history_dir: str | os.PathLike[str],
        profile: str,
        options: Mapping[str, Any] | None = None,
        run_id: str | None = None,
    ) -> None:
        self.history_dir = Path(history_dir)
        self.profile = profile
        self.options = dict(options or {})
        self.run_id = run_id or new_run_id(history_dir=self.history_dir)
        if not _RUN_ID_RE.match(self.run_id):
            raise ValueError(f"run_id {self.run_id!r} is not of the form yyyymmddThhmmssZ-<6-digit counter>-<4 hex>")
        self.created = datetime.now(timezone.utc).isoformat(timespec="seconds")

    @property
    def partial_dir(self) -> Path:
        return self.history_dir / ".partial" / self.run_id

    @property
    def record_path(self) -> Path:
        return self.history_dir / f"{self.run_id}.json"

    def add(self, cell: CellResult | Mapping[str, Any]) -> Path:
        """Write one cell atomically; safe to call from several processes."""
        cell = cell if isinstance(cell, CellResult) else CellResult.from_dict(cell)
        return write_json_atomic(self.partial_dir / "cells" / _cell_filename(cell.cell_id), cell.to_dict())

    def add_notice(self, notice: Mapping[str, Any]) -> Path:
        """Write one session-level notice (``kind``, ``message``, details); the same notice twice is kept once."""
        data = jsonable(dict(notice))
        name = hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
        return write_json_atomic(self.partial_dir / "notices" / f"{name}.json", data)

    def notices(self) -> list[dict[str, Any]]:
        """Notices written so far, sorted by kind and message."""
        folder = self.partial_dir / "notices"
        found = [json.loads(p.read_text("utf-8")) for p in folder.glob("*.json")] if folder.is_dir() else []
        return sorted(found, key=lambda n: (str(n.get("kind")), str(n.get("message"))))

    def cells(self) -> list[CellResult]:
        """Cells written so far, sorted by ``cell_id``."""
        folder = self.partial_dir / "cells"
        if not folder.is_dir():
            return []
        cells = [CellResult.from_dict(json.loads(p.read_text("utf-8"))) for p in folder.glob("*.json")]
        return sorted(cells, key=lambda c: c.cell_id)

    def finalize(
        self,
        environment: Mapping[str, Any] | None = None,
        benchmark_json: str | os.PathLike[str] | None = None,
        keep_partial: bool = False,
    ) -> Path:
        """Merge the cell files into ``history/<run_id>.json`` (atomic, under a file lock)."""
        self.history_dir.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.history_dir / ".history.lock")):
            record = {
                "schema": SCHEMA_VERSION,
                "run_id": self.run_id,
                "created": self.created,
                "profile": self.profile,
                "options": self.options,
                "environment": dict(environment) if environment is not None else collect_environment(),
                "cells": [c.to_dict() for c in self.cells()],
                "notices": self.notices(),
                "benchmark_json": str(benchmark_json) if benchmark_json else None,
            }
            path = write_json_atomic(self.record_path, record)
            if not keep_partial:
                shutil.rmtree(self.partial_dir, ignore_errors=True)
        return path


def list_runs(history_dir: str | os.PathLike[str]) -> list[Path]:
    """Run records in ``history_dir``, oldest first."""
    folder = Path(history_dir)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.json") if _RUN_ID_RE.match(p.stem))


def load_run(path_or_alias: str | os.PathLike[str], history_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Load a run record from a file path, a run id, or ``latest`` / ``previous`` in ``history_dir``."""
    ref = str(path_or_alias)
    if ref in RUN_ALIASES:
        if history_dir is None:
            raise ValueError(f"alias {ref!r} needs history_dir")
        runs = list_runs(history_dir)
        need = 1 if ref == "latest" else 2
        if len(runs) < need:
            raise FileNotFoundError(f"{ref!r} needs {need} run(s) in {history_dir}, found {len(runs)}")
        path = runs[-need]
    else:
        path = Path(ref)
        if not path.is_file() and history_dir is not None:
            candidate = Path(history_dir) / (ref if ref.endswith(".json") else f"{ref}.json")
            path = candidate if candidate.is_file() else path
        if not path.is_file():
            raise FileNotFoundError(
                f"no run record {ref!r}; accepted: a file path, a run id in {history_dir}, or {list(RUN_ALIASES)}"
            )
    return read_run_record(path)


def read_run_record(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load one run record file and check it is one (a JSON object of this schema with a ``cells`` list): the
    one reader behind ``compare``, ``report`` and the report's history. ``run_id`` defaults to the file name."""
    path = Path(path)
    record = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(record, dict):
        raise ValueError(f"run record {path} holds a {type(record).__name__}; expected a JSON object")
    if record.get("schema") != SCHEMA_VERSION:
        raise ValueError(f"{path}: unsupported schema {record.get('schema')!r}; accepted: {SCHEMA_VERSION}")
    if not isinstance(record.get("cells"), list):
        raise ValueError(f"run record {path} has no 'cells' list")
    record.setdefault("run_id", path.stem)
    record.setdefault("_path", str(path))
    return record


def cells_by_id(record: Mapping[str, Any]) -> dict[str, CellResult]:
    """``{cell_id: CellResult}`` of a loaded run record."""
    return {c["cell_id"]: CellResult.from_dict(c) for c in record.get("cells", [])}


def iter_cells(records: Iterable[Mapping[str, Any]]) -> Iterable[CellResult]:
    """All cells of several run records, in order."""
    for record in records:
        yield from cells_by_id(record).values()
