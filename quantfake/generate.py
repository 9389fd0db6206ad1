"""Paired, seed-locked generation into the store.

Every precision of a generator gets the same prompts x seeds (same initial latents, scheduler, steps,
guidance, size, init images), so per-image comparisons across precisions are paired. Images are written in
fixed chunks aligned to the seed index: a chunk is regenerated whole (same batch composition, so bitwise the
same pixels) only when one of its images is missing, and each image is written atomically. An interrupted
run resumes; an identical rerun generates nothing.

Speed recipes (``batch_size`` > 1, ``compile``) keep per-image seeds (one CPU generator per image, so image i
draws the same initial noise whatever its batch) but may still move pixels: kernels differ with the batch shape,
inductor fuses differently. The store key therefore always records the recipe, and the images of a recipe never
pass for eager batch-1 images, even where :mod:`quantfake.recipes` found the two bitwise equal: its check covers
the compared seeds only, and on a CPU one batch gave some images bitwise equal and others one grey level off.
"""

from __future__ import annotations

import inspect
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from quantfake.environment import generation_versions, package_versions
from quantfake.integrity import StoreRepair, check_entries, entry_problem, read_verified_image
from quantfake.loading import LoadedPipeline, PipelineIdentity
from quantfake.precisions import required_packages
from quantfake.prompts import PROMPTS
from quantfake.store import Store, atomic_write_bytes, atomic_write_json, config_hash, png_bytes, sha256_bytes


@dataclass(frozen=True)
class GenerationRequest:
    """Everything that decides a set of images, apart from the weights and the precision."""

    mode: str = "txt2img"
    n_images: int = 16
    seed_offset: int = 0
    steps: int = 4
    guidance: float = 7.5
    size: int = 64
    strength: float = 0.6
    batch_size: int = 8
    prompts: tuple[str, ...] = PROMPTS
    init_hashes: tuple[str, ...] = ()  # img2img: SHA-256 of the init images (order matters)
    compile: bool = False  # the denoiser under torch.compile (a speed recipe, like batch_size > 1)

    def seeds(self) -> list[int]:
        return [self.seed_offset + i for i in range(self.n_images)]

    def prompt_for(self, seed: int) -> str:
        return self.prompts[seed % len(self.prompts)]

    @property
    def eager_batch1(self) -> bool:
        """Whether this is the reference recipe every other one is checked against."""
        return self.batch_size == 1 and not self.compile


@dataclass
class GeneratedImage:
    """One image in the store with its identity."""

    seed: int
    path: Path
    sha256: str
    prompt: str

    def open(self) -> Image.Image:
        """RGB pixels decoded from bytes that hash to ``sha256`` (what the score cache is keyed by)."""
        return read_verified_image(self.path, self.sha256)

    @property
    def latent_path(self) -> Path:
        return self.path.with_suffix(".latent.npy")


@dataclass
class GenerationResult:
    """The images of one request in seed order, and how many had to be made."""

    key: str
    images: list[GeneratedImage]
    generated: int
    reused: int
    seconds: float  # generating (a ready chunk's compute included), not reusing
    manifest: dict[str, Any] = field(default_factory=dict)
    repairs: list[StoreRepair] = field(default_factory=list)  # corrupt entries found, quarantined and regenerated
    ready_s: float = 0.0  # compute seconds of a ready chunk that was used (made before ``generate`` was called)


@dataclass
class ChunkOutput:
    """One pipeline call's images and final latents; ``key`` is the request's store key (where they belong)."""

    key: str
    seeds: list[int]
    images: list[Image.Image]
    latents: np.ndarray
    seconds: float


def request_key(loaded: LoadedPipeline | PipelineIdentity, req: GenerationRequest) -> str:
    """Store folder name: readable prefix for humans, hash of everything that determines the pixels."""
    ident = {"model": loaded.model_key, "precision": loaded.precision.id, "device": torch.device(loaded.device).type,  # cuda:0 and cuda:1 compute alike
             "text_encoders": loaded.components, **{k: v for k, v in asdict(req).items() if k != "n_images"}}
    ident["prompts"] = list(req.prompts)
    fit = loaded.memory_fit
    if fit is not None and fit.recipe.vae_mode:  # sliced / tiled decoding changes pixels; offload does not
        ident["vae_decode"] = fit.recipe.vae_mode
    ident["versions"] = generation_versions(required_packages(loaded.precision))
    if torch.device(loaded.device).type == "cpu":
        # CPU kernels split reductions by thread: img2img's VAE encode gave other bytes at 1 thread than at 2
        # (torchrun's OMP_NUM_THREADS=1 against a 2-thread bench), so a set made at another count is not reused
        ident["cpu_threads"] = torch.get_num_threads()
    if not req.compile:
        del ident["compile"]  # eager keys stay those made before compile was a field
    return f"{loaded.generator.id}-{loaded.precision.id}-{req.mode}-{config_hash(ident)}"


