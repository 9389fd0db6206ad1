"""Test plugin: every timed call of the efficiency cell ``$QF_TEST_SLOW_CELL`` (a cell id, e.g. effic-fluxs-w8)
sleeps ``$QF_TEST_SLOW_MS`` ms (default 200) first: a latency regression in one cell for the compare gate to catch.

It wraps the runner's pytest-benchmark sampler, so the delay is inside pytest-benchmark's rounds, as a slower
kernel would be; the library has no switch for it.
"""

from __future__ import annotations

import os
import time

import pytest

_running: dict[str, str | None] = {"cell": None}


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    callspec = getattr(item, "callspec", None)
    _running["cell"] = callspec.id if callspec else None


def pytest_configure(config: pytest.Config) -> None:
    from quantfake.session.efficiency import runner

    target = os.environ["QF_TEST_SLOW_CELL"]
    delay_s = float(os.environ.get("QF_TEST_SLOW_MS", "200")) / 1e3
    sampler = runner.benchmark_sampler

    def slowed_sampler(benchmark, device):
        sample = sampler(benchmark, device)
        if _running["cell"] != target:
            return sample

        def slow_sample(fn, warmup, rounds):
            def slow():
                time.sleep(delay_s)
                return fn()

            return sample(slow, warmup, rounds)

        return slow_sample

    runner.benchmark_sampler = slowed_sampler
