"""Root conftest: the quantfake pytest plugin (options, session world, cells, baselines, run record) and
pytest-benchmark under pytest-xdist."""

pytest_plugins = ["fixtures.plugin", "fixtures.benchmark_xdist"]