def _chunks(seeds: list[int], batch: int, offset: int) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for s in seeds:
        out.setdefault((s - offset) // batch, []).append(s)
    return out


def missing_images(loaded: LoadedPipeline | PipelineIdentity, req: GenerationRequest, store: Store) -> int:
    """How many images of ``req`` its store folder lacks (0: ``generate`` would make nothing)."""
    folder = store.image_dir(request_key(loaded, req))
    return sum(not (folder / f"{s}.png").exists() for s in req.seeds())


def generate(loaded: LoadedPipeline, req: GenerationRequest, store: Store, *,
             init_images: list[Image.Image] | None = None, progress: bool = True,
             shard: tuple[int, int] = (0, 1), repair: bool = True, ready: ChunkOutput | None = None,
             recipe: dict[str, Any] | None = None) -> GenerationResult:
    """Make (or reuse) the images of ``req`` with ``loaded``; return them in seed order.

    ``shard=(k, n)`` makes and returns only the chunks ``c`` with ``c % n == k``: ``quantfake generate`` spreads
    one heavy set over ``n`` GPUs that way. Chunks keep their composition, so the pixels are those of a whole run.
    Stored entries are verified first (:mod:`quantfake.integrity`): corrupt ones are quarantined and regenerated
    (listed in ``repairs``), or with ``repair=False`` raise :class:`~quantfake.errors.CorruptStoreError`.
    ``ready``: a chunk already computed for this request (the recipe check's), used instead of recomputing it.
    ``recipe``: how the recipe was checked, kept in the set's manifest (an earlier one stays when None).
    """
    if req.mode == "img2img" and not init_images:
        raise ValueError("img2img needs init images (the real set provides them)")
    index, count = shard
    if not 0 <= index < count:
        raise ValueError(f"shard {index} of {count}: the index must be in [0, {count})")
    key = request_key(loaded, req)
    folder = store.image_dir(key)
    chunks = {c: s for c, s in _chunks(req.seeds(), req.batch_size, req.seed_offset).items() if c % count == index}
    seeds = sorted(s for chunk_seeds in chunks.values() for s in chunk_seeds)
    made, start = 0, time.perf_counter()
    loaded.set_compiled(req.compile)
    precomputed = 0.0
    with store.lock(key if count == 1 else f"{key}.shard{index}of{count}"):
        repairs = check_entries(folder, seeds, store.quarantine_dir, repair=repair)
        todo = {c: s for c, s in chunks.items() if any(not (folder / f"{x}.png").exists() for x in s)}
        bar = tqdm(total=sum(len(s) for s in todo.values()), desc=f"generate {key[:40]}", unit="img",
                   disable=not progress or not todo, leave=False)
        # One writer thread: chunk k's PNG encoding and atomic writes (PIL and file I/O release the GIL) overlap
        # chunk k+1's denoising, so the store costs a run almost nothing beyond the last chunk's write.
        versions = package_versions()  # recorded in every image's manifest: read once, not per chunk
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="quantfake-writer") as writer:
            pending = []
            for chunk, chunk_seeds in sorted(todo.items()):
                full = [req.seed_offset + chunk * req.batch_size + i for i in range(req.batch_size)]
                if ready is not None and ready.key == key and ready.seeds == full:
                    out, precomputed = ready, ready.seconds
                else:
                    out = pipeline_call(loaded, req, full, init_images)
                pending.append(writer.submit(_write_chunk, folder, loaded, req, out, chunk_seeds, versions))
                bar.update(len(chunk_seeds))
            made += sum(f.result() for f in pending)  # re-raises a failed write
        bar.close()
    images = [_read_entry(folder, s) for s in seeds]
    manifest = {"key": key, "generator": loaded.generator.id, "precision": loaded.precision.id,
                "request": asdict(req), "model": loaded.model_key, "device": loaded.device,
                "memory_fit": loaded.memory_fit.record() if loaded.memory_fit is not None else None,
                "recipe": recipe or _read_manifest(folder).get("recipe")}
    atomic_write_json(folder / "request.json", manifest)
    return GenerationResult(key, images, made, len(seeds) - made, time.perf_counter() - start + precomputed,
                            manifest, repairs=repairs, ready_s=precomputed)


