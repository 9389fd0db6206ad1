"""Test plugin: a fraction ``$QF_TEST_SWAP_FAKES`` of each cell's own fakes is scored as evaluation reals.

A real degradation for the baseline gate to catch (issue: fault injection lives in the tests, not in quantfake/).
The swapped fakes get exactly the scores of the first reals, as if those photographs had been put in their place.
"""

from __future__ import annotations

import os


def pytest_configure(config) -> None:
    from quantfake.session import detection_cell

    fraction = float(os.environ["QF_TEST_SWAP_FAKES"])
    scored_sets = detection_cell.scored_sets

    def swapped(session, cell, detector, precision=None):
        sets = scored_sets(session, cell, detector, precision)
        if precision is None:  # the cell's own fakes, not the reference precision's
            k = int(round(fraction * len(sets["fake"])))
            sets["fake"] = sets["fake"].copy()
            sets["fake"][:k] = sets["real"][:k]
        return sets

    detection_cell.scored_sets = swapped
