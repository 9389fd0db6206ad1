"""Test plugin: the cell ``$QF_TEST_DROP_CELL`` (a cell id, e.g. sd3-nf4-txt2img) is left out of the run, as a cell
whose model vanished from a runner would be: the compare gate must name it lost."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    target = os.environ["QF_TEST_DROP_CELL"]
    dropped = [i for i in items if getattr(getattr(i, "callspec", None), "id", None) == target]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [i for i in items if i not in dropped]
