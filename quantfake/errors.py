"""Exceptions shared across quantfake, each carrying what a user needs to fix the problem."""

from __future__ import annotations

from collections.abc import Iterable


class UnknownIdError(ValueError):
    """An id that no registry holds; the message lists the accepted ids."""

    def __init__(self, kind: str, value: object, valid: Iterable[str]) -> None:
        self.kind, self.value, self.valid = kind, value, list(valid)
        super().__init__(f"unknown {kind} id {value!r}; valid {kind} ids: {', '.join(self.valid)}")


class MissingWeightsError(FileNotFoundError):
    """Weights that are not on this machine; names every place that was searched."""

    def __init__(self, what: str, searched: Iterable[object], hint: str = "") -> None:
        self.what, self.searched = what, [str(p) for p in searched]
        lines = "\n  ".join(self.searched) or "(nowhere)"
        super().__init__(f"missing weights for {what}; searched:\n  {lines}" + (f"\n{hint}" if hint else ""))


class PrecisionUnavailable(RuntimeError):
    """A precision this machine cannot run (no CUDA, compute capability too low, package absent)."""


class QuantizationNotApplied(RuntimeError):
    """A component that was asked to be quantized was left alone (or does not exist)."""


class MemoryBudgetError(RuntimeError):
    """No memory-fit recipe brings a cell under ``--vram-budget``; refused before any work, with what it would need."""
