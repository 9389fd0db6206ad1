"""Peak memory of a block of work: the half of the "quantization saves resources" claim that usually holds.

GPU: torch's caching-allocator peaks (allocated = tensors, reserved = what the allocator holds) plus
NVML's whole-device use (includes the CUDA context, other processes and non-torch allocations).
CPU: resident set size. ``ru_maxrss`` is a process-lifetime high-water mark; on Linux we try to reset
it on entry (``/proc/self/clear_refs`` <- "5") so the peak covers the block, and say whether that worked.
"""

from __future__ import annotations

import os
import resource
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from quantfake.measure.devices import GIB, DeviceLike, as_device


@dataclass
class PeakMemory:
    """Filled in when the ``peak_memory`` block exits (also when it raised, e.g. on OOM)."""

    device: str
    # GPU (None on CPU)
    start_allocated_gib: float | None = None
    max_allocated_gib: float | None = None
    max_reserved_gib: float | None = None
    nvml_used_gib_at_exit: float | None = None  # whole device, all processes; None without pynvml
    # CPU / process (always filled)
    process_peak_rss_gib: float | None = None  # ru_maxrss at exit
    peak_rss_is_windowed: bool = False  # True: the high-water mark was reset on entry, so it covers the block
    rss_before_gib: float | None = None
    rss_after_gib: float | None = None

    @property
    def rss_delta_gib(self) -> float | None:
        """Current RSS after minus before: memory the block left resident (not its transient peak)."""
        if self.rss_before_gib is None or self.rss_after_gib is None:
            return None
        return self.rss_after_gib - self.rss_before_gib

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rss_delta_gib": self.rss_delta_gib}


def current_rss_bytes() -> int | None:
    """Resident set size now, from /proc/self/statm (Linux); None elsewhere."""
    try:
        resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def max_rss_bytes() -> int:
    """``getrusage`` peak RSS in bytes (Linux reports KiB, macOS bytes)."""
    ru_maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return ru_maxrss if sys.platform == "darwin" else ru_maxrss * 1024


def try_reset_rss_peak() -> bool:
    """Reset the process RSS high-water mark (Linux >= 4.0); False when not permitted or not Linux."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _nvml_used_bytes(dev: torch.device) -> int | None:
    """Device memory in use per NVML, found by UUID so CUDA_VISIBLE_DEVICES reordering cannot mislead."""
    try:
        import pynvml  # type: ignore[import-not-found]  # optional: nvidia-ml-py
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        uuid = str(torch.cuda.get_device_properties(dev).uuid)
        handle = None
        for prefix in ("GPU-", "MIG-", ""):
            try:
                handle = pynvml.nvmlDeviceGetHandleByUUID(prefix + uuid)
                break
            except pynvml.NVMLError:
                continue
        if handle is None:
            if os.environ.get("CUDA_VISIBLE_DEVICES"):
                return None  # index would be ambiguous
            handle = pynvml.nvmlDeviceGetHandleByIndex(dev.index or 0)
        return int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)
    except Exception:  # any NVML failure: report unknown, never fail the measurement
        return None


def _gib(n_bytes: int | None) -> float | None:
    return None if n_bytes is None else n_bytes / GIB


@contextmanager
def peak_memory(device: DeviceLike | None = "cpu", reset_rss_peak: bool = True) -> Iterator[PeakMemory]:
    """Measure peak memory of the ``with`` block; the yielded ``PeakMemory`` is filled on exit.

    ``reset_rss_peak`` resets the whole process's RSS high-water mark (a process-wide side effect).
    """
    dev = as_device(device)
    result = PeakMemory(device=str(dev))
    result.rss_before_gib = _gib(current_rss_bytes())
    result.peak_rss_is_windowed = try_reset_rss_peak() if reset_rss_peak else False
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        result.start_allocated_gib = _gib(torch.cuda.memory_allocated(dev))
    try:
        yield result
    finally:
        if dev.type == "cuda":
            try:
                torch.cuda.synchronize(dev)
            except RuntimeError:
                pass  # e.g. after an OOM or a device-side error: the counters below are still readable
            result.max_allocated_gib = _gib(torch.cuda.max_memory_allocated(dev))
            result.max_reserved_gib = _gib(torch.cuda.max_memory_reserved(dev))
            result.nvml_used_gib_at_exit = _gib(_nvml_used_bytes(dev))
        rss_after_bytes = current_rss_bytes()
        result.rss_after_gib = _gib(rss_after_bytes)
        # the kernel's high-water mark can lag the live counter by a few pages; a peak is never below "now"
        result.process_peak_rss_gib = _gib(max(max_rss_bytes(), rss_after_bytes or 0))
