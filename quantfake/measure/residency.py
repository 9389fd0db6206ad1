"""Who holds a pipeline on the GPU, so that a cell's peak memory is its own pipeline's and no one else's.

A bench session keeps pipelines in two places: the session's fake source (detection and fidelity cells) and the
efficiency runner (step and end-to-end cells). Each held one full-size pipeline, but not the same one, so an
efficiency cell's ``max_memory_allocated`` also counted whatever the session still held: on the H100 gate
rehearsal the same sd3 cell read 26.6 GiB after a detection cell and 29.4 GiB when that cell was left out (the
pipeline alone: 14.9 GiB). Each holder registers how to let go; before loading on a GPU it asks the others to.
Standard library only: this sits in the bottom layer and anything may use it.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

_RELEASERS: dict[str, Callable[[], Callable[[], None] | None]] = {}


def register_holder(name: str, release: Callable[[], None]) -> None:
    """``release`` drops every pipeline ``name`` holds (and its device memory); a later registration under the
    same name replaces the earlier one (a new session replaces the previous one). A bound method is held weakly,
    so the registry never keeps a finished session (and its pipelines) alive."""
    bound = getattr(release, "__self__", None) is not None
    _RELEASERS[name] = weakref.WeakMethod(release) if bound else (lambda: release)  # type: ignore[arg-type]


def release_others(name: str) -> list[str]:
    """Ask every live holder but ``name`` to let go, before ``name`` loads a pipeline on a GPU; the names asked."""
    asked = []
    for other, reference in list(_RELEASERS.items()):
        release = reference()
        if other != name and release is not None:
            release()
            asked.append(other)
    return asked
