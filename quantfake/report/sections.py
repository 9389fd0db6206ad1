"""Assemble report sections from a run record (and optional benchmarks and history).

Section order: Summary, Detection, Score distributions, Paired shifts, then
Fidelity / Efficiency / Samples / History only when their data exist, then
Environment.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from quantfake.report import plots, tables
from quantfake.report.document import FigureBlock, Section, Table, Text, slug
from quantfake.report.history import trend_frame

__all__ = [
    "summary_section",
    "detection_section",
    "score_section",
    "paired_section",
    "fidelity_section",
    "efficiency_section",
    "generation_section",
    "samples_section",
    "history_section",
    "environment_section",
]


def random_weights_run(record: Mapping[str, Any]) -> bool:
    """Whether the run's generators (profile ``random``) or any cell's detector had random weights."""
    if record.get("profile") == "random":
        return True
    for cell in record.get("cells", []):
        detector = (cell.get("extra") or {}).get("detector")  # a detection cell's description (efficiency: an id)
        if isinstance(detector, Mapping) and detector.get("random_weights"):
            return True
    return False


def summary_section(record: Mapping[str, Any], cells: pd.DataFrame) -> Section:
    """What ran, what failed, and the largest paired AUC shifts."""
    section = Section("Summary")
    if random_weights_run(record):
        section.blocks.append(Text(
            "RANDOM WEIGHTS: this run used full-size models with random weights (a rehearsal of the machinery: "
            "latency, memory, the loaders, the records). Its detection and fidelity scores mean nothing."))
    section.blocks.append(Text(
        f"Run {record.get('run_id')} created {record.get('created', '?')} with profile "
        f"{record.get('profile', '?')}: {len(cells)} cells."))
    section.blocks.append(Table(tables.status_table(cells), "Cells per kind and status."))
    if not cells.empty:
        bad = cells[cells["status"].isin(["failed", "error"])]
        if not bad.empty:
            section.blocks.append(Table(bad[["cell_id", "status", "message"]].astype(str),
                                        "Failed and errored cells."))
        if "paired_delta_auc" in cells:
            shifts = cells[cells["paired_delta_auc"].notna()].copy()
            if not shifts.empty:
                shifts = shifts.reindex(shifts["paired_delta_auc"].abs()
                                        .sort_values(ascending=False).index).head(5)
                frame = pd.DataFrame({
                    "cell_id": shifts["cell_id"],
                    "vs": shifts["paired_reference_precision"].fillna(tables.MISSING),
                    "ΔAUC": [tables.fmt(v) for v in shifts["paired_delta_auc"]],
                    "p DeLong": [tables.fmt(v) for v in shifts["paired_delta_auc_p_delong"]],
                })
                section.blocks.append(Table(frame, "Largest paired AUC shifts (by |ΔAUC|)."))
    return section


def detection_section(cells: pd.DataFrame) -> Section:
    """Heatmaps of AUC and calibrated accuracy, then the full detection table."""
    section = Section("Detection")
    for metric, label in (("auc", "AUC"), ("acc_calibrated", "Accuracy at the calibrated threshold")):
        fig = plots.metric_heatmap(cells, metric, label)
        if fig is not None:
            section.blocks.append(FigureBlock(f"heatmap-{slug(metric)}", plots.figure_png(fig),
                                              f"{label} per cell; brackets: CI95."))
    table = tables.detection_table(cells)
    if table.empty:
        section.blocks.append(Text("No detection cells in this run."))
    else:
        section.blocks.append(Table(table, "Detection metrics with CI95 in brackets."))
    return section


def score_section(record: Mapping[str, Any]) -> Section:
    """Score densities per precision, with paired-shift statistics in legend and caption."""
    section = Section("Score distributions")
    figures = plots.score_distribution_figures(record.get("cells", []))
    for title, fig, caption in figures:
        section.blocks.append(FigureBlock(f"scores-{slug(title)}", plots.figure_png(fig), caption))
    if not figures:
        section.blocks.append(Text("No per-image scores were recorded in this run."))
    return section


def paired_section(cells: pd.DataFrame) -> Section:
    """Paired tests of each precision against its reference on the same seeds and reals."""
    section = Section("Paired shifts")
    table = tables.paired_table(cells)
    if table.empty:
        section.blocks.append(Text("No paired comparisons were recorded in this run."))
    else:
        section.blocks.append(Table(table, "ΔAUC = AUC(precision) − AUC(reference); "
                                           "KS and W1 compare fake-score distributions."))
    return section


def fidelity_section(cells: pd.DataFrame) -> Section | None:
    table = tables.fidelity_table(cells)
    if table.empty:
        return None
    return Section("Fidelity", [Table(table, "Distance of each precision's outputs to the reference.")])


def efficiency_section(bench: pd.DataFrame) -> Section | None:
    if bench.empty:
        return None
    section = Section("Efficiency")
    fig = plots.tradeoff_scatter(bench)
    if fig is not None:
        section.blocks.append(FigureBlock("tradeoff", plots.figure_png(fig),
                                          "Peak memory vs latency; one marker per precision."))
    section.blocks.append(Table(tables.efficiency_table(bench), "pytest-benchmark results."))
    return section


def generation_section(record: Mapping[str, Any]) -> Section | None:
    """How each image set was made: the speed recipe, its check against eager batch 1, compile time, s/image."""
    table = tables.generation_table(tables.generation_rows(record.get("cells", [])))
    if table.empty:
        return None
    return Section("Generation", [Table(table, (
        "A speed recipe (batch > 1, torch.compile) is used only if its first chunk matches eager batch-1 images of the "
        "same seeds, bitwise or at PSNR >= 40 dB (worst compared image); else it is refused and the set made "
        "eagerly. Check and compile seconds are charged to the set that paid them."))])


def samples_section(record: Mapping[str, Any], base_dir: Path) -> Section | None:
    samples = record.get("samples") or {}
    if not samples:
        return None
    section = Section("Samples")
    for key, per_precision in sorted(samples.items()):
        fig = plots.sample_grid(per_precision, base_dir, key)
        if fig is not None:
            section.blocks.append(FigureBlock(f"samples-{slug(key)}", plots.figure_png(fig),
                                              f"{key}: same seeds across precisions (columns)."))
    return section if section.blocks else None


def history_section(records: Sequence[Mapping[str, Any]], comparison_rows: Sequence[Mapping[str, Any]] | None,
                    metric: str) -> Section | None:
    """Two-run comparison (regressions highlighted) and the trend of ``metric``."""
    if not records and not comparison_rows:
        return None
    section = Section("History")
    if comparison_rows:
        table, flags = tables.comparison_table(comparison_rows)
        section.blocks.append(Table(table, f"{sum(flags)} regression(s) of {len(flags)} compared "
                                           "metrics (highlighted).", flags))
    fig = plots.trend_plot(trend_frame(records, metric), metric)
    if fig is not None:
        section.blocks.append(FigureBlock(f"trend-{slug(metric)}", plots.figure_png(fig),
                                          f"{metric} across {len(records)} runs."))
    elif records:
        section.blocks.append(Text(f"Fewer than two runs with {metric!r}; no trend to plot."))
    return section


def environment_section(record: Mapping[str, Any]) -> Section:
    section = Section("Environment")
    section.blocks.append(Table(tables.environment_table(record)))
    packages = tables.packages_table(record)
    if not packages.empty:
        section.blocks.append(Table(packages, "Package versions."))
    return section