def stored_manifest(loaded: LoadedPipeline | PipelineIdentity, req: GenerationRequest, store: Store) -> dict[str, Any]:
    """The manifest of ``req``'s set as the store holds it ({} when none was written)."""
    return _read_manifest(store.image_dir(request_key(loaded, req)))


def stored_set(ident: PipelineIdentity | LoadedPipeline, req: GenerationRequest, store: Store) -> GenerationResult | None:
    """The whole set of ``req`` as the store holds it, read without its pipeline; None unless every entry is there
    and sound and the set's manifest was written (then :func:`generate`, with its repairs, is the way)."""
    key = request_key(ident, req)
    folder = store.image_dir(key)
    seeds = req.seeds()
    manifest = _read_manifest(folder)
    if not manifest or any(not (folder / f"{s}.png").exists() or entry_problem(folder, s) for s in seeds):
        return None
    return GenerationResult(key, [_read_entry(folder, s) for s in seeds], 0, len(seeds), 0.0, manifest)


def _read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / "request.json"
    return json.loads(path.read_text()) if path.exists() else {}


def pipeline_call(loaded: LoadedPipeline, req: GenerationRequest, seeds: list[int],
                  init_images: list[Image.Image] | None) -> ChunkOutput:
    """One pipeline call for ``seeds`` (one CPU generator per seed, so image i's noise ignores the batch)."""
    pipe = loaded.for_mode(req.mode)
    gens = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]
    kwargs: dict[str, Any] = dict(
        prompt=[req.prompt_for(s) for s in seeds], num_inference_steps=req.steps,
        guidance_scale=req.guidance, generator=gens, output_type="pil", **loaded.generator.call_kwargs,
    )
    if req.mode == "img2img":
        kwargs.update(image=[init_images[s % len(init_images)].resize((req.size, req.size))
                             for s in seeds], strength=req.strength)
    if req.mode == "txt2img" or "height" in inspect.signature(pipe.__call__).parameters:
        kwargs.update(height=req.size, width=req.size)  # Flux img2img would otherwise use its default size
    latents: dict[str, torch.Tensor] = {}

    def keep_latents(_pipe: Any, _step: int, _t: Any, cb: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        latents["last"] = cb["latents"]
        return cb

    start = time.perf_counter()
    with torch.inference_mode():
        out = pipe(**kwargs, callback_on_step_end=keep_latents, callback_on_step_end_tensor_inputs=["latents"])
    seconds = time.perf_counter() - start
    return ChunkOutput(request_key(loaded, req), list(seeds), list(out.images),
                       latents["last"].float().cpu().numpy(), seconds)


def _write_chunk(folder: Path, loaded: LoadedPipeline, req: GenerationRequest, out: ChunkOutput,
                 wanted: list[int], versions: dict[str, Any]) -> int:
    """Write the wanted, missing images of a chunk: latent, manifest, then the PNG (its presence = complete)."""
    device = loaded.device
    images, final, per_image = out.images, out.latents, out.seconds / len(out.seeds)
    written = 0
    for i, seed in enumerate(out.seeds):
        path = folder / f"{seed}.png"
        if seed not in wanted or path.exists():
            continue
        data = png_bytes(images[i])
        np_buf = _npy_bytes(final[i])
        atomic_write_bytes(path.with_suffix(".latent.npy"), np_buf)
        atomic_write_json(folder / f"{seed}.json", {
            "seed": seed, "prompt": req.prompt_for(seed), "generator": loaded.generator.id,
            "precision": loaded.precision.id, "mode": req.mode, "steps": req.steps, "guidance": req.guidance,
            "size": req.size, "strength": req.strength if req.mode == "img2img" else None,
            "init_sha256": (req.init_hashes[seed % len(req.init_hashes)] if req.init_hashes else None),
            "model": loaded.model_key, "device": device, "seconds": per_image, "batch": out.seeds,
            "compile": req.compile,
            "sha256": sha256_bytes(data), "latent_sha256": sha256_bytes(np_buf), "versions": versions,
        })
        atomic_write_bytes(path, data)  # the PNG last: its presence means the entry is complete
        written += 1
    return written


def _npy_bytes(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _read_entry(folder: Path, seed: int) -> GeneratedImage:
    meta = json.loads((folder / f"{seed}.json").read_text())
    return GeneratedImage(seed, folder / f"{seed}.png", meta["sha256"], meta["prompt"])
