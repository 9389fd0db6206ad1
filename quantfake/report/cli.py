"""``quantfake report [RUN] [--history DIR] [--out DIR]``: write the HTML and Markdown report.

RUN is a run-record file, a run id in the history folder, or ``latest``.
With two or more runs in the history folder, the report also compares RUN with
the run before it (via :func:`quantfake.compare.compare_runs`) and plots a trend.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from quantfake.option_specs import DEFAULT_HISTORY_DIR  # one default for bench, report and compare
from quantfake.report.build import build_report

__all__ = ["main", "DEFAULT_HISTORY_DIR"]

LOG = logging.getLogger(__name__)


def _previous_run(current: dict[str, Any], history_dir: Path) -> dict[str, Any] | None:
    """The run recorded just before ``current`` in ``history_dir``, if any."""
    from quantfake.results import list_runs, load_run

    runs = [p for p in list_runs(history_dir) if p.stem < str(current.get("run_id"))]
    return load_run(runs[-1]) if runs else None


def _comparison_rows(current: dict[str, Any], history_dir: Path, pyproject: str
                     ) -> list[dict[str, Any]] | None:
    """Rows of compare_runs(previous, current), or None when there is nothing to compare."""
    previous = _previous_run(current, history_dir)
    if previous is None:
        return None
    try:
        from quantfake.baselines import load_config
        from quantfake.compare import compare_runs

        return compare_runs(previous, current, load_config(pyproject))
    except (ImportError, FileNotFoundError, ValueError, KeyError) as error:
        LOG.warning("no run comparison in the report: %s", error)
        return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns 0 on success, 2 on a usage error (unknown run, bad path)."""
    parser = argparse.ArgumentParser(prog="quantfake report", description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", default="latest",
                        help="run record file, run id, or 'latest' (default)")
    parser.add_argument("--history", default=DEFAULT_HISTORY_DIR,
                        help=f"folder of run records (default {DEFAULT_HISTORY_DIR})")
    parser.add_argument("--out", default=None, help="output folder (default reports/<run-id>/)")
    parser.add_argument("--benchmark-json", default=None,
                        help="pytest-benchmark JSON (default: the record's benchmark_json)")
    parser.add_argument("--metric", default="auc", help="metric for the trend plot (default auc)")
    parser.add_argument("--pyproject", default="pyproject.toml",
                        help="where [tool.quantfake] regression tolerances are read from")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code or 0)
    history_dir = Path(args.history)
    try:
        from quantfake.results import load_run

        record = load_run(args.run, history_dir)
        record_path = Path(record.get("_path") or args.run)
        has_history = history_dir.is_dir()
        rows = _comparison_rows(record, history_dir, args.pyproject) if has_history else None
        out = build_report(record_path, out_dir=args.out, benchmark_json=args.benchmark_json,
                           history_dir=history_dir if has_history else None,
                           comparison_rows=rows, trend_metric=args.metric)
    except (FileNotFoundError, NotADirectoryError, ValueError) as exc:
        print(f"quantfake report: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out / 'index.html'} and {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
