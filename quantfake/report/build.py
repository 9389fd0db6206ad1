"""``build_report``: run record (+ benchmarks, + history) -> ``index.html`` and ``report.md``."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from quantfake.report import sections
from quantfake.report.document import Report, Section
from quantfake.report.history import load_history
from quantfake.report.html import write_html
from quantfake.report.markdown import write_markdown
from quantfake.report.record import benchmark_frame, cells_frame, load_benchmark_json
from quantfake.results import read_run_record

__all__ = ["build_report", "assemble_report", "default_out_dir"]

LOG = logging.getLogger(__name__)
REPORTS_DIR = Path("reports")


def default_out_dir(run_id: str) -> Path:
    """``reports/<run-id>/`` with the id made filesystem-safe."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", run_id).strip("._") or "run"
    return REPORTS_DIR / safe


def assemble_report(record: Mapping[str, Any], base_dir: Path, bench: pd.DataFrame,
                    history: Sequence[Mapping[str, Any]],
                    comparison_rows: Sequence[Mapping[str, Any]] | None,
                    trend_metric: str = "auc") -> Report:
    """All sections in order; optional sections are left out when their data are absent."""
    cells = cells_frame(record)
    optional: list[Section | None] = [
        sections.fidelity_section(cells),
        sections.efficiency_section(bench),
        sections.generation_section(record),
        sections.samples_section(record, base_dir),
        sections.history_section(history, comparison_rows, trend_metric),
    ]
    ordered = [
        sections.summary_section(record, cells),
        sections.detection_section(cells),
        sections.score_section(record),
        sections.paired_section(cells),
        *[s for s in optional if s is not None],
        sections.environment_section(record),
    ]
    return Report(f"quantfake report: {record.get('run_id')}", ordered)


def build_report(run_record_path: str | Path, out_dir: str | Path | None = None,
                 benchmark_json: str | Path | None = None, history_dir: str | Path | None = None,
                 comparison_rows: Sequence[Mapping[str, Any]] | None = None,
                 trend_metric: str = "auc") -> Path:
    """Write ``index.html`` (self-contained) and ``report.md`` (+ PNGs); return the out dir.

    ``benchmark_json`` defaults to the record's own ``benchmark_json`` entry (relative
    paths resolve against the record's folder). ``comparison_rows`` come from the
    compare module: dicts with cell_id, metric, a, b, delta, p, regression.
    """
    record_path = Path(run_record_path)
    record = read_run_record(record_path)
    base_dir = record_path.parent
    bench = pd.DataFrame()
    if benchmark_json is not None:  # asked for explicitly: a missing file is an error
        bench = benchmark_frame(load_benchmark_json(benchmark_json))
    elif record.get("benchmark_json"):  # named by the record: resolve beside it, skip if gone
        recorded = Path(record["benchmark_json"])
        candidates = [recorded] if recorded.is_absolute() else [base_dir / recorded, recorded]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            LOG.warning("benchmark JSON %s named by the run record is missing; no Efficiency section",
                        recorded)
        else:
            bench = benchmark_frame(load_benchmark_json(found))
    history = load_history(history_dir) if history_dir is not None else []
    target = Path(out_dir) if out_dir is not None else default_out_dir(str(record["run_id"]))
    report = assemble_report(record, base_dir, bench, history, comparison_rows, trend_metric)
    write_html(report, target)
    write_markdown(report, target)
    return target
