"""One bench session's parts, built once: real images, the fake source, the detector source, FID features.

Each part has one job and can be built on its own (tests do); :class:`Session` only wires them to one store,
one device and one list of notices, and the cell functions (:mod:`quantfake.session.detection_cell`,
:mod:`quantfake.session.fidelity_cell`) take a session and a :class:`~quantfake.cells.CellSpec`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from quantfake.loading import resolve_device
from quantfake.options import BenchOptions
from quantfake.session.detectors import DetectorSource
from quantfake.session.fakes import FakeSource
from quantfake.session.inception import InceptionCache
from quantfake.session.reals import RealImages
from quantfake.store import Store


@dataclass
class Session:
    """What a bench session (or a ``quantfake generate`` rank) loads once, and the notices it gathers."""

    options: BenchOptions
    store: Store
    device: str
    reals: RealImages
    fakes: FakeSource
    detectors: DetectorSource
    inception: InceptionCache | None  # FID / KID features; None without --inception-weights
    notices: list[dict[str, Any]]  # exclusions, short pools, store repairs: for the run record (take_notices)

    @classmethod
    def open(cls, options: BenchOptions, max_pipelines: int | None = None, progress: bool = True) -> Session:
        """Build the parts; nothing heavy loads until a cell asks for it. ``--vram-budget`` caps the GPU here,
        for everything the session does on it, detectors included."""
        store, device = Store(options.store), resolve_device(options.device)
        if options.vram_budget_gib:
            from quantfake.memory_placement import enforce_budget

            enforce_budget(options.vram_budget_gib, device)
        notices: list[dict[str, Any]] = []
        reals = RealImages(options, notices)
        fakes = FakeSource(options, store, device, reals, notices, max_pipelines, progress=progress)
        detectors = DetectorSource(options, store, device, reals, fakes)
        inception = InceptionCache(options.inception_weights, device) if options.inception_weights else None
        return cls(options, store, device, reals, fakes, detectors, inception, notices)

    def take_notices(self) -> list[dict[str, Any]]:
        """Notices gathered since the last call, for the run record and the terminal summary."""
        taken = list(self.notices)
        self.notices.clear()
        return taken
