"""Efficiency cells: latency, peak memory, weight bytes and FLOPs of real denoisers and detectors, per precision.

The primitives they are made of live one layer down in :mod:`quantfake.measure`; this package holds the cells
(:mod:`.cells`), the runner the bench calls (:mod:`.runner`) and the run-record view of a result (:mod:`.record`).
"""
