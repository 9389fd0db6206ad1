"""Which timed pipeline calls produced non-finite pixels, though what they return is PIL images.

Efficiency cells call a pipeline with ``output_type="pil"``, as ``quantfake.generate`` does, so what comes back is
uint8: a NaN pixel has already been cast to some byte and can no longer be seen in the output. The cast is numpy's
(diffusers' ``VaeImageProcessor.numpy_to_pil``: ``(images * 255).round().astype("uint8")``), and numpy raises its
*invalid* floating-point flag exactly when it casts a NaN or an infinity to an integer (the ``RuntimeWarning:
invalid value encountered in cast`` of a broken run). :class:`NonFiniteCalls` routes that flag to a callback for the
duration of each call (``np.errstate(invalid="call", call=...)``) and marks the call (numpy's warning is then not
printed for it: the cell's failure says it instead). Nothing is added to what is timed but entering and leaving
numpy's error state once a call (about a microsecond against a pipeline call's hundreds of milliseconds), no device
synchronisation and no extra pass over the pixels; the output is left as it is.

Scope, from numpy's semantics: the error state is a context variable, so only numpy work in the calling thread is
watched (a pipeline decodes and post-processes in the thread that calls it; a store writer thread is not watched),
and the previous state (mode and handler) comes back when each call ends. diffusers clamps denormalised pixels to
[0, 1] in torch before the cast, so +/-inf become 0 or 1 there and what reaches the cast is NaN (``inf - inf`` or
``0 * inf`` from an overflowing activation ends there). Any other invalid numpy operation of the call counts too:
:attr:`NonFiniteCalls.where` names the lines where the flag was raised, so a record says which it was.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

__all__ = ["NonFiniteCalls"]

T = TypeVar("T")


@dataclass
class NonFiniteCalls:
    """Counts the calls of the functions :meth:`watch` wraps, and those in which numpy met an invalid value."""

    calls: int = 0
    nonfinite: int = 0
    #: ``"diffusers/image_processor.py:143 numpy_to_pil"``: each distinct place the flag was raised, first seen first
    where: list[str] = field(default_factory=list)

    def watch(self, fn: Callable[[], T]) -> Callable[[], T]:
        """``fn`` with numpy's invalid-value flag watched during each call (same result, same work)."""
        def watched() -> T:
            fired: list[str] = []

            def on_invalid(_kind: str, _flag: int) -> None:  # numpy's errcall signature: (message, flag bits)
                fired.append(_caller(sys._getframe(1)))

            try:
                with np.errstate(invalid="call", call=on_invalid):
                    return fn()
            finally:
                self.calls += 1
                if fired:
                    self.nonfinite += 1
                    self.where.extend(w for w in dict.fromkeys(fired) if w not in self.where)

        return watched

    def fields(self, prefix: str) -> dict[str, Any]:
        """Report fields: ``<prefix>calls`` (every watched call, warm-up included), ``<prefix>nonfinite_calls``
        (those that met a NaN or infinity) and ``<prefix>nonfinite_where``."""
        return {f"{prefix}calls": self.calls, f"{prefix}nonfinite_calls": self.nonfinite,
                f"{prefix}nonfinite_where": list(self.where)}


def _caller(frame: Any) -> str:
    """``package/module.py:line function`` of the Python frame whose numpy operation raised the flag."""
    path = Path(frame.f_code.co_filename)
    return f"{path.parent.name}/{path.name}:{frame.f_lineno} {frame.f_code.co_name}"
