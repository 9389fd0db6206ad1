"""The session part that owns generated images: pipelines (a small cache), the seed policy, image sets.

Every precision of a generator gets the same :class:`~quantfake.generate.GenerationRequest` (prompts, seeds,
steps, size), which is what pairs them; training fakes use seeds of their own. Sets are generated once into the
store and reused; the speed recipe asked for (``--gen-batch-size``, ``--compile``) is used only as far as its
check against eager batch 1 allows (:mod:`quantfake.recipes`), and :attr:`FakeSource.generation` says what was
used and why.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from typing import Any

import torch

from quantfake.errors import MemoryBudgetError
from quantfake.generate import GenerationRequest, GenerationResult, generate, stored_set
from quantfake.generators import get_generator
from quantfake.loading import LoadedPipeline, PipelineIdentity, identify_pipeline, load_pipeline
from quantfake.measure.residency import register_holder, release_others
from quantfake.options import BenchOptions
from quantfake.recipes import SessionRecipes
from quantfake.session.reals import RealImages
from quantfake.store import Store

#: Seed offset of training fakes: they never share seeds with evaluated fakes.
TRAIN_SEED_OFFSET = 100_000
#: Seeds of evaluated fakes: image i uses ``first_seed + i + seed * EVAL_SEED_STRIDE``.
EVAL_SEED_STRIDE = 1_000_000
#: Images of a set (and of the evaluation reals) whose file format is compared.
N_FORMAT_CHECKED = 16


#: the session's name among the pipeline holders (:mod:`quantfake.measure.residency`)
HOLDER = "session fakes"


class FakeSource:
    """Pipelines loaded once (at most ``max_pipelines`` held: one on a GPU, to bound VRAM) and the image sets
    they make, by generator x precision x mode x role (``eval`` or ``train``)."""

    def __init__(self, options: BenchOptions, store: Store, device: str, reals: RealImages,
                 notices: list[dict[str, Any]], max_pipelines: int | None = None, progress: bool = True) -> None:
        self.options, self.store, self.device, self.reals, self.notices = options, store, device, reals, notices
        self.progress = progress  # per-image bars (quantfake generate --no-progress turns them off)
        self.max_pipelines = max_pipelines or (1 if device.startswith("cuda") else 4)
        self.recipes = SessionRecipes(store)
        self.generation: dict[str, dict[str, Any]] = {}  # per generation key: recipe, its check, s/image
        self._pipelines: OrderedDict[tuple[str, str], LoadedPipeline] = OrderedDict()
        self._identities: dict[tuple[str, str], PipelineIdentity] = {}
        self._refused: dict[tuple[str, str], str] = {}  # pipelines no memory fit could place (--vram-budget)
        self._sets: dict[tuple[str, str, str, str], GenerationResult] = {}
        self._format_warnings: dict[tuple[str, str, str], list[str]] = {}

    def pipeline(self, generator: str, precision: str) -> LoadedPipeline:
        """Load once per session; the least recently used pipeline goes when ``max_pipelines`` are held."""
        key = (generator, precision)
        if key in self._pipelines:
            self._pipelines.move_to_end(key)
            return self._pipelines[key]
        while len(self._pipelines) >= self.max_pipelines:
            self._evict_oldest()
        if self.device.startswith("cuda"):  # the efficiency cells' pipeline goes first: one full-size one at a time
            register_holder(HOLDER, self.release)
            release_others(HOLDER)
        loaded = self._load(generator, precision)
        self._pipelines[key] = loaded
        return loaded

    def release(self) -> None:
        """Drop every pipeline held, e.g. so that an efficiency cell's peak memory is its own pipeline's."""
        while self._pipelines:
            self._evict_oldest()

    def _evict_oldest(self) -> None:
        if self._pipelines.popitem(last=False)[1].has_compiled:
            torch._dynamo.reset()  # dynamo's caches may keep the evicted weights alive: drop them all
            for kept in self._pipelines.values():
                kept.compile_s = None  # their next compiled call compiles again, and is timed again
        if self.device.startswith("cuda"):
            from quantfake.measure.oom import free_cached_memory

            free_cached_memory()  # collects reference cycles too (offload hooks point back at their models)

    def identity(self, generator: str, precision: str) -> PipelineIdentity:
        """What names the pipeline's images in the store, found once per session without loading it."""
        key = (generator, precision)
        if key not in self._identities:
            o = self.options
            self._identities[key] = identify_pipeline(
                generator, precision, o.profile, device=self.device, store=self.store, model_root=o.model_root,
                quantize_text_encoders=o.quantize_text_encoders, gguf_dir=o.gguf_dir)
        return self._identities[key]

    def _load(self, generator: str, precision: str) -> LoadedPipeline:
        o = self.options
        where = dict(device=self.device, store=self.store, model_root=o.model_root,
                     quantize_text_encoders=o.quantize_text_encoders, gguf_dir=o.gguf_dir)
        if not o.vram_budget_gib:
            return load_pipeline(generator, precision, o.profile, identity=self.identity(generator, precision),
                                 **where)
        from quantfake.memory_placement import load_within_budget

        # the least costly recipe that fits, or MemoryBudgetError before any work; a refused pipeline is said
        # once per session, not built again per cell
        key = (generator, precision)
        if key in self._refused:
            raise MemoryBudgetError(self._refused[key])
        try:
            return load_within_budget(generator, precision, o.profile, budget_gib=o.vram_budget_gib,
                                      size=o.size or get_generator(generator).native_size,
                                      batch=o.batch_size, guidance=o.guidance, **where)
        except MemoryBudgetError as exc:
            self._refused[key] = str(exc)
            raise

    def request(self, generator: str, mode: str, role: str = "eval") -> GenerationRequest:
        """The request shared by every precision of ``generator`` (that is what pairs them): the seed policy."""
        spec, o = get_generator(generator), self.options
        img2img, train = mode == "img2img", role == "train"
        init = self.reals.pool("init") if img2img else None
        prompts = (o.img2img_prompts if img2img and o.img2img_prompts else None) or o.prompts
        steps = next(v for v in (o.img2img_steps if img2img else None, o.steps, spec.default_steps) if v is not None)
        return GenerationRequest(
            mode=mode, n_images=o.n_train if train else o.n_images,
            seed_offset=TRAIN_SEED_OFFSET if train else o.first_seed + o.seed * EVAL_SEED_STRIDE,
            steps=steps,
            guidance=o.guidance if o.guidance is not None else spec.default_guidance,
            size=spec.native_size if o.size is None else o.size, strength=o.strength, batch_size=o.batch_size,
            compile=o.compile, init_hashes=tuple(init.ids) if init else (),
            **({"prompts": prompts} if prompts else {}),
        )

    def images(self, generator: str, precision: str, mode: str, role: str = "eval",
               shard: tuple[int, int] = (0, 1)) -> GenerationResult:
        """Generate (or reuse from the store) the fakes of one generator x precision x mode x role.

        ``shard=(k, n)``: only that share of the set's chunks (``quantfake generate`` on several GPUs); not kept.
        """
        key = (generator, precision, mode, role)
        whole = shard == (0, 1)
        if whole and key in self._sets:
            return self._sets[key]
        if whole and not self.options.vram_budget_gib:  # a memory fit can change the key: only a load knows it
            reused = self._stored(generator, precision, mode, role)
            if reused is not None:
                self._sets[key] = reused
                return reused
        loaded = self.pipeline(generator, precision)
        request = self.request(generator, mode, role)
        if loaded.memory_fit is not None:  # the batch the memory fit allows (seeds, and so pairing, unchanged)
            request = dataclasses.replace(request, batch_size=loaded.memory_fit.recipe.batch)
        init = self.reals.pool("init").images if mode == "img2img" else None
        plan = self.recipes.plan(loaded, request, init)
        result = generate(loaded, plan.request, self.store, init_images=init, shard=shard, repair=self.options.repair,
                          ready=plan.ready, recipe=plan.manifest, progress=self.progress)
        self.generation[result.key] = plan.summary(result)
        self.notices += [{"kind": "store_repair", **r.as_record(),
                          "message": f"regenerated corrupt store entry {r.path}: {r.reason} (moved to {r.quarantined_to})"}
                         for r in result.repairs]
        if whole:
            self._sets[key] = result
        return result

    def _stored(self, generator: str, precision: str, mode: str, role: str) -> GenerationResult | None:
        """The set read from the store when it is whole there, without loading its pipeline (a bench over a
        filled store, or the training fakes another worker made, loads no pipeline); None otherwise."""
        ident = self.identity(generator, precision)
        plan = self.recipes.without_pipeline(ident, self.request(generator, mode, role))
        result = stored_set(ident, plan.request, self.store) if plan is not None else None
        if result is not None:
            self.generation[result.key] = plan.summary(result)
        return result

    def format_warnings(self, generator: str, precision: str, mode: str) -> list[str]:
        """How a set's files differ from the evaluation reals in format, size or JPEG history (a confound a
        detector may learn instead of the generator), checked on the first images, once per set."""
        key = (generator, precision, mode)
        if key not in self._format_warnings:
            from PIL import Image

            from quantfake.perturbations import format_confound, image_meta, real_set_meta

            fakes = self.images(generator, precision, mode).images[:N_FORMAT_CHECKED]
            self._format_warnings[key] = format_confound(real_set_meta(self.reals.pool("evaluation"), N_FORMAT_CHECKED),
                                                         [image_meta(Image.open(im.path)) for im in fakes])
        return list(self._format_warnings[key])

    def timings(self, result: GenerationResult) -> dict[str, Any]:
        """The set's generation seconds and what its speed recipe cost on top (check, compile)."""
        record = self.generation.get(result.key) or {}
        return {"generation_s": result.seconds, "generated": result.generated,
                "recipe_overhead_s": record.get("recipe_overhead_s", 0.0), "compile_s": record.get("compile_s")}


def memory_fits(**sets: GenerationResult) -> dict[str, Any]:
    """The memory fits (``--vram-budget``) the image sets were generated under, by key; none without a budget."""
    return {key: res.manifest["memory_fit"] for key, res in sets.items() if res.manifest.get("memory_fit")}


def sample_paths(result: GenerationResult, n: int = 4) -> list[str]:
    """The first images of a set, for the report's same-seed side-by-side grid."""
    return [str(im.path.resolve()) for im in result.images[:n]]
