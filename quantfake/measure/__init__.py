"""The bottom measurement layer: weight bytes, latency, peak memory, FLOPs/roofline, device facts, OOM handling,
non-finite outputs of timed calls.

Anything in quantfake may import it; it imports nothing of quantfake above it (tests/test_layers.py checks), so
the precision registry, memory placement and the session can measure without reaching up into the efficiency
cells. One job per submodule, everything re-exported here.
"""

from quantfake.measure.devices import (
    DeviceLike,
    as_device,
    cpu_info,
    device_info,
    nvidia_driver_version,
    supports_float8,
    synchronize,
)
from quantfake.measure.flops import achieved_tflops, count_flops, measure_matmul_peak_tflops, roofline_fraction
from quantfake.measure.memory import PeakMemory, current_rss_bytes, max_rss_bytes, peak_memory
from quantfake.measure.nonfinite import NonFiniteCalls
from quantfake.measure.oom import free_cached_memory, is_oom
from quantfake.measure.overhead import OverheadComparison, compare_overhead
from quantfake.measure.timing import Sampler, Timer, TimingStats, time_callable, timer_sampler
from quantfake.measure.weights import (
    component_weights_bytes,
    iter_storage_tensors,
    weights_bytes,
    weights_bytes_by_dtype,
)

__all__ = [
    "DeviceLike", "NonFiniteCalls", "OverheadComparison", "PeakMemory", "Sampler", "Timer", "TimingStats",
    "achieved_tflops", "as_device", "compare_overhead", "component_weights_bytes", "count_flops", "cpu_info",
    "current_rss_bytes", "device_info", "free_cached_memory", "is_oom", "iter_storage_tensors", "max_rss_bytes",
    "measure_matmul_peak_tflops", "nvidia_driver_version", "peak_memory", "roofline_fraction", "supports_float8",
    "synchronize", "time_callable", "timer_sampler", "weights_bytes", "weights_bytes_by_dtype",
]
