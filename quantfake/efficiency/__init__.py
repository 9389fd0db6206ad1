"""Efficiency measurement: weight bytes, latency, peak memory, FLOPs/roofline, device facts, OOM handling.

Plain library code for benchmark cells; one job per submodule, everything re-exported here.
"""

from quantfake.efficiency.devices import (
    DeviceLike,
    as_device,
    cpu_info,
    device_info,
    nvidia_driver_version,
    supports_float8,
    synchronize,
)
from quantfake.efficiency.flops import achieved_tflops, count_flops, measure_matmul_peak_tflops, roofline_fraction
from quantfake.efficiency.memory import PeakMemory, current_rss_bytes, max_rss_bytes, peak_memory
from quantfake.efficiency.oom import free_cached_memory, is_oom
from quantfake.efficiency.overhead import OverheadComparison, compare_overhead
from quantfake.efficiency.timing import Sampler, Timer, TimingStats, time_callable, timer_sampler
from quantfake.efficiency.weights import (
    component_weights_bytes,
    iter_storage_tensors,
    weights_bytes,
    weights_bytes_by_dtype,
)

__all__ = [
    "DeviceLike", "OverheadComparison", "PeakMemory", "Sampler", "Timer", "TimingStats", "achieved_tflops", "as_device",
    "compare_overhead", "component_weights_bytes", "count_flops", "cpu_info", "current_rss_bytes", "device_info",
    "free_cached_memory", "is_oom", "iter_storage_tensors", "max_rss_bytes", "measure_matmul_peak_tflops",
    "nvidia_driver_version", "peak_memory", "roofline_fraction", "supports_float8", "synchronize",
    "time_callable", "timer_sampler", "weights_bytes", "weights_bytes_by_dtype",
]
