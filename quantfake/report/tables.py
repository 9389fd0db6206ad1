"""Report tables: build display frames of strings, render them as Markdown or HTML.

Why strings: both renderers must show identical numbers (same rounding, CI in
brackets, "–" for missing), so formatting happens once, here.
"""

from __future__ import annotations

import html as html_lib
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd
from tabulate import tabulate

__all__ = [
    "MISSING",
    "fmt",
    "fmt_ci",
    "to_markdown",
    "to_html",
    "varying_params",
    "status_table",
    "detection_table",
    "paired_table",
    "fidelity_table",
    "efficiency_table",
    "generation_rows",
    "generation_table",
    "generation_lines",
    "environment_table",
    "packages_table",
    "comparison_table",
]

MISSING = "–"
DETECTION_METRICS: tuple[str, ...] = ("auc", "ap", "acc_calibrated", "acc_fixed", "acc_oracle")
FIDELITY_METRICS: tuple[str, ...] = ("psnr", "ssim", "mad", "latent_rel_l2", "fid", "kid")


def fmt(value: Any, digits: int = 3) -> str:
    """A number with ``digits`` decimals (p-values < 1e-3 in scientific form), or MISSING."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
        return MISSING
    if isinstance(value, (int, float)):
        if 0 < abs(value) < 10 ** -digits:
            return f"{value:.1e}"
        return f"{value:.{digits}f}"
    return str(value)


def fmt_ci(value: Any, ci: Any, digits: int = 3) -> str:
    """``0.912 [0.880, 0.940]``; the bracket is dropped when the CI is missing."""
    text = fmt(value, digits)
    if isinstance(ci, (tuple, list)) and len(ci) == 2 and text != MISSING:
        return f"{text} [{fmt(ci[0], digits)}, {fmt(ci[1], digits)}]"
    return text


def to_markdown(table: pd.DataFrame) -> str:
    """GitHub-flavoured Markdown via tabulate; an empty table renders as a note."""
    if table.empty:
        return "_(no rows)_"
    return table.to_markdown(index=False, tablefmt="github", disable_numparse=True)


def to_html(table: pd.DataFrame, highlight: Sequence[bool] | None = None,
            highlight_class: str = "regression") -> str:
    """HTML table (escaped) via tabulate; cells of rows where ``highlight`` is true are
    wrapped in ``<mark class=highlight_class>``."""
    if table.empty:
        return '<p class="note">(no rows)</p>'
    flags = list(highlight) if highlight is not None else [False] * len(table)
    if not any(flags):
        body = tabulate(table, headers="keys", tablefmt="html", showindex=False,
                        disable_numparse=True)
    else:
        cells = [[html_lib.escape(str(v)) for v in row] for row in table.itertuples(index=False)]
        cells = [[f'<mark class="{highlight_class}">{v}</mark>' for v in row] if flag else row
                 for row, flag in zip(cells, flags, strict=True)]
        headers = [html_lib.escape(str(c)) for c in table.columns]
        body = tabulate(cells, headers=headers, tablefmt="unsafehtml", disable_numparse=True)
    return body.replace("<table>", '<table class="data">', 1)


def varying_params(cells: pd.DataFrame, keys: Iterable[str]) -> list[str]:
    """The params among ``keys`` that take more than one value (the rest are noise in labels)."""
    return [k for k in keys if k in cells and cells[k].dropna().nunique() > 1]


def _cell_columns(cells: pd.DataFrame, always: Sequence[str], optional: Sequence[str]) -> list[str]:
    return [k for k in always if k in cells] + varying_params(cells, optional)


def status_table(cells: pd.DataFrame) -> pd.DataFrame:
    """Counts of cells per kind and status."""
    if cells.empty:
        return pd.DataFrame()
    counts = cells.groupby(["kind", "status"]).size().reset_index(name="cells")
    return counts.astype(str)


def detection_table(cells: pd.DataFrame) -> pd.DataFrame:
    """Detection cells: params, metrics with CI95, sample sizes, status."""
    detection = cells[cells["kind"] == "detection"] if "kind" in cells else cells.iloc[0:0]
    if detection.empty:
        return pd.DataFrame()
    keys = _cell_columns(detection, ("generator", "precision", "mode", "detector"),
                         ("perturbation", "detector_precision"))
    rows = []
    for _, cell in detection.sort_values(keys).iterrows():
        row = {k: cell[k] for k in keys}
        for metric in DETECTION_METRICS:
            if metric in cell:
                row[metric] = fmt_ci(cell[metric], cell.get(f"{metric}_ci95"))
        row["n real/fake"] = f"{fmt(cell['n_real'], 0)}/{fmt(cell['n_fake'], 0)}"
        _memory_fit_column(row, cell)
        row["status"] = cell["status"]
        rows.append(row)
    return pd.DataFrame(rows).fillna(MISSING)


def paired_table(cells: pd.DataFrame) -> pd.DataFrame:
    """Paired shifts of each cell against its reference precision (same seeds, same reals)."""
    if "has_paired" not in cells:
        return pd.DataFrame()
    paired = cells[cells["has_paired"]]
    if paired.empty:
        return pd.DataFrame()
    keys = _cell_columns(paired, ("generator", "mode", "detector", "precision"),
                         ("perturbation", "detector_precision"))
    rows = []
    for _, cell in paired.sort_values(keys).iterrows():
        row = {k: cell[k] for k in keys}
        row["vs"] = fmt(cell["paired_reference_precision"])
        row["ΔAUC [CI95]"] = fmt_ci(cell["paired_delta_auc"], cell["paired_delta_auc_ci95"])
        row["p DeLong"] = fmt(cell["paired_delta_auc_p_delong"])
        row["p Wilcoxon"] = fmt(cell["paired_wilcoxon_p"])
        row["p McNemar"] = fmt(cell["paired_mcnemar_p"])
        row["KS (p)"] = f"{fmt(cell['paired_ks'])} ({fmt(cell['paired_ks_p'])})"
        row["W1"] = fmt(cell["paired_wasserstein"])
        rows.append(row)
    return pd.DataFrame(rows).fillna(MISSING)


def fidelity_table(cells: pd.DataFrame) -> pd.DataFrame:
    """Fidelity cells: image/latent distance of each precision to its reference."""
    fidelity = cells[cells["kind"] == "fidelity"] if "kind" in cells else cells.iloc[0:0]
    if fidelity.empty:
        return pd.DataFrame()
    keys = _cell_columns(fidelity, ("generator", "precision", "mode"), ("perturbation",))
    metrics = [m for m in FIDELITY_METRICS if m in fidelity and fidelity[m].notna().any()]
    rows = []
    for _, cell in fidelity.sort_values(keys).iterrows():
        row = {k: cell[k] for k in keys}
        for metric in metrics:
            row[metric] = fmt_ci(cell[metric], cell.get(f"{metric}_ci95"))
        _memory_fit_column(row, cell)
        row["status"] = cell["status"]
        rows.append(row)
    return pd.DataFrame(rows).fillna(MISSING)


def efficiency_table(bench: pd.DataFrame) -> pd.DataFrame:
    """Benchmarks: latency, peak memory, weight size, throughput."""
    if bench.empty:
        return pd.DataFrame()
    rows = []
    for _, b in bench.sort_values(["generator", "precision"], na_position="last").iterrows():
        kind = b["memory_kind"] if isinstance(b["memory_kind"], str) else None
        rows.append({
            "generator": fmt(b["generator"]), "precision": fmt(b["precision"]),
            "benchmark": b["name"], "median ms": fmt(b["median_ms"], 1),
            "step ms": fmt(b["step_ms"], 1),
            "peak GiB": f"{fmt(b['peak_gib'], 2)} ({kind})" if kind else MISSING,
            "weights MiB": fmt(b["weights_bytes"] / 2**20, 1),
            "TFLOP/s": fmt(b["tflops_per_s"], 2),
        })
        _memory_fit_column(rows[-1], b)
    return pd.DataFrame(rows).fillna(MISSING)


def _memory_fit_column(row: dict[str, Any], source: Any) -> None:
    """A "memory fit" column where the run had ``--vram-budget`` (the recipe each cell ran with)."""
    label = source.get("memory_fit") if hasattr(source, "get") else None
    if isinstance(label, str):
        row["memory fit"] = label


def generation_rows(cells: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each image set of the run once (by store key): its speed recipe, the recipe's check, seconds per image.

    From the cells' ``extra.generation`` (and a fidelity cell's ``extra.reference_generation``), written by
    :mod:`quantfake.recipes`.
    """
    rows: dict[str, dict[str, Any]] = {}
    for cell in cells:
        extra = cell.get("extra") or {}
        for entry in (extra.get("generation"), extra.get("reference_generation")):
            if isinstance(entry, Mapping) and entry.get("key"):
                rows.setdefault(str(entry["key"]), dict(entry))
    return sorted(rows.values(), key=lambda r: (str(r.get("generator")), str(r.get("precision")),
                                                str(r.get("mode")), str(r.get("key"))))


