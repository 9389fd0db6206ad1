"""What machine a measurement ran on, so latency and memory numbers are never reported without it."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path
from typing import Any

import torch

DeviceLike = str | torch.device | int

_ACCEPTED_DEVICE_TYPES = ("cpu", "cuda")
GIB = 1024**3


def as_device(device: DeviceLike | None) -> torch.device:
    """Normalise a device spec; a bare "cuda" becomes "cuda:<current>" so caches and NVML agree on the index."""
    if device is None:
        return torch.device("cpu")
    accepted = ", ".join(_ACCEPTED_DEVICE_TYPES)
    try:
        dev = torch.device(f"cuda:{device}") if isinstance(device, int) else torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"unsupported device {device!r}; accepted device types: {accepted}") from exc
    if dev.type not in _ACCEPTED_DEVICE_TYPES:
        raise ValueError(f"unsupported device {device!r}; accepted device types: {accepted}")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def synchronize(device: DeviceLike | None) -> None:
    """Wait for queued GPU work so a wall clock or memory reading covers it; a no-op on CPU."""
    dev = as_device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _cpu_model_name() -> str:
    """The CPU model from /proc/cpuinfo (platform.processor() is often empty on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _total_ram_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def cpu_info() -> dict[str, Any]:
    """CPU facts that bound CPU timings: usable cores differ from logical cores under cgroups/affinity."""
    ram_bytes = _total_ram_bytes()
    try:
        usable_cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable_cores = os.cpu_count()
    return {
        "type": "cpu",
        "name": _cpu_model_name(),
        "machine": platform.machine(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable_cores,
        "torch_threads": torch.get_num_threads(),
        "total_memory_gib": None if ram_bytes is None else ram_bytes / GIB,
        "python_version": platform.python_version(),
        "torch_version": torch.__version__,
    }


def nvidia_driver_version() -> str | None:
    """Driver version from NVML when importable, else from the kernel module's /proc file, else None."""
    try:
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:  # ImportError or any NVMLError: fall through to /proc
        pass
    try:
        text = Path("/proc/driver/nvidia/version").read_text()
    except OSError:
        return None
    match = re.search(r"Kernel Module(?: for \S+)?\s+([\d.]+)", text)
    return match.group(1) if match else None


def device_info(device: DeviceLike | None) -> dict[str, Any]:
    """Name, compute capability, memory and driver/CUDA versions of a device (CPU facts for "cpu")."""
    dev = as_device(device)
    if dev.type == "cpu":
        return {**cpu_info(), "device": str(dev), "compute_capability": None, "driver_version": None,
                "cuda_version": None}
    props = torch.cuda.get_device_properties(dev)
    cudnn_version = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "type": "cuda",
        "device": str(dev),
        "name": props.name,
        "compute_capability": f"{props.major}.{props.minor}",
        "total_memory_gib": props.total_memory / GIB,
        "multiprocessor_count": props.multi_processor_count,
        "driver_version": nvidia_driver_version(),
        "cuda_version": torch.version.cuda,
        "cudnn_version": cudnn_version,
        "torch_version": torch.__version__,
    }


def supports_float8(device: DeviceLike | None) -> bool:
    """True when the GPU has fp8 tensor cores (compute capability >= 8.9: Ada, Hopper, Blackwell).

    CPU returns False: torch can store float8 there but has no fp8 matmul hardware to time.
    """
    dev = as_device(device)
    if dev.type != "cuda":
        return False
    return torch.cuda.get_device_capability(dev) >= (8, 9)
