"""Report figures with matplotlib (Agg backend: no display needed, works in CI).

Every function returns a matplotlib Figure (or None when there is nothing to
draw); ``figure_png`` turns it into PNG bytes and closes it so long reports do
not pile up open figures.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
# A full tiny report draws ~80 score plots before rendering them (each is closed by figure_png).
matplotlib.rcParams["figure.max_open_warning"] = 0

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from PIL import Image  # noqa: E402
from scipy.stats import gaussian_kde  # noqa: E402

from quantfake.report.tables import fmt, varying_params  # noqa: E402

__all__ = [
    "figure_png",
    "metric_heatmap",
    "score_distribution_figures",
    "tradeoff_scatter",
    "sample_grid",
    "trend_plot",
]

_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """PNG bytes of ``fig``; the figure is closed afterwards."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _row_label(cell: pd.Series, keys: Sequence[str]) -> str:
    return " / ".join(str(cell[k]) for k in keys)


def metric_heatmap(cells: pd.DataFrame, metric: str, title: str) -> Figure | None:
    """Heatmap of ``metric``: rows generator/precision/mode (+varying params), columns detector.

    Each cell is annotated with the value and its CI95 when recorded.
    """
    if "kind" not in cells or metric not in cells:
        return None
    detection = cells[cells["kind"] == "detection"]
    if detection.empty or detection[metric].isna().all():
        return None
    keys = ["generator", "precision", "mode"] + varying_params(
        detection, ("perturbation", "detector_precision"))
    detection = detection.sort_values(keys)
    row_labels = list(dict.fromkeys(_row_label(c, keys) for _, c in detection.iterrows()))
    detectors = sorted(detection["detector"].astype(str).unique())
    values = np.full((len(row_labels), len(detectors)), np.nan)
    notes = [["" for _ in detectors] for _ in row_labels]
    ci_key = f"{metric}_ci95"
    for _, cell in detection.iterrows():
        i, j = row_labels.index(_row_label(cell, keys)), detectors.index(str(cell["detector"]))
        values[i, j] = cell[metric]
        if np.isnan(cell[metric]):  # failed/skipped cells stay visible, grey, with their status
            notes[i][j] = str(cell["status"])
            continue
        ci = cell.get(ci_key)
        notes[i][j] = fmt(cell[metric], 2) + (
            f"\n[{fmt(ci[0], 2)}, {fmt(ci[1], 2)}]" if isinstance(ci, tuple) else "")
    fig, ax = plt.subplots(figsize=(2.0 + 1.5 * len(detectors), 1.2 + 0.55 * len(row_labels)))
    image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", vmin=0.0, vmax=1.0,
                      aspect="auto")
    for i in range(len(row_labels)):
        for j in range(len(detectors)):
            if notes[i][j]:
                dark = bool(values[i, j] < 0.6)
                ax.text(j, i, notes[i][j], ha="center", va="center", fontsize=7,
                        color="white" if dark else "black")
    ax.set_facecolor("#dddddd")
    ax.set_xticks(range(len(detectors)), detectors)
    ax.set_yticks(range(len(row_labels)), row_labels, fontsize=8)
    ax.set_xlabel("detector")
    ax.set_ylabel(" / ".join(keys))
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label=metric)
    return fig


def _density(ax: Any, scores: Sequence[float], label: str, **style: Any) -> None:
    """KDE line; a histogram when the KDE is undefined (fewer than 2 distinct values)."""
    data = np.asarray(scores, dtype=float)
    data = data[np.isfinite(data)]
    if data.size == 0:
        return
    if data.size >= 2 and np.ptp(data) > 0:
        try:
            kde = gaussian_kde(data)
            span = np.ptp(data)
            grid = np.linspace(data.min() - 0.1 * span, data.max() + 0.1 * span, 200)
            ax.plot(grid, kde(grid), label=label, **style)
            return
        except np.linalg.LinAlgError:
            pass
    ax.hist(data, bins=10, density=True, histtype="step", label=label, **style)


def _paired_note(cell: Mapping[str, Any]) -> str:
    paired = cell.get("paired") or {}
    if not paired:
        return ""
    return (f"ΔAUC {fmt(paired.get('delta_auc'))} (p {fmt(paired.get('delta_auc_p_delong'))}), "
            f"KS {fmt(paired.get('ks'), 2)} (p {fmt(paired.get('ks_p'))}), "
            f"W1 {fmt(paired.get('wasserstein'))}")


