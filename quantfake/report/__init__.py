"""Reports people look at: a self-contained ``index.html`` and a ``report.md`` per run.

Modules: ``record`` (run record / benchmark JSON -> frames), ``tables``,
``plots``, ``sections`` (content), ``html`` / ``markdown`` (writers),
``history`` (earlier runs), ``build`` (``build_report``), ``cli`` (``main``).
"""

from quantfake.report.build import build_report
from quantfake.report.cli import main

__all__ = ["build_report", "main"]
