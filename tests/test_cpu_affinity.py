"""``--cpu-affinity auto``: the split of whole physical cores over local ranks, on fake topologies and fake sysfs."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from quantfake.cpu_affinity import (
    Core,
    cpu_list,
    logical_cpus,
    pci_address,
    pci_numa_node,
    pin,
    read_topology,
    split_cores,
)


def _hyperthreaded(n_cores: int, nodes: int = 1) -> list[Core]:
    """n_cores cores whose siblings are numbered (0, n), (1, n+1), ...; the first half on node 0 if two nodes."""
    per_node = n_cores // nodes
    return [Core(package=c // per_node, core=c % per_node, cpus=(c, c + n_cores), node=c // per_node)
            for c in range(n_cores)]


def _cpus(split: list[tuple[Core, ...]]) -> list[list[int]]:
    return [logical_cpus(cores) for cores in split]


def test_siblings_stay_together_and_ranks_get_disjoint_equal_halves() -> None:
    split = split_cores(_hyperthreaded(16), [None, None])
    assert _cpus(split) == [[*range(0, 8), *range(16, 24)], [*range(8, 16), *range(24, 32)]]
    assert [cpu_list(c) for c in _cpus(split)] == ["0-7,16-23", "8-15,24-31"]


def test_each_rank_prefers_its_gpus_numa_node() -> None:
    cores = _hyperthreaded(8, nodes=2)  # node 0: cpus 0-3,8-11; node 1: 4-7,12-15
    assert _cpus(split_cores(cores, [1, 0])) == [[4, 5, 6, 7, 12, 13, 14, 15], [0, 1, 2, 3, 8, 9, 10, 11]]
    # both GPUs on node 1: rank 0 takes it, rank 1 gets the rest, still disjoint and equal
    both = _cpus(split_cores(cores, [1, 1]))
    assert both[0] == [4, 5, 6, 7, 12, 13, 14, 15] and both[1] == [0, 1, 2, 3, 8, 9, 10, 11]


def test_uneven_counts_differ_by_at_most_one_core_and_cover_everything() -> None:
    cores = _hyperthreaded(7)
    split = split_cores(cores, [None, None, None])
    assert [len(s) for s in split] == [3, 2, 2]
    assert sorted(cpu for cpus in _cpus(split) for cpu in cpus) == logical_cpus(cores)


def test_fewer_cores_than_ranks_share_and_none_is_empty() -> None:
    cores = [Core(0, 0, (0,)), Core(0, 1, (1,))]
    split = split_cores(cores, [None, None, None])
    assert _cpus(split) == [[0], [1], [0]]
    assert split_cores([], [None]) == [()]


def _fake_sys(root: Path, cpus: dict[int, tuple[int, int, int]]) -> Path:
    """cpuN/topology/{physical_package_id,core_id} and cpuN/nodeM, as Linux lays them out."""
    for cpu, (package, core, node) in cpus.items():
        topo = root / f"cpu{cpu}" / "topology"
        topo.mkdir(parents=True)
        (topo / "physical_package_id").write_text(f"{package}\n")
        (topo / "core_id").write_text(f"{core}\n")
        (root / f"cpu{cpu}" / f"node{node}").mkdir()
    return root


def test_read_topology_groups_siblings_within_the_allowed_cpus(tmp_path: Path) -> None:
    root = _fake_sys(tmp_path, {0: (0, 0, 0), 1: (0, 1, 0), 2: (0, 0, 0), 3: (0, 1, 0), 4: (1, 0, 1)})
    assert read_topology([0, 1, 2, 3, 4], root) == [Core(0, 0, (0, 2), 0), Core(0, 1, (1, 3), 0), Core(1, 0, (4,), 1)]
    assert read_topology([1, 4], root) == [Core(0, 1, (1,), 0), Core(1, 0, (4,), 1)], "only the allowed CPUs"
    assert [c.cpus for c in read_topology([7], root)] == [(7,)], "no topology files: a core of its own"


def test_read_topology_of_this_machine_covers_the_affinity_mask() -> None:
    assert logical_cpus(read_topology()) == sorted(os.sched_getaffinity(0))


@pytest.mark.parametrize(("bus_id", "node"), [("00000000:1B:00.0", 1), ("0000:1b:00.0", 1), ("00000000:3D:00.0", None),
                                              ("00000000:4E:00.0", None), ("garbage", None)])
def test_pci_numa_node_reads_sysfs_and_guards_unknowns(tmp_path: Path, bus_id: str, node: int | None) -> None:
    (tmp_path / "0000:1b:00.0").mkdir()
    (tmp_path / "0000:1b:00.0" / "numa_node").write_text("1\n")
    (tmp_path / "0000:3d:00.0").mkdir()
    (tmp_path / "0000:3d:00.0" / "numa_node").write_text("-1\n")  # what single-node hosts report
    assert pci_numa_node(bus_id, tmp_path) == node


def test_pci_address_spells_torchs_integers_as_sysfs_does() -> None:
    assert pci_address(0, 0x1B, 0) == "0000:1b:00.0"


def test_pin_moves_the_threads_already_running_too() -> None:
    """A thread started before pinning (torch's pool, CUDA's helpers) must not keep the old mask."""
    original = os.sched_getaffinity(0)
    one = min(original)
    started, release = threading.Event(), threading.Event()
    worker = threading.Thread(target=lambda: (started.set(), release.wait(30)))
    worker.start()
    started.wait(30)
    try:
        assert pin([Core(0, 0, (one,))]) == [one]
        assert os.sched_getaffinity(0) == {one} and os.sched_getaffinity(worker.native_id) == {one}
    finally:
        release.set()
        worker.join()
        for tid in os.listdir("/proc/self/task"):  # every thread of this test process back on all its CPUs
            try:
                os.sched_setaffinity(int(tid), original)
            except OSError:
                continue


_WORKER_PROBE = """
import json, os, sys
import torch
sys.path.insert(0, os.getcwd())
from fixtures.plugin import _pin_worker_device
from quantfake.options import build_options
_pin_worker_device(build_options({"device": "cpu", "cpu_affinity": sys.argv[1]}))
print(json.dumps({"cpus": sorted(os.sched_getaffinity(0)), "threads": torch.get_num_threads()}))
"""


@pytest.mark.parametrize("mode", ["auto", "none"])
def test_an_xdist_worker_gets_its_share_of_whole_cores_unless_none(mode: str) -> None:
    """pytest -n N: N workers each running every core's threads thrashed (a tiny grid on 2 CPU cores took 151 s
    under -n 2 against 38 s under -n 0); with auto, worker gwK runs on its own cores with as many threads."""
    import json
    import subprocess
    import sys

    launched = sorted(os.sched_getaffinity(0))
    env = {**os.environ, "PYTEST_XDIST_WORKER": "gw1", "PYTEST_XDIST_WORKER_COUNT": "2"}
    env.pop("OMP_NUM_THREADS", None)
    out = subprocess.run([sys.executable, "-c", _WORKER_PROBE, mode], cwd=Path(__file__).resolve().parent.parent,
                         env=env, capture_output=True, text=True, timeout=120, check=True)
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    if mode == "none":
        assert seen["cpus"] == launched
        return
    mine = split_cores(read_topology(launched), [None, None])[1]
    assert seen == {"cpus": sorted(logical_cpus(mine)), "threads": len(mine)}


def test_an_unknown_cpu_affinity_is_refused_naming_the_choices() -> None:
    from quantfake.errors import UnknownIdError
    from quantfake.options import build_options

    with pytest.raises(UnknownIdError, match="bogus") as info:
        build_options({"cpu_affinity": "bogus"})
    assert "auto" in str(info.value) and "none" in str(info.value)
