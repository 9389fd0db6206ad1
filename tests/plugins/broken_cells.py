"""Test plugin: every cell raises. ``$QF_TEST_BREAK=compute``: the cell's computation raises; ``setup``: the session
World cannot be built, so every cell errors in fixture setup, before its gate runs."""

from __future__ import annotations

import os


def pytest_configure(config) -> None:
    from quantfake.world import World

    where = os.environ["QF_TEST_BREAK"]

    def broken(*_args, **_kwargs):
        raise RuntimeError(f"injected by tests/plugins/broken_cells.py ({where})")

    if where == "setup":
        World.__init__ = broken
    else:
        World.detection_cell = broken
