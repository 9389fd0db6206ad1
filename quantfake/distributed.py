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
import os
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quantfake.errors import MemoryBudgetError, MissingWeightsError, PrecisionUnavailable, UnknownIdError
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
    unless ``--device cpu`` was asked; with one process an explicit ``--device`` wins.
    """
    if requested == "cpu":
        return "cpu"
    if num_processes > 1 or not requested:
        return state_device
    return requested


def run_jobs(o: BenchOptions, work: Iterable[tuple[Job, tuple[int, int]]], *, rank: int = 0,
             progress: bool = True) -> list[TaskOutcome]:
    """Run (job, shard) pairs in this process through one :class:`Session` (one pipeline held at a time);
    ``shard`` is the (index, count) share of the job's image chunks, ``(0, 1)`` for all of them."""
    from tqdm.auto import tqdm

    from quantfake.session.engine import Session

    session = Session.open(o, max_pipelines=1)
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


def parse_args(argv: Sequence[str]) -> tuple[dict[str, Any], bool, bool]:
    """Raw option strings (the keys :func:`build_options` reads), ``train_fakes`` and ``progress``."""
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
    return raw, not ns.no_train_fakes, not ns.no_progress


def main(argv: Sequence[str] | None = None) -> int:
    """Plan the jobs, take this process's share, generate, print a summary. Exit 2 on a bad id."""
    raw, train_fakes, progress = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        options = build_options(raw)
    except (UnknownIdError, ValueError) as exc:
        print(f"quantfake generate: {exc}", file=sys.stderr)
        return 2
    import torch
    from accelerate import PartialState

    from quantfake.environment import quiet_libraries

    quiet_libraries()
    # accelerate forms a multi-process CPU group (gloo) only when told the processes are on the CPU
    state = PartialState(cpu=options.device == "cpu" or not torch.cuda.is_available())
    device = process_device(options.device, state.num_processes, str(state.device))
    if device.startswith("cuda:"):
        torch.cuda.set_device(device)  # libraries that default to "cuda" then use this process's GPU
    options = dataclasses.replace(options, device=device)
    jobs = plan_jobs(options, train_fakes=train_fakes)
    with state.main_process_first():  # transformers saves weights on rank 0 only (store.check_saved_pipeline)
        prepare_model_folders(options, jobs)
    by_id = {j.id: j for j in jobs}
    units = offered_units(options, jobs, state.num_processes)
    if state.num_processes > 1:  # one claims folder per launch, named by rank 0
        from accelerate.utils import broadcast_object_list

        token = [f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"]
        broadcast_object_list(token)
        units = claim(units, Store(options.store).root / "claims" / token[0])
    mine: list[Unit] = []
    spans: list[list[float]] = []  # [claimed at, done at] per unit, seconds since this rank started work

    def work() -> Iterator[tuple[Job, tuple[int, int]]]:
        for unit in units:
            if spans:  # asking for the next unit means the previous one is done
                spans[-1][1] = time.perf_counter() - start
            mine.append(unit)
            spans.append([time.perf_counter() - start, 0.0])
            yield by_id[unit.key], (unit.shard, unit.shards)
        if spans:
            spans[-1][1] = time.perf_counter() - start

    start = time.perf_counter()
    outcomes = run_jobs(options, work(), rank=state.process_index, progress=progress)
    busy = time.perf_counter() - start
    rank = state.process_index
    print(f"[rank {rank}/{state.num_processes}] {len(mine)} units ({', '.join(map(unit_name, mine)) or 'none'}) "
          f"of {len(jobs)} jobs on {device} in {busy:.1f} s, store {options.store}")
    print("\n".join(summary_lines(outcomes, rank=rank)), flush=True)
    print("\n".join(timeline_lines(mine, [len(by_id[u.key].tasks) for u in mine], spans, outcomes, rank)),
          flush=True)
    state.wait_for_everyone()
    print(f"[rank {rank}] timeline: busy {busy:.1f} s, then waited {time.perf_counter() - start - busy:.1f} s "
          "for the other ranks", flush=True)
    state.destroy_process_group()
    return 1 if any(o.status in ("missing", "refused") for o in outcomes) else 0


def unit_name(unit: Unit) -> str:
    """A job id, with its chunk share when the job was split over ranks (``flux-bf16[1/2]``)."""
    return unit.key if unit.shards == 1 else f"{unit.key}[{unit.shard + 1}/{unit.shards}]"


def timeline_lines(units: Sequence[Unit], task_counts: Sequence[int], spans: Sequence[Sequence[float]],
                   outcomes: Sequence[TaskOutcome], rank: int) -> list[str]:
    """One line per unit this rank ran: when it was claimed and done, and how much of that was generation
    (the rest is loading and quantizing the pipeline, and the store); what explains a multi-GPU remainder."""
    lines, first = [], 0
    # run_jobs gives one outcome per task of each unit, in order
    for unit, n_tasks, (began, ended) in zip(units, task_counts, spans, strict=True):
        generating = sum(o.seconds for o in outcomes[first:first + n_tasks])
        first += n_tasks
        lines.append(f"[rank {rank}] timeline: {unit_name(unit):<22} {began:7.1f} -> {ended:7.1f} s "
                     f"({ended - began:6.1f} s: generate {generating:6.1f}, load/other {ended - began - generating:5.1f})")
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
