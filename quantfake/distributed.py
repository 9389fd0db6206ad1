"""``quantfake generate``: fill the store with every fake a bench run will ask for, sharded over processes.

Generation dominates a bench run, so it is done up front and spread over GPUs: under ``accelerate launch``
(or ``torchrun``) each process takes a share of the (generator, precision) jobs, packed heaviest first by their
estimated cost (:mod:`quantfake.packing`) and claimed by whichever process is free first (:func:`claim`), so
each pipeline is loaded once, on that process's own GPU; a job heavier than a fair share is split by image
chunks over several GPUs, so no single job bounds the wall time. The jobs go through the same :class:`~quantfake.session.engine.Session` and the same
:func:`~quantfake.options.build_options` as the bench, and store keys hold the device *type* (not
``cuda:1``), so a later ``pytest bench`` on the same store reuses every image and generates nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import re
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quantfake.errors import MemoryBudgetError, MissingWeightsError, PrecisionUnavailable, UnknownIdError
from quantfake.generate_record import generate_record, write_generate_record
from quantfake.measure.cpu_use import CpuUse, cpu_use
from quantfake.option_specs import GENERATE_OPTIONS
from quantfake.options import BenchOptions, build_options
from quantfake.packing import Unit, heaviest_first, lpt, split_heavy
from quantfake.store import Store

#: (mode, role) pairs: role "eval" fakes are scored in cells, role "train" fakes train the tiny detectors.
Task = tuple[str, str]

@dataclass
class Job:
    """One pipeline (generator x precision) and every (mode, role) set it must produce."""

    generator: str
    precision: str
    tasks: list[Task] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.generator}-{self.precision}"


@dataclass
class TaskOutcome:
    """What one (job, mode, role) did: images made vs found in the store, or why it was skipped."""

    job: str
    mode: str
    role: str
    generated: int = 0
    reused: int = 0
    seconds: float = 0.0
    key: str = ""
    status: str = "done"  # "done" | "unavailable" (precision cannot run here) | "missing" (no weights) |
    # "refused" (fits no recipe under --vram-budget)
    message: str = ""
    recipe: str = ""  # the speed recipe used and its check against eager batch 1 (quantfake.recipes)


def plan_jobs(o: BenchOptions, train_fakes: bool = True) -> list[Job]:
    """generator x precision jobs with their modes; in the tiny profile also the detectors' training fakes.

    Training fakes are fp32 of *every* generator (as :meth:`DetectorSource.training_set` asks for them), so they merge
    into the fp32 job of a selected generator and add fp32 jobs for the others.
    """
    from quantfake.generators import GENERATORS
    from quantfake.session.reals import TRAIN_MODES

    jobs: dict[tuple[str, str], Job] = {}
    for g in o.generators:
        for p in o.precisions:
            jobs[(g, p)] = Job(g, p, [(m, "eval") for m in o.modes])
    if o.profile == "tiny" and train_fakes and o.n_train > 0:
        for g in GENERATORS:
            job = jobs.setdefault((g, "fp32"), Job(g, "fp32"))
            job.tasks += [(m, "train") for m in TRAIN_MODES]
    return list(jobs.values())


def job_cost(o: BenchOptions, job: Job) -> float:
    """Estimated relative cost of a job: per-image cost of its generator x precision times its images
    (img2img runs ``strength`` of the steps)."""
    from quantfake.grids import group_cost

    per_image = group_cost(job.generator, job.precision, o.profile)
    return sum(per_image * (o.n_train if role == "train" else o.n_images) * (o.strength if mode == "img2img" else 1.0)
               for mode, role in job.tasks)


def job_units(o: BenchOptions, jobs: Sequence[Job], n_processes: int) -> list[Unit]:
    """Every unit of work of the launch: whole jobs, or chunk shards of those heavier than a fair share."""
    chunks = max(1, -(-max(o.n_images, o.n_train if o.profile == "tiny" else 0) // max(1, o.batch_size)))
    return split_heavy([(j.id, job_cost(o, j)) for j in jobs], n_processes, max_shards=chunks)


def shard_jobs(o: BenchOptions, jobs: Sequence[Job], n_processes: int) -> list[list[Unit]]:
    """Each process's units of work, LPT-packed from the estimated costs: what a static split would give."""
    return lpt(job_units(o, jobs, n_processes), n_processes)


