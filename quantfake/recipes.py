"""Speed recipes for generation (batch > 1, the denoiser under torch.compile), checked against eager batch 1.

A faster way to make a set of images is only the same experiment if it makes the same images. So per
generator x precision, once per session (and only when a set really needs generating), the recipe's first
chunk is compared with eager batch-1 images of the same seeds:

- bitwise equal, or every compared image at PSNR >= :data:`MIN_PSNR_DB`: the recipe is used, and the cell
  states ``bitwise`` or ``PSNR x dB`` (the worst compared image);
- else (or when torch.compile fails, or the batch runs out of memory) the recipe is refused: a compiled
  batch falls back to the same batch eager if that passes, else to eager batch 1; the cell says why.

The store key always records the recipe (:func:`quantfake.generate.request_key`), so a recipe's images never
pass for eager ones; a set whose eager batch-1 images are all in the store is reused as it is, unchecked.

Compile time (the first compiled call minus the next one) is recorded, and with the check it is charged to the
image set whose generation paid it: ``s_per_image_amortised`` = (generation + check + compile) / images made.
Written by hand: no library checks a generation recipe against its eager twin.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from quantfake.fidelity import psnr
from quantfake.generate import (
    ChunkOutput,
    GenerationRequest,
    GenerationResult,
    missing_images,
    pipeline_call,
    stored_manifest,
)
from quantfake.loading import LoadedPipeline, PipelineIdentity
from quantfake.measure.oom import free_cached_memory, is_oom
from quantfake.store import Store

log = logging.getLogger(__name__)

MIN_PSNR_DB = 40.0  # below this a recipe changes images visibly enough to count as another experiment
PROBE_IMAGES = 4  # eager batch-1 images compared per check, spread over the positions of the recipe's batch


def recipe_label(batch_size: int, compile: bool = False) -> str:
    """``batch 4 + compile``, ``batch 4``, ``batch 1 + compile`` or ``eager batch 1``."""
    if batch_size == 1 and not compile:
        return "eager batch 1"
    return f"batch {batch_size}" + (" + compile" if compile else "")


def probe_positions(batch_size: int, n: int = PROBE_IMAGES) -> list[int]:
    """Positions in the batch whose images are compared: first, last and evenly between (a batch's edges differ)."""
    return sorted({int(round(x)) for x in np.linspace(0, batch_size - 1, min(n, batch_size))})


@dataclass
class Attempt:
    """One recipe tried against eager batch 1."""

    recipe: str
    verdict: str  # "bitwise" | "psnr" | "refused"
    psnr_db: float | None = None  # worst compared image; None when bitwise or when it could not run
    seconds: float = 0.0  # the recipe's calls (the compiled one included)
    error: str | None = None
    compile_s: float | None = None  # the first compiled call's extra seconds (spent even when refused)


@dataclass
class RecipeCheck:
    """What one generator x precision's check found; ``ready`` is the accepted recipe's first chunk."""

    generator: str
    precision: str
    mode: str
    requested: tuple[int, bool]
    seeds: list[int]  # the recipe's first chunk
    compared: list[int]  # the seeds made again at eager batch 1
    eager_s_per_image: float
    attempts: list[Attempt] = field(default_factory=list)
    accepted: tuple[int, bool] | None = None  # (batch_size, compile) used; None: eager batch 1
    bitwise: bool = False
    compile_s: float | None = None  # compile seconds the check spent (a refused compile's included)
    seconds: float = 0.0  # the whole check, wall clock
    ready: ChunkOutput | None = field(default=None, repr=False)

    @property
    def statement(self) -> str:
        """``bitwise``, ``PSNR 47.2 dB``, or the refusal with its reason(s)."""
        accepted = [a for a in self.attempts if a.verdict != "refused"]
        if accepted:
            a = accepted[0]
            head = "bitwise" if a.verdict == "bitwise" else f"PSNR {a.psnr_db:.1f} dB"
            refused = self._refusals()
            return head + (f" with {a.recipe} (refused: {refused})" if refused else "")
        return f"refused: {self._refusals()}; eager batch 1 used"

    def _refusals(self) -> str:
        return "; ".join(f"{a.recipe}: {a.error or f'PSNR {a.psnr_db:.1f} dB < {MIN_PSNR_DB:g} dB'}"
                         for a in self.attempts if a.verdict == "refused")

    def record(self) -> dict[str, Any]:
        """JSON-able summary for run records and manifests."""
        return {"statement": self.statement, "generator": self.generator, "precision": self.precision,
                "mode": self.mode, "requested": recipe_label(*self.requested),
                "used": recipe_label(*(self.accepted or (1, False))), "bitwise": self.bitwise,
                "min_psnr_db": MIN_PSNR_DB, "seeds": self.seeds, "compared_seeds": self.compared,
                "eager_s_per_image": self.eager_s_per_image, "compile_s": self.compile_s,
                "seconds": self.seconds, "attempts": [dataclasses.asdict(a) for a in self.attempts]}


def check_recipe(loaded: LoadedPipeline, req: GenerationRequest,
                 init_images: list[Image.Image] | None) -> RecipeCheck:
    """Compare ``req``'s recipe (its first chunk) with eager batch 1 on the same seeds; decide what to use."""
    start = time.perf_counter()
    seeds = [req.seed_offset + i for i in range(req.batch_size)]
    compared = [seeds[i] for i in probe_positions(req.batch_size)]
    eager_req = dataclasses.replace(req, batch_size=1, compile=False)
    loaded.set_compiled(False)
    eager = [pipeline_call(loaded, eager_req, [s], init_images) for s in compared]
    check = RecipeCheck(loaded.generator.id, loaded.precision.id, req.mode, (req.batch_size, req.compile), seeds,
                        compared, sum(o.seconds for o in eager) / len(eager))
    reference = [o.images[0] for o in eager]
    candidates = [(req.batch_size, req.compile)]
    if req.compile and req.batch_size > 1:
        candidates.append((req.batch_size, False))  # compile refused: the batch alone may still pass
    for batch, compiled in candidates:
        cand = dataclasses.replace(req, batch_size=batch, compile=compiled)
        label = recipe_label(batch, compiled)
        t0 = time.perf_counter()
        try:
            outs, compile_s = _recipe_outputs(loaded, cand, seeds, init_images)
        except Exception as exc:  # noqa: BLE001 - a compiler failure or an OOM refuses the recipe, nothing else
            if not (compiled or is_oom(exc)):
                raise
            loaded.set_compiled(False)
            free_cached_memory()
            reason = "out of memory" if is_oom(exc) else "torch.compile failed"
            check.attempts.append(Attempt(label, "refused", seconds=time.perf_counter() - t0,
                                          error=f"{reason} ({_root_cause(exc)})"))
            continue
        worst = _worst_psnr(reference, [o.images[seeds.index(s)] for o in outs for s in compared])
        seconds = time.perf_counter() - t0
        if compile_s is not None:
            check.compile_s = (check.compile_s or 0.0) + compile_s
        if worst == float("inf") or worst >= MIN_PSNR_DB:
            bitwise = worst == float("inf")
            check.attempts.append(Attempt(label, "bitwise" if bitwise else "psnr", None if bitwise else worst,
                                          seconds, compile_s=compile_s))
            check.accepted, check.bitwise, check.ready = (batch, compiled), bitwise, outs[-1]
            break
        check.attempts.append(Attempt(label, "refused", worst, seconds, compile_s=compile_s))
    loaded.set_compiled(False)
    check.seconds = time.perf_counter() - start
    if check.accepted is None or check.accepted != check.requested:
        log.warning("%s-%s: speed recipe %s not used as asked: %s", check.generator, check.precision,
                    recipe_label(*check.requested), check.statement)
    return check


def _recipe_outputs(loaded: LoadedPipeline, req: GenerationRequest, seeds: list[int],
                    init_images: list[Image.Image] | None) -> tuple[list[ChunkOutput], float | None]:
    """The recipe's first chunk: once eager; compiled, twice (compiling, then steady) with the compile time."""
    loaded.set_compiled(req.compile)
    if not req.compile:
        return [pipeline_call(loaded, req, seeds, init_images)], None
    compile_s, outs = warm_compiled(loaded, req, seeds, init_images)
    return outs, compile_s


def warm_compiled(loaded: LoadedPipeline, req: GenerationRequest, seeds: list[int],
                  init_images: list[Image.Image] | None) -> tuple[float, list[ChunkOutput]]:
    """Two compiled calls of one chunk: the first compiles. Compile seconds = first minus second (the steady call)."""
    loaded.set_compiled(True)
    first = pipeline_call(loaded, req, seeds, init_images)
    second = pipeline_call(loaded, req, seeds, init_images)
    loaded.compile_s = max(0.0, first.seconds - second.seconds)
    return loaded.compile_s, [first, second]


def _root_cause(exc: BaseException) -> str:
    """``Type: first line`` of the innermost cause (dynamo wraps a backend's error in BackendCompilerFailed)."""
    seen: set[int] = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner = getattr(exc, "inner_exception", None) or exc.__cause__
        if not isinstance(inner, BaseException):
            break
        exc = inner
    first_line = (str(exc).strip().splitlines() or [""])[0][:200]
    return f"{type(exc).__name__}: {first_line}"


def _worst_psnr(reference: list[Image.Image], outputs: list[Image.Image]) -> float:
    """Lowest PSNR of ``outputs`` against ``reference`` (repeated per output call), inf when all are identical."""
    refs = reference * (len(outputs) // len(reference))
    return min(psnr(r, o) for r, o in zip(refs, outputs, strict=True))


@dataclass
class RecipePlan:
    """How one image set will be made: the request to generate, a ready chunk, and what the cell records."""

    request: GenerationRequest
    record: dict[str, Any]
    ready: ChunkOutput | None = None
    overhead_s: float = 0.0  # check / compile seconds this set pays beyond its images' compute
    manifest: dict[str, Any] | None = None  # what the set's manifest keeps (None: leave the stored one)

    def summary(self, res: GenerationResult) -> dict[str, Any]:
        """The cell's generation record: the recipe, its check, and seconds per image with and without overheads."""
        overhead = self.overhead_s - (res.ready_s or 0.0)  # the ready chunk's compute is generation time
        out = {"key": res.key, "generator": res.manifest["generator"], "precision": res.manifest["precision"],
               "mode": res.manifest["request"]["mode"], **self.record, "generated": res.generated,
               "reused": res.reused, "generation_s": res.seconds,
               "recipe_overhead_s": overhead if res.generated else 0.0}
        if res.generated:
            out["s_per_image"] = res.seconds / res.generated
            out["s_per_image_amortised"] = (res.seconds + overhead) / res.generated
        return out


class SessionRecipes:
    """A session's checked recipes (one check per generator x precision) and the overheads still to charge."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.checks: dict[tuple[str, str], RecipeCheck] = {}
        self._charged: set[tuple[str, str]] = set()

    def without_pipeline(self, ident: LoadedPipeline | PipelineIdentity, req: GenerationRequest) -> RecipePlan | None:
        """The plan when it needs no pipeline: eager batch 1 asked for, or a set the store already holds whole
        (its eager batch-1 images first, then the recipe's); None when a check must run on the pipeline."""
        requested = recipe_label(req.batch_size, req.compile)
        base = {"requested": requested}
        if req.eager_batch1:
            return RecipePlan(req, {**base, "used": requested, "pixels": requested,
                                    "check": "none needed: eager batch 1 is the reference"})
        for stored in (dataclasses.replace(req, batch_size=1, compile=False), req):
            if missing_images(ident, stored, self.store) == 0:  # nothing to make: no check, no compile
                before = stored_manifest(ident, stored, self.store).get("recipe") or {}
                pixels = recipe_label(stored.batch_size, stored.compile)
                check = "none needed: eager batch 1 is the reference" if stored.eager_batch1 else before.get(
                    "check", "unknown (no check in the manifest)")
                return RecipePlan(stored, {**base, "used": "none: every image was in the store", "pixels": pixels,
                                           "check": check, "check_detail": before.get("check_detail")})
        return None

    def plan(self, loaded: LoadedPipeline, req: GenerationRequest,
             init_images: list[Image.Image] | None) -> RecipePlan:
        """The request to generate ``req``'s set with: checked, reused from the store, or eager batch 1."""
        base = {"requested": recipe_label(req.batch_size, req.compile)}
        planned = self.without_pipeline(loaded, req)
        if planned is not None:
            return planned
        gp = (loaded.generator.id, loaded.precision.id)
        if gp not in self.checks:
            self.checks[gp] = check_recipe(loaded, req, init_images)
        check = self.checks[gp]
        batch, compiled = check.accepted or (1, False)
        use = dataclasses.replace(req, batch_size=batch, compile=compiled)
        ready, check.ready = check.ready, None  # one set can use it
        overhead, compile_s = 0.0, None
        if gp not in self._charged:
            self._charged.add(gp)
            overhead, compile_s = check.seconds, check.compile_s
        elif compiled and loaded.compile_s is None:  # a reloaded pipeline compiles again
            t0 = time.perf_counter()
            first_chunk = [use.seed_offset + i for i in range(batch)]
            compile_s, outs = warm_compiled(loaded, use, first_chunk, init_images)
            overhead, ready = time.perf_counter() - t0, outs[-1]
        record = {**base, "used": recipe_label(batch, compiled), "pixels": recipe_label(batch, compiled),
                  "check": check.statement, "check_detail": check.record(), "compile_s": compile_s}
        return RecipePlan(use, record, ready, overhead, manifest=record)
