"""Give each local process of a multi-GPU launch its own whole physical CPU cores.

Host-bound sets (bitsandbytes nf4, bf16 SDXL: thousands of small kernel launches a step) ran 27-45 % slower
when a second rank ran beside them on the same host, as launched (2 H200s, benchmarks/multigpu_generate_claims).
Pinned by this module on 2 H100s, every set of the rehearsal grid generated as fast in its rank (0-16 % faster)
as in one process alone on the host (benchmarks/multigpu_h100), so ``auto`` is ``quantfake generate``'s default. The split is a pure function
over a :class:`Core` list, so fake topologies test it; reading ``/sys`` and pinning are thin wrappers.

Standard library only, written by hand: accelerate's ``ACCELERATE_CPU_AFFINITY`` binds each rank to its GPU's
whole NUMA node (two ranks on one node still share every core), and torch's ``torchrun --numa-binding
exclusive`` (torch/numa/binding.py) splits a node's cores over its GPUs like this module does, but only under
torchrun, only with CUDA devices (so untestable on CPU) and through private helpers; ``accelerate launch`` cannot
pass it on.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

#: ``quantfake generate --cpu-affinity``: ``auto`` pins when several local processes share the host.
AFFINITY_CHOICES = ("auto", "none")
SYS_CPU = Path("/sys/devices/system/cpu")
SYS_PCI = Path("/sys/bus/pci/devices")


@dataclass(frozen=True)
class Core:
    """One physical core: its logical CPUs (hyperthread siblings) and its NUMA node (-1 when unknown)."""

    package: int
    core: int
    cpus: tuple[int, ...]
    node: int = -1


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def read_topology(allowed: Iterable[int] | None = None, root: Path = SYS_CPU) -> list[Core]:
    """The physical cores of the CPUs this process may run on (``os.sched_getaffinity(0)`` by default),
    grouped by (physical_package_id, core_id); a CPU without topology files counts as a core of its own."""
    cpus = sorted(os.sched_getaffinity(0) if allowed is None else allowed)
    groups: dict[tuple[int, int], list[int]] = {}
    nodes: dict[tuple[int, int], int] = {}
    for cpu in cpus:
        folder = root / f"cpu{cpu}"
        package, core = _read_int(folder / "topology/physical_package_id"), _read_int(folder / "topology/core_id")
        key = (package, core) if package is not None and core is not None else (-1, -1 - cpu)
        groups.setdefault(key, []).append(cpu)
        node = next((int(p.name[4:]) for p in folder.glob("node*") if p.name[4:].isdigit()), -1)
        nodes.setdefault(key, node)
    return [Core(package, core, tuple(members), nodes[(package, core)])
            for (package, core), members in groups.items()]


def pci_address(domain: int, bus: int, device: int) -> str:
    """The sysfs name of a PCI device from the integers torch's CUDA device properties hold
    (``pci_domain_id``, ``pci_bus_id``, ``pci_device_id``), e.g. ``0000:1b:00.0``."""
    return f"{domain:04x}:{bus:02x}:{device:02x}.0"


def pci_numa_node(pci_bus_id: str, root: Path = SYS_PCI) -> int | None:
    """The NUMA node of a PCI device (:func:`pci_address`, or nvidia-smi's ``00000000:1B:00.0``), None when
    unknown (no such file, or -1 as single-node hosts report); sysfs spells it with a 4-digit domain, lower case."""
    parts = pci_bus_id.strip().lower().split(":")
    if len(parts) != 3:
        return None
    node = _read_int(root / f"{parts[0][-4:].rjust(4, '0')}:{parts[1]}:{parts[2]}" / "numa_node")
    return None if node is None or node < 0 else node


def split_cores(cores: Sequence[Core], preferred_nodes: Sequence[int | None]) -> list[tuple[Core, ...]]:
    """Each local rank's cores: disjoint whole cores, as even as possible, each rank drawing first from its
    preferred NUMA node (its GPU's; None: no preference). With fewer cores than ranks, ranks share cores round
    robin (never an empty set). Every rank computes the same split, so no communication is needed."""
    n_ranks = len(preferred_nodes)
    if n_ranks == 0 or not cores:
        return [() for _ in range(n_ranks)]
    ordered = sorted(cores, key=lambda c: (c.node, c.package, c.core, c.cpus))
    if len(ordered) < n_ranks:
        return [(ordered[rank % len(ordered)],) for rank in range(n_ranks)]
    share, extra = divmod(len(ordered), n_ranks)
    quotas = [share + (rank < extra) for rank in range(n_ranks)]
    free = list(ordered)
    taken: list[list[Core]] = [[] for _ in range(n_ranks)]
    for rank, node in enumerate(preferred_nodes):  # first the rank's own node
        if node is not None:
            mine = [c for c in free if c.node == node][:quotas[rank]]
            taken[rank] += mine
            free = [c for c in free if c not in mine]
    for rank in range(n_ranks):  # then any free core, in topology order
        need = quotas[rank] - len(taken[rank])
        taken[rank] += free[:need]
        free = free[need:]
    return [tuple(sorted(t, key=lambda c: c.cpus)) for t in taken]


def logical_cpus(cores: Iterable[Core]) -> list[int]:
    """The logical CPU numbers of some cores, sorted."""
    return sorted(cpu for core in cores for cpu in core.cpus)


def cpu_list(cpus: Iterable[int]) -> str:
    """``0-7,16-23``: the kernel's cpulist spelling, short enough for a log line."""
    runs: list[list[int]] = []
    for cpu in sorted(cpus):
        if runs and cpu == runs[-1][1] + 1:
            runs[-1][1] = cpu
        else:
            runs.append([cpu, cpu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def pin(cores: Sequence[Core]) -> list[int]:
    """Restrict this process to the logical CPUs of ``cores``; returns them.

    ``os.sched_setaffinity(0, ...)`` moves only the calling thread, so every thread already running (torch's
    intra-op pool, CUDA's helpers) that still has the process's original mask is moved too; threads started later
    inherit the new mask. A thread that exits meanwhile is skipped.
    """
    cpus = logical_cpus(cores)
    original = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    for tid in os.listdir("/proc/self/task"):
        try:
            if os.sched_getaffinity(int(tid)) == original:
                os.sched_setaffinity(int(tid), cpus)
        except (OSError, ValueError):
            continue
    return cpus