def _set_name(row: Mapping[str, Any]) -> str:
    return f"{row.get('generator')}-{row.get('precision')}-{row.get('mode')}"


def generation_table(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Recipe asked and used, its check against eager batch 1, compile seconds, s/image with and without them."""
    if not rows:
        return pd.DataFrame()
    return pd.DataFrame([{
        "image set": _set_name(r), "asked": fmt(r.get("requested")), "used": fmt(r.get("used")),
        "check vs eager batch 1": fmt(r.get("check")), "compile s": fmt(r.get("compile_s"), 1),
        "s/image": fmt(r.get("s_per_image"), 3), "s/image incl. check + compile": fmt(r.get("s_per_image_amortised"), 3),
        "made/reused": f"{fmt(r.get('generated'), 0)}/{fmt(r.get('reused'), 0)}",
    } for r in rows])


#: above this many image sets the terminal gets one line per check outcome instead of one per set
MAX_GENERATION_LINES = 12


def generation_lines(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Terminal lines: how each set's speed recipe was checked (per set, or counted when there are many)."""
    asked = [r for r in rows if r.get("requested") not in (None, "eager batch 1")]
    if not asked:
        return []
    if len(asked) > MAX_GENERATION_LINES:
        counts: dict[str, int] = {}
        for r in asked:
            counts[_outcome(r)] = counts.get(_outcome(r), 0) + 1
        psnrs = [_psnr_of(r) for r in asked if _outcome(r) == "PSNR >= 40 dB"]
        return [f"generation recipes of {len(asked)} image sets vs eager batch 1: "
                + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
                + (f" (lowest PSNR {min(psnrs):.1f} dB)" if psnrs else "")]
    lines = []
    for r in asked:
        line = f"generation {_set_name(r)}: {r['requested']} -> {r.get('used')}: {r.get('check')}"
        if r.get("compile_s") is not None:
            line += f"; compile {r['compile_s']:.1f} s"
        if r.get("s_per_image") is not None:
            line += (f"; {r['s_per_image']:.3f} s/image, {r['s_per_image_amortised']:.3f} with check + compile"
                     f" ({r.get('generated')} made)")
        eager = (r.get("check_detail") or {}).get("eager_s_per_image")
        if eager is not None:
            line += f"; eager batch 1 in the check: {eager:.3f} s/image"
        lines.append(line)
    return lines


def _outcome(row: Mapping[str, Any]) -> str:
    """bitwise, PSNR >= 40 dB, refused, or not checked (every image was already in the store)."""
    check = str(row.get("check", ""))
    for prefix, outcome in (("bitwise", "bitwise"), ("PSNR", "PSNR >= 40 dB"), ("refused", "refused")):
        if check.startswith(prefix):
            return outcome
    return "not checked"


def _psnr_of(row: Mapping[str, Any]) -> float:
    return float(str(row.get("check", "")).split()[1])


def environment_table(record: Mapping[str, Any]) -> pd.DataFrame:
    """Run identity, options and environment as key/value rows (packages separately)."""
    rows = [("run_id", record.get("run_id")), ("created", record.get("created")),
            ("profile", record.get("profile")), ("benchmark_json", record.get("benchmark_json"))]
    for key, value in sorted((record.get("environment") or {}).items()):
        if key != "packages":
            rows.append((key, value))
    for key, value in sorted((record.get("options") or {}).items()):
        rows.append((f"option: {key}", value))
    return pd.DataFrame([(k, MISSING if v is None else str(v)) for k, v in rows],
                        columns=["key", "value"])


def packages_table(record: Mapping[str, Any]) -> pd.DataFrame:
    """Installed package versions recorded with the run."""
    packages = (record.get("environment") or {}).get("packages") or {}
    return pd.DataFrame(sorted((str(k), str(v)) for k, v in packages.items()),
                        columns=["package", "version"])


def comparison_table(rows: Sequence[Mapping[str, Any]]) -> tuple[pd.DataFrame, list[bool]]:
    """Two-run comparison rows (cell_id, metric, a, b, delta, p, regression) and the regression flags."""
    if not rows:
        return pd.DataFrame(), []
    flags = [bool(r.get("regression")) for r in rows]
    table = pd.DataFrame([{
        "cell_id": r.get("cell_id", MISSING), "metric": r.get("metric", MISSING),
        "a": fmt(r.get("a")), "b": fmt(r.get("b")), "delta": fmt(r.get("delta")),
        "p": fmt(r.get("p")),
        "verdict": "REGRESSION" if flag else ("improved" if r.get("improved") else ""),
    } for r, flag in zip(rows, flags, strict=True)])
    return table, flags
