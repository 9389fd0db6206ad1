"""Recognise out-of-memory failures so one benchmark cell's OOM is recorded and the others still run."""

from __future__ import annotations

import gc

import torch

# Lower-cased fragments of allocator failure messages (CUDA caching allocator, cuBLAS/cuDNN workspaces,
# CPU allocator). Deliberately excludes Triton's "out of resource" (shared memory), which is a kernel
# configuration error, not memory exhaustion.
_OOM_MESSAGE_FRAGMENTS = (
    "out of memory",
    "cublas_status_alloc_failed",
    "cudnn_status_alloc_failed",
    "can't allocate memory",
    "cudaerrormemoryallocation",
)
_MAX_CHAIN = 16


def is_oom(exc: BaseException) -> bool:
    """True when ``exc`` (or an exception it was raised from / during) is an out-of-memory error."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < _MAX_CHAIN:
        seen.add(id(current))
        if isinstance(current, (torch.OutOfMemoryError, MemoryError)):
            return True
        message = str(current).lower()
        if any(fragment in message for fragment in _OOM_MESSAGE_FRAGMENTS):
            return True
        current = current.__cause__ or current.__context__
    return False


def free_cached_memory() -> None:
    """Drop garbage and torch's cached GPU blocks, e.g. after an OOM before the next cell runs."""
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
