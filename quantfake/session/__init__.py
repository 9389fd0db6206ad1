"""The session engine behind every bench cell, one job a module.

- :mod:`~quantfake.session.reals`: the real images, split once into disjoint pools.
- :mod:`~quantfake.session.fakes`: pipelines (a small cache), the seed policy, generated image sets.
- :mod:`~quantfake.session.detectors`: detectors trained or loaded, quantized copies, the score cache.
- :mod:`~quantfake.session.inception`: the FID Inception network, loaded once.
- :mod:`~quantfake.session.engine`: :class:`Session`, the parts wired to one store, device and notice list.
- :mod:`~quantfake.session.detection_cell`, :mod:`~quantfake.session.fidelity_cell`: cell functions
  ``measure_*(session, cell) -> CellResult``; :mod:`~quantfake.session.efficiency`: the efficiency cells (step,
  end to end, detector throughput, overhead guard) and their runner, which hold their own pipeline.
- :mod:`~quantfake.session.finish`: the end of a session (run record, baselines, report).

The pytest layer (``fixtures/``) opens one session per process and hands it cells; ``quantfake generate`` opens
one per rank and asks only its fake source.
"""
