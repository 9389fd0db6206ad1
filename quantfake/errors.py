"""Exceptions shared across quantfake, each carrying what a user needs to fix the problem.

:class:`UserError` marks the *expected* failures (a bad option, missing weights, an unsafe checkpoint, a
precision this machine cannot run, a corrupt store entry, too few real images): the command line and the bench
show them as one short message naming the thing and the fix, never as a traceback.
"""

from __future__ import annotations

from collections.abc import Iterable


class UserError(Exception):
    """An expected failure whose message names the bad thing and the fix (shown without a traceback)."""


class UnknownIdError(UserError, ValueError):
    """An id that no registry holds; the message lists the accepted ids."""

    def __init__(self, kind: str, value: object, valid: Iterable[str]) -> None:
        self.kind, self.value, self.valid = kind, value, list(valid)
        super().__init__(f"unknown {kind} id {value!r}; valid {kind} ids: {', '.join(self.valid)}")


class OptionError(UserError, ValueError):
    """An option value outside its accepted range (or not a number); the message names both."""


class MissingWeightsError(UserError, FileNotFoundError):
    """Weights that are not on this machine; names every place that was searched."""

    def __init__(self, what: str, searched: Iterable[object], hint: str = "") -> None:
        self.what, self.searched = what, [str(p) for p in searched]
        lines = "\n  ".join(self.searched) or "(nowhere)"
        super().__init__(f"missing weights for {what}; searched:\n  {lines}" + (f"\n{hint}" if hint else ""))


class PrecisionUnavailable(UserError, RuntimeError):
    """A precision this machine cannot run (no CUDA, compute capability too low, package absent)."""


class QuantizationNotApplied(RuntimeError):
    """A component that was asked to be quantized was left alone (or does not exist)."""


class MemoryBudgetError(UserError, RuntimeError):
    """No memory-fit recipe brings a cell under ``--vram-budget``; refused before any work, with what it would need."""


class CorruptStoreError(UserError, RuntimeError):
    """Store entries whose bytes are truncated or differ from their manifest, met with ``--no-repair``."""


class InsufficientRealImages(UserError, ValueError):
    """Fewer usable real images than a run needs (below the floor of what was asked)."""
