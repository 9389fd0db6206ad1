"""Per-profile baselines and the regression gate.

File ``baselines/<profile>.json``::

    {"schema": 1, "profile": "tiny",
     "cells": {cell_id: {"metrics": {...}, "ci95": {...}, "se": {...}, "n": {...},
                         "versions": {...}, "updated": iso8601}}}

Configuration comes from ``[tool.quantfake]`` in pyproject.toml::

    [tool.quantfake]
    alpha = 0.05
    gated_metrics = ["auc"]          # or per cell kind: {detection = ["auc"], fidelity = ["psnr"]}
    tolerances = {auc = 0.02, acc_calibrated = 0.05}
    default_tolerance = 0.02
    update_command = "pytest bench --update-baselines -k '{cell_id}'"

The gate (same as ``quantfake compare``): for each gated metric, let
``drop = baseline - new`` (sign flipped for lower-is-better metrics such as
EER).  The cell fails when BOTH

1. ``drop > tolerance`` (the change is large enough to matter), and
2. the drop is significant: one-sided z-test ``z = drop / sqrt(se_base² + se_new²)``
   using the bootstrap standard errors stored with each number,
   ``p = 1 - Φ(z) < alpha``.

Treating baseline and new run as independent overstates the variance when they
share images (same seeds), so the test is conservative: it flags fewer
regressions, never more.  A missing SE counts as 0 (tolerance-only gate) and is
said so in the message.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 needs the tomli backport
    import tomli as tomllib
from scipy.stats import norm

from quantfake.metrics import METRICS
from quantfake.results import CellResult, write_json_atomic

__all__ = [
    "SCHEMA_VERSION",
    "BenchConfig",
    "MetricCheck",
    "Verdict",
    "load_config",
    "baseline_path",
    "load_baselines",
    "check_metric",
    "check_cell",
    "update_baselines",
]

SCHEMA_VERSION = 1
DEFAULT_TOLERANCES: dict[str, float] = {
    "auc": 0.02,
    "ap": 0.02,
    "eer": 0.02,
    "tpr_at_fpr1": 0.05,
    "tpr_at_fpr5": 0.05,
    "acc_calibrated": 0.05,
    "bacc_calibrated": 0.05,
    "acc_fixed": 0.05,
}
#: Said wherever a gate ran without standard errors (no bootstrap: ``--n-boot 0``, or a baseline recorded without)
TOLERANCE_ONLY_NOTE = "tolerance-only gate (no standard error: --n-boot 0 or a baseline without CIs)"
DEFAULT_UPDATE_COMMAND = "pytest bench --update-baselines -k '{cell_id}'"


@dataclass(frozen=True)
class BenchConfig:
    """Regression-gate settings; see the module docstring for the test.

    ``gated_metrics`` is either one list for every cell or a table per cell
    kind, e.g. ``{detection = ["auc"], fidelity = ["psnr"]}``; a kind missing
    from the table is gated on the ``"default"`` entry if present, else nothing.
    """

    alpha: float = 0.05
    gated_metrics: tuple[str, ...] | Mapping[str, tuple[str, ...]] = ("auc",)
    tolerances: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_TOLERANCES))
    default_tolerance: float = 0.02
    update_command: str = DEFAULT_UPDATE_COMMAND

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha!r}")
        groups = self.gated_metrics.values() if isinstance(self.gated_metrics, Mapping) else [self.gated_metrics]
        for group in groups:
            for name in group:
                if name not in METRICS:
                    raise ValueError(f"unknown gated metric {name!r}; accepted: {sorted(METRICS)}")
                if METRICS[name].higher_is_better is None:
                    raise ValueError(f"metric {name!r} has no better direction and cannot be gated")
        for name, tol in self.tolerances.items():
            if tol < 0:
                raise ValueError(f"tolerance for {name!r} must be >= 0, got {tol!r}")

    def gated_for(self, kind: str | None) -> tuple[str, ...]:
        """Gated metrics of one cell kind."""
        if isinstance(self.gated_metrics, Mapping):
            return tuple(self.gated_metrics.get(kind or "", self.gated_metrics.get("default", ())))
        return tuple(self.gated_metrics)

    def tolerance(self, metric: str) -> float:
        return float(self.tolerances.get(metric, self.default_tolerance))


def load_config(pyproject: str | os.PathLike[str] | None = "pyproject.toml") -> BenchConfig:
    """Read ``[tool.quantfake]``; a missing file or table gives the defaults.

    Tolerances given in pyproject are merged over the defaults.
    """
    if pyproject is None or not Path(pyproject).is_file():
        return BenchConfig()
    with open(pyproject, "rb") as fh:
        table = tomllib.load(fh).get("tool", {}).get("quantfake", {})
    # Other engineers may keep their own keys in the same table; only the fields of BenchConfig are read.
    kwargs: dict[str, Any] = {}
    if "alpha" in table:
        kwargs["alpha"] = float(table["alpha"])
    if "gated_metrics" in table:
        gated = table["gated_metrics"]
        kwargs["gated_metrics"] = (
            {str(k): tuple(v) for k, v in gated.items()} if isinstance(gated, Mapping) else tuple(gated)
        )
    if "tolerances" in table:
        kwargs["tolerances"] = {**DEFAULT_TOLERANCES, **{k: float(v) for k, v in table["tolerances"].items()}}
    for key in ("default_tolerance",):
        if key in table:
            kwargs[key] = float(table[key])
    if "update_command" in table:
        kwargs["update_command"] = str(table["update_command"])
    return BenchConfig(**kwargs)


@dataclass(frozen=True)
class MetricCheck:
    """Outcome of the gate for one metric; ``regression`` is the failing condition."""

    metric: str
    baseline: float
    new: float
    drop: float
    tolerance: float
    se_baseline: float
    se_new: float
    z: float
    p: float
    regression: bool
    improved: bool
    note: str = ""

    def describe(self, ci95: list[float] | None = None) -> str:
        ci = f" [95% CI {ci95[0]:.4f}, {ci95[1]:.4f}]" if ci95 and None not in ci95 else ""
        direction = "drop" if (METRICS.get(self.metric) is None or METRICS[self.metric].higher_is_better) else "rise"
        text = (
            f"{self.metric}: baseline {self.baseline:.4f} -> new {self.new:.4f}{ci} "
            f"({direction} {self.drop:+.4f} vs tolerance {self.tolerance:.4f}, one-sided p={self.p:.3g})"
        )
        return text + (f"; {self.note}" if self.note else "")


def _finite_or_zero(x: Any) -> tuple[float, bool]:
    if x is None:
        return 0.0, False
    x = float(x)
    return (x, True) if math.isfinite(x) else (0.0, False)


def check_metric(
    metric: str,
    baseline: float,
    new: float,
    *,
    se_baseline: float | None,
    se_new: float | None,
    tolerance: float,
    alpha: float,
) -> MetricCheck:
    """The gate for one metric (see module docstring); direction comes from the registry."""
    higher = METRICS[metric].higher_is_better if metric in METRICS else True
    if higher is None:
        raise ValueError(f"metric {metric!r} has no better direction; it cannot be compared for regressions")
    sign = 1.0 if higher else -1.0
    drop = sign * (float(baseline) - float(new))
    se_b, ok_b = _finite_or_zero(se_baseline)
    se_n, ok_n = _finite_or_zero(se_new)
    note = "" if (ok_b and ok_n) else f"standard error missing, treated as 0 ({TOLERANCE_ONLY_NOTE})"
    se = math.hypot(se_b, se_n)
    if se > 0:
        z = drop / se
        p = float(norm.sf(z))
    else:
        z = math.copysign(math.inf, drop) if drop != 0 else 0.0
        p = 0.0 if drop > 0 else 1.0
    regression = drop > tolerance and p < alpha
    if se > 0:
        improved = -drop > tolerance and float(norm.cdf(z)) < alpha
    else:
        improved = -drop > tolerance
    return MetricCheck(metric, float(baseline), float(new), drop, tolerance, se_b, se_n, z, p, regression, improved, note)


@dataclass(frozen=True)
class Verdict:
    ok: bool
    message: str
    details: dict[str, Any] = field(default_factory=dict)


def _cell_dict(cell: CellResult | Mapping[str, Any]) -> dict[str, Any]:
    return cell.to_dict() if isinstance(cell, CellResult) else dict(cell)


def check_cell(
    cell_result: CellResult | Mapping[str, Any],
    baseline_entry: Mapping[str, Any] | None,
    config: BenchConfig,
    *,
    profile: str | None = None,
) -> Verdict:
    """Gate one cell against its baseline entry (None = no baseline yet, which fails).

    A gated metric absent from both the cell and its baseline does not apply
    to this kind of cell and is skipped; absent (or NaN) on one side only, it
    fails.  A cell where no gated metric applies fails too, so a gate can never
    pass by silently checking nothing (a kind the config gates on nothing
    passes, and the message says so).
    """
    cell = _cell_dict(cell_result)
    cell_id = cell["cell_id"]
    if baseline_entry is None:
        cmd = config.update_command.format(cell_id=cell_id, profile=profile or "<profile>")
        where = f" in profile {profile!r}" if profile else ""
        return Verdict(
            False,
            f"no baseline for cell {cell_id!r}{where}. Review the numbers, then record them with:\n    {cmd}",
            {"missing_baseline": True},
        )
    checks: list[MetricCheck] = []
    problems: list[str] = []
    not_applicable: list[str] = []
    metrics, base_metrics = cell.get("metrics", {}), baseline_entry.get("metrics", {})
    gated = config.gated_for(cell.get("kind"))
    for name in gated:
        new, base = metrics.get(name), base_metrics.get(name)
        if name not in metrics and name not in base_metrics:
            not_applicable.append(name)  # e.g. "auc" on a fidelity cell
            continue
        if new is None or base is None or not math.isfinite(float(new)) or not math.isfinite(float(base)):
            which = "new run" if new is None or not math.isfinite(float(new)) else "baseline"
            problems.append(f"{name}: gated metric missing or not finite in the {which}")
            continue
        checks.append(
            check_metric(
                name, base, new,
                se_baseline=baseline_entry.get("se", {}).get(name),
                se_new=cell.get("se", {}).get(name),
                tolerance=config.tolerance(name),
                alpha=config.alpha,
            )
        )
    regressions = [c for c in checks if c.regression]
    ci95 = cell.get("ci95", {})
    lines = [c.describe(ci95.get(c.metric)) for c in regressions] + problems
    tolerance_only = [c.metric for c in checks if c.note]
    details = {"checks": {c.metric: c.__dict__ for c in checks}, "problems": problems, "not_applicable": not_applicable,
               "gate": "tolerance-only" if tolerance_only else "statistical", "tolerance_only": tolerance_only}
    if lines:
        header = f"cell {cell_id!r} regressed (alpha={config.alpha}):"
        return Verdict(False, "\n  ".join([header, *lines]), details)
    if not gated:
        return Verdict(True, f"cell {cell_id!r}: no gated metrics for kind {cell.get('kind')!r}", details)
    if not checks:
        return Verdict(False, f"cell {cell_id!r}: none of the gated metrics {list(gated)} is present", details)
    improved = [c.metric for c in checks if c.improved]
    msg = f"cell {cell_id!r} within tolerance"
    if improved:
        msg += f"; significantly improved: {', '.join(improved)} (consider updating the baseline)"
    if tolerance_only:
        msg += f"; {TOLERANCE_ONLY_NOTE} for {', '.join(tolerance_only)}"
    return Verdict(True, msg, details)


def baseline_path(baselines_dir: str | os.PathLike[str], profile: str) -> Path:
    if not profile or any(c in profile for c in "/\\") or profile.startswith("."):
        raise ValueError(f"profile {profile!r} is not a plain name (letters, digits, '-', '_')")
    return Path(baselines_dir) / f"{profile}.json"


def load_baselines(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parsed baselines file, or an empty one when the file does not exist yet."""
    p = Path(path)
    if not p.is_file():
        return {"schema": SCHEMA_VERSION, "profile": p.stem, "cells": {}}
    data = json.loads(p.read_text("utf-8"))
    if data.get("schema") != SCHEMA_VERSION:
        raise ValueError(f"{p}: unsupported baselines schema {data.get('schema')!r}; accepted: {SCHEMA_VERSION}")
    return data


