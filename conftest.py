"""Root conftest: the quantfake pytest plugin (options, session world, cells, baselines, run record)."""

pytest_plugins = ["fixtures.plugin"]
