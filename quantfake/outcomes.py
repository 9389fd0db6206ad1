"""What a bench cell that produced no numbers leaves in the run record, and how the user is told.

Every cell that runs leaves a :class:`~quantfake.results.CellResult`: passed or failed by its gate, or here
``skipped`` (missing weights, a precision this machine cannot run: the reason is the message) or ``error``. Expected
errors (:class:`~quantfake.errors.UserError`: an unsafe checkpoint, a corrupt store entry with ``--no-repair``, too
few real images) and out-of-memory errors end the cell with one short message; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from quantfake.cells import CellSpec
from quantfake.errors import MissingWeightsError, PrecisionUnavailable, UserError
from quantfake.results import CellResult

Action = Literal["skip", "fail", "raise"]


@dataclass(frozen=True)
class CellOutcome:
    """The record of a cell that raised, and what the test runner should do: skip, fail briefly, or re-raise."""

    result: CellResult
    action: Action
    message: str


def outcome_of(cell: CellSpec, exc: BaseException) -> CellOutcome:
    """Classify an exception raised while computing ``cell``."""
    from quantfake.measure import is_oom

    def record(status: str, message: str) -> CellResult:
        return CellResult(cell.id, cell.kind, cell.params(), status=status, message=message)

    if isinstance(exc, (MissingWeightsError, PrecisionUnavailable)):
        return CellOutcome(record("skipped", str(exc)), "skip", str(exc))
    if is_oom(exc):
        return CellOutcome(record("error", f"out of memory: {exc}"), "fail",
                           f"{cell.id}: out of memory (recorded; other cells go on): {exc}")
    if isinstance(exc, UserError):
        return CellOutcome(record("error", str(exc)), "fail", f"{cell.id}: {exc}")
    message = f"{type(exc).__name__}: {exc}"
    return CellOutcome(record("error", message), "raise", message)


def skipped_at_setup(cell: CellSpec, reason: str) -> CellResult:
    """A cell skipped before it ran (a fixture skipped it)."""
    return CellResult(cell.id, cell.kind, cell.params(), status="skipped", message=reason)