def score_distribution_figures(cells: Sequence[Mapping[str, Any]], max_figures: int = 24
                               ) -> list[tuple[str, Figure, str]]:
    """Per generator x mode x detector (x perturbation): score densities per precision.

    Real scores are drawn once (dashed black, from the reference precision's cell
    when present); each precision's fake scores get a line whose legend carries
    its paired shift against the reference. Returns (title, figure, caption).
    """
    groups: dict[tuple[str, ...], list[Mapping[str, Any]]] = {}
    for cell in cells:
        scores = cell.get("scores") or {}
        if cell.get("kind") != "detection" or not scores.get("fake"):
            continue
        p = cell.get("params") or {}
        key = tuple(str(p.get(k, "")) for k in ("generator", "mode", "detector", "perturbation",
                                                  "detector_precision"))
        groups.setdefault(key, []).append(cell)
    figures: list[tuple[str, Figure, str]] = []
    for key in sorted(groups)[:max_figures]:
        members = sorted(groups[key], key=lambda c: str((c.get("params") or {}).get("precision")))
        reference = next((c for c in members if not c.get("paired")), members[0])
        fig, ax = plt.subplots(figsize=(6.0, 3.4))
        _density(ax, (reference.get("scores") or {}).get("real") or [], "real",
                 color="black", linestyle="--")
        captions = []
        for cell in members:
            precision = str((cell.get("params") or {}).get("precision"))
            note = _paired_note(cell)
            _density(ax, cell["scores"]["fake"], f"{precision} fake" + (f"\n{note}" if note else ""))
            if note:
                ref = (cell.get("paired") or {}).get("reference_precision", "reference")
                captions.append(f"{precision} vs {ref}: {note}")
        generator, mode, detector, perturbation, det_precision = key
        title = f"{generator} / {mode} / {detector}"
        if perturbation not in ("", "none", "None"):
            title += f" / {perturbation}"
        if det_precision not in ("", "None", "fp32"):
            title += f" (detector {det_precision})"
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("detector score (higher = more fake)")
        ax.set_ylabel("density")
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        caption = "; ".join(captions) or "No paired statistics recorded for these cells."
        figures.append((title, fig, caption))
    return figures


def tradeoff_scatter(bench: pd.DataFrame) -> Figure | None:
    """Peak memory vs latency: colour per generator, marker per precision."""
    if bench.empty:
        return None
    needed = [c for c in ("latency_ms", "peak_gib", "generator", "precision") if c in bench]
    if len(needed) < 4:
        return None
    points = bench.dropna(subset=needed)  # generator cells only (detector / overhead cells have no generator)
    if points.empty:
        return None
    generators = sorted(points["generator"].astype(str).unique())
    precisions = sorted(points["precision"].astype(str).unique())
    colours = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for _, b in points.iterrows():
        ax.scatter(b["latency_ms"], b["peak_gib"],
                   color=colours(generators.index(str(b["generator"])) % 10),
                   marker=_MARKERS[precisions.index(str(b["precision"])) % len(_MARKERS)], s=50)
    kinds = sorted(points["memory_kind"].dropna().unique())
    ax.set_xlabel("latency ms (step_ms, else benchmark median)")
    ax.set_ylabel("peak " + ("/".join(k.upper() for k in kinds) or "memory") + " GiB")
    ax.set_title("Memory vs latency")
    handles = [Line2D([], [], color=colours(i % 10), marker="o", linestyle="", label=g)
               for i, g in enumerate(generators)]
    handles += [Line2D([], [], color="grey", marker=_MARKERS[i % len(_MARKERS)], linestyle="",
                       label=p) for i, p in enumerate(precisions)]
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3)
    return fig


def sample_grid(samples: Mapping[str, Sequence[str]], base_dir: Path, title: str,
                max_seeds: int = 4) -> Figure | None:
    """Same seed across precisions side by side: rows seeds, columns precisions."""
    precisions = list(samples)
    if not precisions:
        return None
    n_seeds = min(max_seeds, max(len(v) for v in samples.values()))
    if n_seeds == 0:
        return None
    fig, axes = plt.subplots(n_seeds, len(precisions), squeeze=False,
                             figsize=(1.8 * len(precisions), 1.8 * n_seeds + 0.4))
    for j, precision in enumerate(precisions):
        paths = list(samples[precision])
        for i in range(n_seeds):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            path = base_dir / paths[i] if i < len(paths) else None
            if path is not None and path.is_file():
                with Image.open(path) as image:
                    ax.imshow(np.asarray(image.convert("RGB")))
            else:
                ax.text(0.5, 0.5, "missing", ha="center", va="center", transform=ax.transAxes)
            if i == 0:
                ax.set_title(precision, fontsize=9)
            if j == 0:
                ax.set_ylabel(f"seed #{i}", fontsize=8)
    fig.suptitle(title, fontsize=10)
    return fig


def trend_plot(trend: pd.DataFrame, metric: str, max_cells: int = 10) -> Figure | None:
    """``metric`` per cell across runs (oldest left); the cells that moved most are shown."""
    if trend.empty or trend["run_index"].nunique() < 2:
        return None
    spread = trend.groupby("cell_id")["value"].agg(lambda v: v.max() - v.min())
    shown = spread.sort_values(ascending=False).index[:max_cells]
    runs = trend.drop_duplicates("run_index").sort_values("run_index")
    fig, ax = plt.subplots(figsize=(7.0, 3.8))
    for cell_id in shown:
        series = trend[trend["cell_id"] == cell_id].sort_values("run_index")
        ax.plot(series["run_index"], series["value"], marker="o", label=cell_id)
    ax.set_xticks(runs["run_index"], [str(r) for r in runs["run_id"]], rotation=30,
                  ha="right", fontsize=7)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} across runs" + (
        f" (the {len(shown)} cells that moved most)" if trend["cell_id"].nunique() > max_cells else ""))
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3)
    if math.isfinite(trend["value"].min()):
        ax.margins(y=0.1)
    return fig
