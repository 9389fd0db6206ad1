"""Latency measurement that is honest about asynchronous GPU execution.

On CUDA a Python wall clock only measures kernel *launch* time, so GPU timings use CUDA events and
synchronize; on CPU ``time.perf_counter`` is the right clock. The GPU is synchronized before each
sample too, so launch overhead (which quantized kernels often add) is inside the measurement rather
than hidden behind previously queued work.

Measurements take a :data:`Sampler`: whatever times the calls. Outside pytest it is :func:`time_callable`;
inside the bench it is pytest-benchmark (``quantfake.session.efficiency.runner.benchmark_sampler``), so a cell's
fields and its benchmark JSON hold the same samples: one timer, never two that disagree.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import numpy as np
import torch

from quantfake.measure.devices import DeviceLike, as_device

#: ``sampler(fn, warmup, rounds)``: call ``fn`` ``warmup`` times untimed, then time ``rounds`` calls
Sampler = Callable[[Callable[[], Any], int, int], "TimingStats"]


@dataclass(frozen=True)
class TimingStats:
    """Summary of repeated latency samples, all in milliseconds."""

    samples_ms: tuple[float, ...]
    clock: str  # "cuda_event" or "perf_counter": says what was measured
    device: str
    median_ms: float = field(init=False)
    mean_ms: float = field(init=False)
    min_ms: float = field(init=False)
    max_ms: float = field(init=False)
    iqr_ms: float = field(init=False)
    std_ms: float = field(init=False)

    def __post_init__(self) -> None:
        if not self.samples_ms:
            raise ValueError("TimingStats needs at least one sample, got an empty sequence")
        samples = np.asarray(self.samples_ms, dtype=float)
        q25, q75 = np.percentile(samples, [25, 75])
        for name, value in (
            ("median_ms", float(np.median(samples))),
            ("mean_ms", float(samples.mean())),
            ("min_ms", float(samples.min())),
            ("max_ms", float(samples.max())),
            ("iqr_ms", float(q75 - q25)),
            ("std_ms", statistics.stdev(self.samples_ms) if len(self.samples_ms) > 1 else 0.0),
        ):
            object.__setattr__(self, name, value)

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float], clock: str = "perf_counter", device: str = "cpu") -> TimingStats:
        return cls(samples_ms=tuple(float(s) for s in samples_ms), clock=clock, device=device)

    def as_dict(self) -> dict[str, Any]:
        """Flat summary for report rows (raw samples kept as a list)."""
        return {
            "median_ms": self.median_ms, "mean_ms": self.mean_ms, "min_ms": self.min_ms, "max_ms": self.max_ms,
            "iqr_ms": self.iqr_ms, "std_ms": self.std_ms, "repeats": len(self.samples_ms), "clock": self.clock,
            "device": self.device, "samples_ms": list(self.samples_ms),
        }


class Timer:
    """Context manager timing one block on ``device``; read ``elapsed_ms`` after the block exits.

    CUDA: synchronizes on entry, records events around the block, synchronizes on exit.
    CPU: ``time.perf_counter``; CUDA work launched inside is *not* waited for (pass the GPU device).
    """

    def __init__(self, device: DeviceLike | None = "cpu") -> None:
        self.device = as_device(device)
        self.clock = "cuda_event" if self.device.type == "cuda" else "perf_counter"
        self._elapsed_ms: float | None = None
        self._start_s = 0.0
        self._events: tuple[Any, Any] | None = None

    def __enter__(self) -> Timer:
        self._elapsed_ms = None
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            self._events = (start, end)
            start.record(torch.cuda.current_stream(self.device))
        else:
            self._start_s = time.perf_counter()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.device.type == "cuda":
            assert self._events is not None
            start, end = self._events
            end.record(torch.cuda.current_stream(self.device))
            if exc_type is None:  # after an error (e.g. OOM) the stream may be unusable: leave elapsed unset
                end.synchronize()
                self._elapsed_ms = float(start.elapsed_time(end))
        else:
            self._elapsed_ms = (time.perf_counter() - self._start_s) * 1e3

    @property
    def elapsed_ms(self) -> float:
        if self._elapsed_ms is None:
            raise RuntimeError("Timer.elapsed_ms read before the timed block finished successfully")
        return self._elapsed_ms


def time_callable(fn: Callable[[], Any], warmup: int = 2, repeats: int = 10,
                  device: DeviceLike | None = "cpu") -> TimingStats:
    """Call ``fn()`` ``warmup`` times untimed (autotuning, lazy init, caches), then time ``repeats`` calls."""
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    dev = as_device(device)
    for _ in range(warmup):
        fn()
    samples_ms = []
    for _ in range(repeats):
        with Timer(dev) as timer:
            fn()
        samples_ms.append(timer.elapsed_ms)
    return TimingStats.from_samples(samples_ms, clock=Timer(dev).clock, device=str(dev))


def timer_sampler(device: DeviceLike | None = "cpu") -> Sampler:
    """:func:`time_callable` on ``device`` as a :data:`Sampler` (the library's own, for use outside the bench)."""
    def sample(fn: Callable[[], Any], warmup: int, rounds: int) -> TimingStats:
        return time_callable(fn, warmup=warmup, repeats=rounds, device=device)

    return sample