def claim(units: Iterable[Unit], claims: Path) -> Iterator[Unit]:
    """The units this process takes, in the offered order: each goes to the first process free to claim it.

    A claim is a file created with ``O_EXCL`` in a folder all processes of one launch share, so the work
    balances itself whatever the cost estimates got wrong (a static split of the first 2-GPU run left one GPU
    idle for a third of the run: benchmarks/multigpu_generate). A process claims its next unit only when it has
    finished the last, which is longest-processing-time-first scheduling.
    """
    claims.mkdir(parents=True, exist_ok=True)
    for unit in units:
        try:
            os.close(os.open(claims / f"{unit.key}.{unit.shard}of{unit.shards}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            continue
        yield unit


def offered_units(o: BenchOptions, jobs: Sequence[Job], n_processes: int) -> list[Unit]:
    """Every unit of the launch, heaviest first (ties in a fixed order), as :func:`claim` offers them."""
    return heaviest_first(job_units(o, jobs, n_processes))


def prepare_model_folders(o: BenchOptions, jobs: Sequence[Job]) -> None:
    """Build the tiny pipelines the jobs load (other profiles read folders that exist or build in memory)."""
    if o.profile != "tiny":
        return
    from quantfake.tiny import ensure_tiny_pipeline

    models = Store(o.store).models_dir
    for generator in dict.fromkeys(j.generator for j in jobs):
        ensure_tiny_pipeline(generator, models)


def process_device(requested: str | None, num_processes: int, state_device: str) -> str:
    """The device this process generates on.

    With several processes each is pinned to its own accelerator (``cuda:<local rank>``, from accelerate),
    unless ``--device cpu`` was asked; with one process an explicit ``--device`` wins. The CPU is always plain
    ``cpu`` (accelerate says ``cpu:0`` under torchrun), as ``--device cpu`` and the bench record it.
    """
    if requested == "cpu":
        return "cpu"
    if num_processes > 1 or not requested:
        return "cpu" if state_device.split(":")[0] == "cpu" else state_device
    return requested


def run_jobs(o: BenchOptions, work: Iterable[tuple[Job, tuple[int, int]]], *, rank: int = 0,
             progress: bool = True) -> list[TaskOutcome]:
    """Run (job, shard) pairs in this process through one :class:`Session` (one pipeline held at a time);
    ``shard`` is the (index, count) share of the job's image chunks, ``(0, 1)`` for all of them."""
    from tqdm.auto import tqdm

    from quantfake.session.engine import Session

    session = Session.open(o, max_pipelines=1, progress=progress)
    outcomes: list[TaskOutcome] = []
    bar = tqdm(desc=f"generate [rank {rank}]", unit="set", position=rank, disable=not progress)
    for job, shard in work:
        for i, (mode, role) in enumerate(job.tasks):
            try:
                res = session.fakes.images(job.generator, job.precision, mode, role, shard=shard)
            except (PrecisionUnavailable, MissingWeightsError, MemoryBudgetError) as exc:
                status = ("unavailable" if isinstance(exc, PrecisionUnavailable) else
                          "missing" if isinstance(exc, MissingWeightsError) else "refused")
                outcomes += [TaskOutcome(job.id, m, r, status=status, message=str(exc).splitlines()[0])
                             for m, r in job.tasks[i:]]
                bar.update(len(job.tasks) - i)
                break  # the pipeline of this job cannot load: its other tasks fail the same way
            made = session.fakes.generation.get(res.key, {})
            outcomes.append(TaskOutcome(job.id, mode, role, res.generated, res.reused, res.seconds, res.key,
                                        recipe=f"{made.get('used')}: {made.get('check')}" if made else ""))
            bar.update(1)
    bar.close()
    for notice in session.take_notices():  # corrupt store entries regenerated, real images excluded
        print(f"[rank {rank}] notice: {notice['message']}", flush=True)
    return outcomes


def summary_lines(outcomes: Sequence[TaskOutcome], rank: int = 0) -> list[str]:
    """A table of generated vs reused images per job and set, and a total line that scripts can read."""
    from tabulate import tabulate

    rows = [(o.job, o.mode, o.role, o.generated, o.reused, f"{o.seconds:.1f}", o.recipe,
             o.status if o.status == "done" else f"{o.status}: {o.message}") for o in outcomes]
    table = tabulate(rows, headers=["job", "mode", "role", "generated", "reused", "seconds", "recipe: check",
                                    "status"])
    total_generated = sum(o.generated for o in outcomes)
    total_reused = sum(o.reused for o in outcomes)
    skipped = sum(o.status != "done" for o in outcomes)
    return [*table.splitlines(),
            f"[rank {rank}] generated={total_generated} reused={total_reused} skipped_sets={skipped}"]


@dataclass(frozen=True)
class LaunchFlags:
    """The options of ``quantfake generate`` that do not decide the images (so not in option_specs)."""

    train_fakes: bool = True
    progress: bool = True


def parse_args(argv: Sequence[str]) -> tuple[dict[str, Any], LaunchFlags]:
    """Raw option strings (the keys :func:`build_options` reads) and the launch-only flags."""
    parser = argparse.ArgumentParser(
        prog="quantfake generate",
        description="Generate the paired fakes of a bench run into the store; shard with `accelerate launch`.")
    for option in GENERATE_OPTIONS:
        parser.add_argument(option.name, **option.argparse_kwargs())
    parser.add_argument("--no-train-fakes", action="store_true",
                        help="tiny profile: skip the fp32 fakes that train the tiny detectors")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    ns = parser.parse_args(list(argv))
    raw = {option.key: getattr(ns, option.key) for option in GENERATE_OPTIONS}
    return raw, LaunchFlags(not ns.no_train_fakes, not ns.no_progress)


def start_from_stat(stat: str, now: float, boottime: float, ticks_per_s: int) -> float:
    """A process's start (epoch seconds) from its ``/proc/<pid>/stat`` line: field 22 counts clock ticks
    since boot, so the start is ``now`` minus the age on the boot-time clock. (psutil adds the ticks to
    ``btime``, which is whole seconds: up to a second off against ``time.time()``, too coarse here.)"""
    fields = stat.rsplit(")", 1)[1].split()  # the command name, in parentheses, may hold spaces
    return now - (boottime - int(fields[19]) / ticks_per_s)


def process_start_time() -> float:
    """When the OS started this process (epoch seconds): the phases then include interpreter start and imports."""
    try:
        stat = Path("/proc/self/stat").read_text()
        return start_from_stat(stat, time.time(), time.clock_gettime(time.CLOCK_BOOTTIME), os.sysconf("SC_CLK_TCK"))
    except (OSError, AttributeError, ValueError, IndexError):  # not Linux
        import psutil

        return psutil.Process().create_time()


def init_coordination_group() -> None:
    """Form the default process group over gloo when launched with several processes.

    generate only broadcasts a claims-folder name and waits at barriers, which never need GPU collectives;
    formed here before accelerate's ``PartialState`` (which then keeps it), no NCCL communicator is ever built.
    torchrun and ``accelerate launch --multi_gpu`` set ``WORLD_SIZE``; ``accelerate launch --cpu`` without
    mpirun starts one process and sets none.
    """
    import torch.distributed as dist

    if not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group(backend="gloo")


def barrier() -> None:
    """Wait for every process of the launch (a no-op in one process); gloo, on the CPU."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()


def gpu_numa_nodes(n_local: int) -> list[int | None]:
    """The NUMA node of each local rank's GPU (rank i runs on ``cuda:i % device_count``, as accelerate pins),
    None where unknown: no CUDA, no PCI ids in this torch, or no sysfs entry."""
    import torch

    from quantfake.cpu_affinity import pci_address, pci_numa_node

    if not torch.cuda.is_available():
        return [None] * n_local
    nodes: list[int | None] = []
    for rank in range(n_local):
        props = torch.cuda.get_device_properties(rank % torch.cuda.device_count())
        ids = [getattr(props, name, None) for name in ("pci_domain_id", "pci_bus_id", "pci_device_id")]
        nodes.append(pci_numa_node(pci_address(*ids)) if all(isinstance(i, int) for i in ids) else None)
    return nodes


def apply_cpu_affinity(mode: str, local_rank: int, n_local: int) -> str:
    """``--cpu-affinity``: pin this rank to its share of whole cores and use as many torch threads; what was
    done, for the phase line. One local process, or ``none``: nothing changes."""
    import torch

    from quantfake.cpu_affinity import cpu_list, pin, read_topology, split_cores

    if mode == "none" or n_local <= 1:
        return f"cpus as launched, {torch.get_num_threads()} threads"
    mine = split_cores(read_topology(), gpu_numa_nodes(n_local))[local_rank]
    cpus = pin(mine)
    torch.set_num_threads(len(mine))
    return f"cores {cpu_list(cpus)}, {len(mine)} threads"


#: The start-up and finish phases each rank stamps, in order (see :func:`phase_line`).
PHASES = ("imports", "group", "folders", "work", "done", "barrier")


def phase_line(rank: int, started: float, stamps: Mapping[str, float], details: Sequence[str] = ()) -> str:
    """One line of a rank's phases in seconds since its process started (epoch ``started``), which is printed
    too, so a launcher script can add its own start: the launch's cost, then each rank's start-up."""
    phases = ", ".join(f"{name} {stamps[name] - started:.1f}" for name in ("started", *PHASES) if name in stamps)
    return f"[rank {rank}] phases: {phases} s (process start at {started:.3f}{''.join(f'; {d}' for d in details)})"


PHASE_RE = re.compile(r"^\[rank (\d+)\] phases: (.*) s \(process start at ([\d.]+)")


def parse_phases(phases: str) -> dict[str, float]:
    """The ``name seconds`` pairs of a phase line's middle (``PHASE_RE``'s second group), as :func:`phase_line`
    wrote them."""
    return {name: float(seconds) for name, seconds in (p.rsplit(" ", 1) for p in phases.split(", "))}


def launch_offset_lines(log: str, launched_at: float) -> list[str]:
    """Per rank, from the phase lines of a launch log: seconds from ``launched_at`` (the script's clock before
    the launcher) to the rank's process start (the launcher's own cost) and to its work start (plus start-up)."""
    lines = []
    for rank, phases, started in sorted((m.groups() for m in map(PHASE_RE.match, log.splitlines()) if m),
                                        key=lambda g: int(g[0])):
        begin = float(started) - launched_at
        lines.append(f"[rank {rank}] launch -> process start {begin:.1f} s, -> work start "
                     f"{begin + parse_phases(phases)['work']:.1f} s")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Plan the jobs, take this process's share, generate, print a summary. Exit 2 on a bad id."""
    stamps = {"started": process_start_time()}
    raw, flags = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        options = build_options(raw)
    except (UnknownIdError, ValueError) as exc:
        print(f"quantfake generate: {exc}", file=sys.stderr)
        return 2
    import torch
    import torch.distributed as dist
    from accelerate import PartialState

    from quantfake.environment import quiet_libraries

    quiet_libraries()
    stamps["imports"] = time.time()
    init_coordination_group()
    # accelerate keeps the group formed above; alone (or under mpirun) it forms gloo only when told the CPU is used
    state = PartialState(cpu=options.device == "cpu" or not torch.cuda.is_available())
    backend = str(dist.get_backend()) if dist.is_initialized() else "none"
    stamps["group"] = time.time()
    rank = state.process_index
    device = process_device(options.device, state.num_processes, str(state.device))
    if device.startswith("cuda:"):
        torch.cuda.set_device(device)  # libraries that default to "cuda" then use this process's GPU
    n_local = int(os.environ.get("LOCAL_WORLD_SIZE", state.num_processes))
    # auto by default (options.cpu_affinity): on 2 H100s no contention with it, 1.97x (benchmarks/multigpu_h100)
    affinity = apply_cpu_affinity(options.cpu_affinity, state.local_process_index, n_local)
    options = dataclasses.replace(options, device=device)
    jobs = plan_jobs(options, train_fakes=flags.train_fakes)
    if rank != 0:  # transformers saves weights on rank 0 only (store.check_saved_pipeline): rank 0 goes first
        barrier()
    prepare_model_folders(options, jobs)
    if rank == 0:
        barrier()
    stamps["folders"] = time.time()
    by_id = {j.id: j for j in jobs}
    units = offered_units(options, jobs, state.num_processes)
    if state.num_processes > 1:  # one claims folder per launch, named by rank 0
        token = [f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"]
        dist.broadcast_object_list(token, src=0)
        units = claim(units, Store(options.store).root / "claims" / token[0])
    mine: list[Unit] = []
    spans: list[list[float]] = []  # [claimed at, done at] per unit, seconds since this rank started work
    used: list[CpuUse] = []  # per unit: this process's CPU over that span (see quantfake.measure.cpu_use)

    def work() -> Iterator[tuple[Job, tuple[int, int]]]:
        began = cpu_use()
        for unit in units:
            if spans:  # asking for the next unit means the previous one is done
                spans[-1][1] = time.perf_counter() - start
                now = cpu_use()
                used[-1], began = now - began, now
            mine.append(unit)
            spans.append([time.perf_counter() - start, 0.0])
            used.append(CpuUse(0.0, 0, 0.0))
            yield by_id[unit.key], (unit.shard, unit.shards)
        if spans:
            spans[-1][1] = time.perf_counter() - start
            used[-1] = cpu_use() - began

    stamps["work"] = time.time()
    start = time.perf_counter()
    outcomes = run_jobs(options, work(), rank=rank, progress=flags.progress)
    busy = time.perf_counter() - start
    stamps["done"] = time.time()
    print(f"[rank {rank}/{state.num_processes}] {len(mine)} units ({', '.join(map(unit_name, mine)) or 'none'}) "
          f"of {len(jobs)} jobs on {device} in {busy:.1f} s, store {options.store}")
    print("\n".join(summary_lines(outcomes, rank=rank)), flush=True)
    print("\n".join(timeline_lines(mine, [len(by_id[u.key].tasks) for u in mine], spans, outcomes, rank, used)),
          flush=True)
    barrier()
    stamps["barrier"] = time.time()
    print(f"[rank {rank}] timeline: busy {busy:.1f} s, then waited {time.perf_counter() - start - busy:.1f} s "
          "for the other ranks", flush=True)
    print(phase_line(rank, stamps["started"], stamps, [f"group {backend}", affinity]), flush=True)
    record = rank_record(options, mine, [by_id[u.key] for u in mine], spans, used, outcomes,
                         rank=rank, num_processes=state.num_processes, device=device, stamps=stamps)
    print(f"[rank {rank}] record: {write_generate_record(Store(options.store).root, record)}", flush=True)
    if dist.is_initialized():
        dist.destroy_process_group()
    return 1 if any(o.status in ("missing", "refused") for o in outcomes) else 0


def rank_record(o: BenchOptions, units: Sequence[Unit], unit_jobs: Sequence[Job],
                spans: Sequence[Sequence[float]], used: Sequence[CpuUse], outcomes: Sequence[TaskOutcome], *,
                rank: int, num_processes: int, device: str, stamps: Mapping[str, float]) -> dict[str, Any]:
    """This rank's :mod:`quantfake.generate_record`: its units (with their CPU use), the sets each made, and its
    phases in seconds since its process started."""
    unit_rows, set_rows = [], []
    own = outcomes_by_unit([len(job.tasks) for job in unit_jobs], outcomes)
    for unit, job, (began, ended), cpu, made in zip(units, unit_jobs, spans, used, own, strict=True):
        name = unit_name(unit)
        unit_rows.append({"unit": name, "job": str(unit.key), "shard": unit.shard, "shards": unit.shards,
                          "began_s": began, "ended_s": ended, **{f"cpu_{k}": v for k, v in vars(cpu).items()}})
        set_rows += [{"unit": name, "generator": job.generator, "precision": job.precision, "mode": out.mode,
                      "role": out.role, "generated": out.generated, "reused": out.reused, "seconds": out.seconds,
                      "status": out.status, "key": out.key, "recipe": out.recipe} for out in made]
    options = {"profile": o.profile, "steps": o.steps, "img2img_steps": o.img2img_steps, "size": o.size,
               "n_images": o.n_images, "batch_size": o.batch_size, "strength": o.strength}
    return generate_record(rank=rank, num_processes=num_processes, device=device, device_name=_device_name(device),
                           options=options, units=unit_rows, sets=set_rows,
                           phases={k: round(v - stamps["started"], 3) for k, v in stamps.items()})


def _device_name(device: str) -> str:
    """The accelerator's name (e.g. ``NVIDIA H100 80GB HBM3``), or ``cpu``."""
    import torch

    return torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else "cpu"


def outcomes_by_unit(task_counts: Sequence[int], outcomes: Sequence[TaskOutcome]) -> list[Sequence[TaskOutcome]]:
    """Each unit's own outcomes: :func:`run_jobs` gives one per task of each unit, in order."""
    ends = list(itertools.accumulate(task_counts))
    return [outcomes[end - n:end] for n, end in zip(task_counts, ends, strict=True)]


def unit_name(unit: Unit) -> str:
    """A job id, with its chunk share when the job was split over ranks (``flux-bf16[1/2]``)."""
    return unit.key if unit.shards == 1 else f"{unit.key}[{unit.shard + 1}/{unit.shards}]"


def timeline_lines(units: Sequence[Unit], task_counts: Sequence[int], spans: Sequence[Sequence[float]],
                   outcomes: Sequence[TaskOutcome], rank: int,
                   used: Sequence[CpuUse] | None = None) -> list[str]:
    """One line per unit this rank ran: when it was claimed and done, and how much of that was generation
    (the rest is loading and quantizing the pipeline, and the store), with the CPU it used when ``used`` is
    given; what explains a multi-GPU remainder."""
    lines = []
    own = outcomes_by_unit(task_counts, outcomes)
    for i, (unit, made, (began, ended)) in enumerate(zip(units, own, spans, strict=True)):
        generating = sum(o.seconds for o in made)
        cpu = f"; {used[i].describe()}" if used is not None else ""
        lines.append(f"[rank {rank}] timeline: {unit_name(unit):<22} {began:7.1f} -> {ended:7.1f} s "
                     f"({ended - began:6.1f} s: generate {generating:6.1f}, load/other {ended - began - generating:5.1f}"
                     f"{cpu})")
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
