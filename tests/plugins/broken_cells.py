"""Test plugin: every cell raises. ``$QF_TEST_BREAK=compute``: the cell's computation raises; ``setup``: the bench
session cannot be built, so every cell errors in fixture setup, before its gate runs."""

from __future__ import annotations

import os


def pytest_configure(config) -> None:
    from quantfake.session import detection_cell
    from quantfake.session.engine import Session

    where = os.environ["QF_TEST_BREAK"]

    def broken(*_args, **_kwargs):
        raise RuntimeError(f"injected by tests/plugins/broken_cells.py ({where})")

    if where == "setup":
        Session.open = broken
    else:
        detection_cell.measure_detection = broken