def _fmt(x: Any) -> str:
    return "—" if x is None else (f"{x:.4f}" if isinstance(x, float) else str(x))


def update_baselines(
    path: str | os.PathLike[str],
    results: Iterable[CellResult | Mapping[str, Any]],
    *,
    versions: Mapping[str, str] | None = None,
) -> str:
    """Rewrite the entries of the given cells only; return a readable old -> new diff.

    ``versions`` (e.g. package versions from ``collect_environment()``) is
    stored with each updated cell; a cell's own ``extra['versions']`` wins.
    The file is replaced atomically under a file lock, so concurrent updaters
    never lose each other's cells.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    lines: list[str] = []
    with FileLock(str(p) + ".lock"):
        data = load_baselines(p)
        data.setdefault("profile", p.stem)
        for res in results:
            cell = _cell_dict(res)
            cell_id = cell["cell_id"]
            old = data["cells"].get(cell_id)
            entry = {
                "metrics": cell.get("metrics", {}),
                "ci95": cell.get("ci95", {}),
                "se": cell.get("se", {}),
                "n": cell.get("n", {}),
                "versions": dict(cell.get("extra", {}).get("versions") or versions or {}),
                "updated": now,
            }
            data["cells"][cell_id] = entry
            lines.append(f"{cell_id}: {'new baseline' if old is None else 'updated'}")
            old_metrics = (old or {}).get("metrics", {})
            for name in sorted(set(old_metrics) | set(entry["metrics"])):
                a, b = old_metrics.get(name), entry["metrics"].get(name)
                if a != b:
                    lines.append(f"  {name}: {_fmt(a)} -> {_fmt(b)}")
        data["cells"] = dict(sorted(data["cells"].items()))
        write_json_atomic(p, data)
    return "\n".join(lines) if lines else "no cells given; baselines unchanged"
