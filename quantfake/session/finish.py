"""End of a bench session: merge the run record, update baselines when asked, write the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from quantfake.options import BenchOptions


def samples_from_cells(cells: list[dict[str, Any]]) -> dict[str, dict[str, list[str]]]:
    """Same-seed sample paths per generator-mode and precision, for the report's side-by-side grid."""
    out: dict[str, dict[str, list[str]]] = {}
    for cell in cells:
        paths = (cell.get("extra") or {}).get("sample_paths")
        p = cell.get("params") or {}
        if paths:
            out.setdefault(f"{p['generator']}-{p['mode']}", {}).setdefault(p["precision"], paths)
    return out


def _status_counts(cells: list[Any]) -> str:
    counts = {status: sum(c.status == status for c in cells) for status in ("passed", "failed", "error", "skipped")}
    return f"{len(cells)} cells: " + ", ".join(f"{n} {status}" for status, n in counts.items() if n)


def notice_lines(record: dict[str, Any]) -> list[str]:
    """What the terminal summary must say about a run beyond pass / fail: notices and tolerance-only gates."""
    lines = [f"notice: {n['message']}" for n in record.get("notices", [])]
    loose = [c["cell_id"] for c in record.get("cells", []) if (c.get("extra") or {}).get("gate") == "tolerance-only"]
    if loose:
        from quantfake.baselines import TOLERANCE_ONLY_NOTE

        lines.append(f"notice: {len(loose)} cell(s) had a {TOLERANCE_ONLY_NOTE}: {', '.join(loose[:5])}"
                     + (" ..." if len(loose) > 5 else ""))
    return lines


def finish_session(options: BenchOptions, run_id: str, benchmark_json: str | None = None) -> list[str]:
    """Merge cell files into ``history/<run_id>.json``; returns lines for the terminal summary."""
    from quantfake.environment import collect_environment
    from quantfake.results import RunRecorder, write_json_atomic

    recorder = RunRecorder(options.history, options.profile, options.as_record(), run_id=run_id)
    if not recorder.partial_dir.exists():
        return []
    cells = recorder.cells()
    path = recorder.finalize(environment=collect_environment(), benchmark_json=benchmark_json)
    record = json.loads(path.read_text())
    record["samples"] = samples_from_cells(record["cells"])
    write_json_atomic(path, record)
    lines = [f"run record: {path} ({_status_counts(cells)})", *notice_lines(record)]
    from quantfake.report.tables import generation_lines, generation_rows

    lines += generation_lines(generation_rows(record["cells"]))
    if options.update_baselines:
        from quantfake.baselines import baseline_path, update_baselines

        # efficiency cells are compared run against run on one machine (quantfake compare), never against a
        # committed file: their latency and memory belong to the runner. A skipped cell measured nothing, so it
        # gets no (empty) entry: the file holds numbers only
        ran = [c for c in cells if c.status not in ("error", "skipped") and c.kind != "efficiency"]
        diff = update_baselines(baseline_path(options.baselines_dir, options.profile), ran,
                                versions=record["environment"].get("packages"))
        lines += [f"baselines updated for {len(ran)} cells: {baseline_path(options.baselines_dir, options.profile)}",
                  *diff.splitlines()[:200]]
    if options.profile == "tiny" and options.grid != "full" and cells:
        from quantfake.measure.half_speed import half_slowdown
        from quantfake.session.grid_estimate import full_grid_line

        lines.append(full_grid_line(options, cells, half_slowdown()))
    if options.report:
        from quantfake.report import build_report

        out = build_report(path, out_dir=Path("reports") / run_id, history_dir=options.history)
        lines.append(f"report: {out / 'index.html'} and {out / 'report.md'}")
    return lines
