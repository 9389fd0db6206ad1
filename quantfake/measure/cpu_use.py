"""Where a process's CPU went during one unit of work: what tells a host-bound slowdown apart from a GPU one.

Two ranks on one host ran host-bound sets (SDXL, SD3 nf4) 27-45 % slower than one process alone, while GPU-bound
Flux was unaffected (benchmarks/multigpu_generate_claims). If the main thread's CPU seconds grow with the wall
time, its core got slower (a hyperthread sibling or a shared core busy); if they stay and involuntary context
switches grow, it was preempted; if neither, it waited on something else. Standard library only.

Read on 2 H100s (benchmarks/multigpu_h100): the main thread's CPU seconds equal the wall time of every set, Flux
included, because the host spins while it waits for the GPU; so on CUDA the thread column cannot tell host-bound
from GPU-bound work, and the preemption count is the telling one (one process with 32 threads: 1047 preemptions
in a 42 s SD3 nf4 set; a pinned rank with 16 threads: 51 in 35 s).
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class CpuUse:
    """CPU seconds of the calling (main) thread, its involuntary context switches, and all threads' CPU seconds."""

    thread_s: float
    preempted: int
    process_s: float

    def __sub__(self, other: CpuUse) -> CpuUse:
        return CpuUse(self.thread_s - other.thread_s, self.preempted - other.preempted,
                      self.process_s - other.process_s)

    def describe(self) -> str:
        return (f"main thread cpu {self.thread_s:.1f} s, {self.preempted} preemptions; "
                f"all threads cpu {self.process_s:.1f} s")


def cpu_use() -> CpuUse:
    """A snapshot for the calling thread (``RUSAGE_THREAD`` is Linux; elsewhere preemptions count the process)."""
    who = getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF)
    return CpuUse(time.thread_time(), resource.getrusage(who).ru_nivcsw, time.process_time())
