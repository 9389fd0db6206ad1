"""The session engine behind every bench cell: real pools, pipelines, fakes, detectors, scores.

It holds what a bench session loads once (pipelines, within a budget; detectors; generated image sets) and
computes one cell's numbers. The pytest layer (``fixtures/``) only asks it for cells and asserts.
"""

from __future__ import annotations

import dataclasses
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from quantfake.cells import CellSpec
from quantfake.detectors import get_detector
from quantfake.detectors.registry import (
    DEFAULT_REPRESENTATION,
    check_representation,
    detector_token,
)
from quantfake.errors import InsufficientRealImages, MemoryBudgetError, MissingWeightsError
from quantfake.generate import GenerationRequest, GenerationResult, generate
from quantfake.generators import GENERATORS, get_generator
from quantfake.loading import LoadedPipeline, load_pipeline, resolve_device
from quantfake.options import BenchOptions
from quantfake.precisions import reference_precision
from quantfake.prompts import prompts_sha256
from quantfake.realdata import RealSet
from quantfake.recipes import SessionRecipes
from quantfake.results import CellResult
from quantfake.store import Store, config_hash

TRAIN_SEED_OFFSET = 100_000  # training fakes never share seeds with evaluated fakes
TRAIN_MODES = ("txt2img", "img2img")
RANDOM_REAL_SIZE = 256


class World:
    """Session-wide caches and the computation of each cell."""

    def __init__(self, options: BenchOptions, max_pipelines: int | None = None) -> None:
        self.o = options
        self.store = Store(options.store)
        self.device = resolve_device(options.device)
        if options.vram_budget_gib:  # capped for everything the session does on the GPU, detectors included
            from quantfake.memory_placement import enforce_budget

            enforce_budget(options.vram_budget_gib, self.device)
        self.max_pipelines = max_pipelines or (1 if self.device.startswith("cuda") else 4)
        self._pipes: OrderedDict[tuple[str, str], LoadedPipeline] = OrderedDict()
        self._refused: dict[tuple[str, str], str] = {}  # pipelines no memory fit could place (--vram-budget)
        self._fakes: dict[tuple[str, str, str, str], GenerationResult] = {}
        self._detectors: dict[tuple[str, str, str], Any] = {}  # (detector id, representation, precision)
        self._pools: dict[str, RealSet] | None = None
        self._score_cache: Any = None
        self._format_checks: dict[tuple[str, str, str], list[str]] = {}
        self.samples: dict[str, dict[str, list[str]]] = {}
        self.trainings: dict[str, dict[str, Any]] = {}
        self.notices: list[dict[str, Any]] = []  # for the run record and the terminal summary (take_notices)
        self.real_shortfall: str | None = None  # "evaluation 4 of 16, ..." when a pool came out smaller than asked
        self.recipes = SessionRecipes(self.store)
        self.generation: dict[str, dict[str, Any]] = {}  # per generation key: recipe, its check, s/image

    # ---------------------------------------------------------------- real images
    def real_pools(self) -> dict[str, RealSet]:
        """Disjoint real sets: ``train`` (tiny detectors), ``calibration`` (thresholds), ``evaluation``, ``init``.

        Reals held out for threshold calibration are never evaluated; img2img init images are never evaluated
        either (a fake made from an evaluated real would pair the two). Pools are split by image identity;
        exclusions and short pools become notices, and pools below their floor raise
        :class:`~quantfake.errors.InsufficientRealImages` (:mod:`quantfake.real_pools`).
        """
        if self._pools is None:
            from quantfake.real_pools import split_real_pools

            o = self.o
            n_init = max(1, min(o.n_images, 16))
            n_train = o.n_train * len(GENERATORS) * len(TRAIN_MODES) if o.profile == "tiny" else 0
            sizes = {"evaluation": o.n_real, "calibration": o.n_calibration, "init": n_init, "train": n_train}
            if o.real_dir:
                from quantfake.realdata import load_real_dir

                full, source = load_real_dir(o.real_dir, size=o.size, policy="center_crop"), f"--real-dir {o.real_dir}"
            elif o.profile in ("tiny", "random"):
                from quantfake.realdata import tiny_real_set

                full, source = tiny_real_set(self.real_size, sum(sizes.values()), seed=o.seed), "shipped photographs"
            else:
                raise MissingWeightsError("real images", [], hint="pass --real-dir DIR with real photographs")
            split = split_real_pools(full, sizes, seed=o.seed, source=source)
            self.notices += split.notices
            if split.shortfall:
                raise InsufficientRealImages(split.shortfall)
            self._pools, self.real_shortfall = split.pools, next(
                (n["message"] for n in split.notices if n["kind"] == "real_pools_short"), None)
        return self._pools

    def take_notices(self) -> list[dict[str, Any]]:
        """Notices gathered since the last call (exclusions, short pools, store repairs), for the run record."""
        taken, self.notices = self.notices, []
        return taken

    @property
    def size(self) -> int:
        return self.o.size or 64

    @property
    def real_size(self) -> int:
        """Side of the shipped real patches: the tiny size, or 256 px for the full-size rehearsal (``random``):
        the packaged photographs are 300-600 px, so larger patches would be upsampled; detectors resize anyway."""
        return self.o.size or (RANDOM_REAL_SIZE if self.o.profile == "random" else 64)

    # ---------------------------------------------------------------- pipelines and fakes
    def pipeline(self, generator: str, precision: str) -> LoadedPipeline:
        """Load once per session; keep at most ``max_pipelines`` (one on a GPU, to bound VRAM)."""
        key = (generator, precision)
        if key in self._pipes:
            self._pipes.move_to_end(key)
            return self._pipes[key]
        while len(self._pipes) >= self.max_pipelines:
            compiled = self._pipes.popitem(last=False)[1].has_compiled
            if compiled:  # dynamo's caches may keep the evicted weights alive: drop them all
                torch._dynamo.reset()
                for kept in self._pipes.values():
                    kept.compile_s = None  # their next compiled call compiles again, and is timed again
            if self.device.startswith("cuda"):
                from quantfake.measure import free_cached_memory

                free_cached_memory()  # collects reference cycles too (offload hooks point back at their models)
        where = dict(device=self.device, store=self.store, model_root=self.o.model_root,
                     quantize_text_encoders=self.o.quantize_text_encoders, gguf_dir=self.o.gguf_dir)
        if self.o.vram_budget_gib:  # the least costly recipe that fits, or MemoryBudgetError before any work
            from quantfake.memory_placement import load_within_budget

            if key in self._refused:  # said once per session: a refused pipeline is not built again per cell
                raise MemoryBudgetError(self._refused[key])
            try:
                lp = load_within_budget(generator, precision, self.o.profile, budget_gib=self.o.vram_budget_gib,
                                        size=self.o.size or get_generator(generator).native_size,
                                        batch=self.o.batch_size, guidance=self.o.guidance, **where)
            except MemoryBudgetError as exc:
                self._refused[key] = str(exc)
                raise
        else:
            lp = load_pipeline(generator, precision, self.o.profile, **where)
        self._pipes[key] = lp
        return lp

    def request(self, generator: str, mode: str, role: str = "eval") -> GenerationRequest:
        """The generation request shared by every precision of ``generator`` (that is what pairs them)."""
        spec = get_generator(generator)
        o = self.o
        init = self.real_pools()["init"] if mode == "img2img" else None
        train = role == "train"
        img2img = mode == "img2img"
        prompts = (o.img2img_prompts if img2img and o.img2img_prompts else None) or o.prompts
        steps = next(v for v in (o.img2img_steps if img2img else None, o.steps, spec.default_steps) if v is not None)
        return GenerationRequest(
            mode=mode, n_images=o.n_train if train else o.n_images,
            seed_offset=TRAIN_SEED_OFFSET if train else o.first_seed + o.seed * 1_000_000,
            steps=steps,
            guidance=o.guidance if o.guidance is not None else spec.default_guidance,
            size=spec.native_size if o.size is None else o.size, strength=o.strength, batch_size=o.batch_size,
            compile=o.compile, init_hashes=tuple(init.ids) if init else (),
            **({"prompts": prompts} if prompts else {}),
        )

    def fakes(self, generator: str, precision: str, mode: str, role: str = "eval",
              shard: tuple[int, int] = (0, 1)) -> GenerationResult:
        """Generate (or reuse from the store) the fakes of one generator x precision x mode.

        The speed recipe asked for (``--gen-batch-size``, ``--compile``) is used only as far as its check against
        eager batch 1 allows (:mod:`quantfake.recipes`); :attr:`generation` records what was used and why.
        ``shard=(k, n)``: only that share of the set's chunks (``quantfake generate`` on several GPUs); not cached.
        """
        key = (generator, precision, mode, role)
        whole = shard == (0, 1)
        if whole and key in self._fakes:
            return self._fakes[key]
        loaded = self.pipeline(generator, precision)
        req = self.request(generator, mode, role)
        if loaded.memory_fit is not None:  # the batch the memory fit allows (seeds, and so pairing, unchanged)
            req = dataclasses.replace(req, batch_size=loaded.memory_fit.recipe.batch)
        init = self.real_pools()["init"].images if mode == "img2img" else None
        plan = self.recipes.plan(loaded, req, init)
        res = generate(loaded, plan.request, self.store, init_images=init, shard=shard, repair=self.o.repair,
                       ready=plan.ready, recipe=plan.manifest)
        self.generation[res.key] = plan.summary(res)
        self.notices += [{"kind": "store_repair", **r.as_record(),
                          "message": f"regenerated corrupt store entry {r.path}: {r.reason} (moved to {r.quarantined_to})"}
                         for r in res.repairs]
        if whole:
            self._fakes[key] = res
            if role == "eval":
                self.samples.setdefault(f"{generator}-{mode}", {})[precision] = [
                    str(im.path.resolve()) for im in res.images[:4]]
        return res

    # ---------------------------------------------------------------- detectors
    def detector(self, detector_id: str, representation: str = DEFAULT_REPRESENTATION) -> Any:
        """The fp32 detector on ``representation``: trained on the tiny world (cached) or loaded from
        ``--weights-dir`` (``<id>+<representation>.safetensors`` when not RGB)."""
        key = (detector_id, representation, "fp32")
        if key not in self._detectors:
            from quantfake.detectors import load_detector

            get_detector(detector_id)
            check_representation(detector_id, representation)
            if self.o.profile == "tiny":
                tiny_dir = self._train_tiny_detector(detector_id, representation)
                det = load_detector(detector_id, "tiny", device=self.device, tiny_dir=tiny_dir,
                                    representation=representation)
            elif self.o.profile == "random" and not self.o.weights_dir:  # full size, seeded random, in memory
                det = load_detector(detector_id, "random", device=self.device, representation=representation)
            else:  # real weights, or the random ones `quantfake make-random-weights` saved in the upstream layout
                det = load_detector(detector_id, "pretrained", weights_dir=self.o.weights_dir, device=self.device,
                                    trust_checkpoints=self.o.trust_checkpoints, representation=representation,
                                    weights=self.o.detector_weights.get(detector_id))
            self._detectors[key] = det
        return self._detectors[key]

    def training_set(self) -> tuple[list[Image.Image], list[str], list[Image.Image], list[str]]:
        """Reference-precision fakes of every generator and mode (training seeds) vs the train reals."""
        ref = "fp32"
        fakes, fake_ids = [], []
        for g in GENERATORS:
            for m in TRAIN_MODES:
                res = self.fakes(g, ref, m, role="train")
                fakes += [im.open() for im in res.images]
                fake_ids += [im.sha256 for im in res.images]
        reals = self.real_pools()["train"]
        return list(reals.images), list(reals.ids), fakes, fake_ids

    def _train_tiny_detector(self, detector_id: str, representation: str = DEFAULT_REPRESENTATION) -> Path:
        from quantfake.detectors.train import TrainConfig, train_detector

        reals, real_ids, fakes, fake_ids = self.training_set()
        out = self.store.detectors_dir / config_hash({"real": real_ids, "fake": fake_ids})
        token = detector_token(detector_id, representation)
        with self.store.lock(f"train-{token}"):
            res = train_detector(detector_id, reals, fakes, TrainConfig(profile="tiny", seed=self.o.seed), out,
                                 real_sha256s=real_ids, fake_sha256s=fake_ids, representation=representation)
        self.trainings[token] = {"heldout_auc": res.heldout_auc, "cached": res.cached,
                                       "weights_sha256": res.weights_sha256, "n_train": res.n_train}
        return out

    def quantized_detector(self, detector_id: str, precision: str,
                           representation: str = DEFAULT_REPRESENTATION) -> tuple[Any, dict[str, Any]]:
        """A copy of the fp32 detector at a detector precision, calibrated on calibration reals + train fakes."""
        key = (detector_id, representation, precision)
        if key not in self._detectors:
            from quantfake.detector_quant import quantize_detector, uses_calibration

            base = self.detector(detector_id, representation)
            calibration = self.real_pools()["calibration"]
            calib_fakes = self.fakes(self.o.generators[0], reference_precision(self.o.precisions), "txt2img",
                                     role="train").images[:16]
            calib_imgs = list(calibration.images[:16]) + [im.open() for im in calib_fakes]
            batch = base.preprocess(calib_imgs).to(self.device)
            qmodule, report = quantize_detector(base.module, precision, calib_batches=[batch], device=self.device)
            # the calibration set shapes a static int8 detector's scores, so it joins their cache key
            calib_sha = (config_hash([*calibration.ids[:16], *(im.sha256 for im in calib_fakes)], length=64)
                         if uses_calibration(precision) else None)
            self._detectors[key] = (base.with_module(qmodule, precision, calib_sha), report)
        return self._detectors[key]

    def _detector_latency(self, detector: Any, batch: int = 16) -> float:
        """Median forward time per image of ``detector`` on one batch of calibration reals (ms)."""
        from quantfake.measure import time_callable

        x = detector.preprocess(list(self.real_pools()["calibration"].images[:batch])).to(self.device)
        with torch.inference_mode():
            stats = time_callable(lambda: detector.module(x), warmup=1, repeats=5, device=self.device)
        return stats.median_ms / len(x)

    def scores(self, detector: Any, images: list[Image.Image], hashes: list[str] | None) -> np.ndarray:
        """Detector scores (higher = more fake), cached in the store by image, detector and checkpoint."""
        from quantfake.detectors import ScoreCache, score_images

        if self._score_cache is None:
            self._score_cache = ScoreCache(self.store.scores_db)
        return score_images(detector, images, batch_size=64, device=self.device, cache=self._score_cache,
                            progress=False, image_sha256s=hashes)

    # ---------------------------------------------------------------- cells
    def _scored_sets(self, cell: CellSpec, detector: Any, precision: str | None = None) -> dict[str, np.ndarray]:
        from quantfake.perturbations import apply_perturbation

        pools = self.real_pools()
        fake_res = self.fakes(cell.generator, precision or cell.precision, cell.mode)
        fakes = [im.open() for im in fake_res.images]
        fake_ids: list[str] | None = [im.sha256 for im in fake_res.images]
        reals, real_ids = list(pools["evaluation"].images), list(pools["evaluation"].ids)
        calib, calib_ids = list(pools["calibration"].images), list(pools["calibration"].ids)
        if self.o.match_format:
            from quantfake.perturbations import match_format

            fakes, reals, calib = ([match_format(i, "jpeg") for i in s] for s in (fakes, reals, calib))
            fake_ids = real_ids = calib_ids = None
        if cell.perturbation != "none":
            fakes, reals, calib = (apply_perturbation(cell.perturbation, s) for s in (fakes, reals, calib))
            fake_ids = real_ids = calib_ids = None  # new pixels, new hashes (computed by the scorer)
        return {"fake": self.scores(detector, fakes, fake_ids), "real": self.scores(detector, reals, real_ids),
                "calibration": self.scores(detector, calib, calib_ids)}

    def detection_cell(self, cell: CellSpec) -> CellResult:
        """Metrics with CIs for one generator x precision x mode x detector, plus the paired shift vs reference."""
        from quantfake.metrics import compute_metrics
        from quantfake.stats import bootstrap_metrics, paired_shift

        start = time.perf_counter()
        if cell.detector_precision == "fp32":
            det, qreport = self.detector(cell.detector, cell.representation), None
        else:
            det, qreport = self.quantized_detector(cell.detector, cell.detector_precision, cell.representation)
        s = self._scored_sets(cell, det)
        y = np.r_[np.zeros(len(s["real"])), np.ones(len(s["fake"]))]
        scores = np.r_[s["real"], s["fake"]]
        thr = det.spec.fixed_threshold
        metrics = compute_metrics(y, scores, fixed_threshold=thr, calibration_real_scores=s["calibration"])
        ci = bootstrap_metrics(y, scores, fixed_threshold=thr, calibration_real_scores=s["calibration"],
                               n_boot=self.o.n_boot, seed=self.o.seed) if self.o.n_boot else {}
        paired = None
        ref = reference_precision(self.o.precisions)
        thr_cal = metrics.get("threshold_calibrated", thr)
        if cell.kind == "detector_precision":
            ref_det = self.detector(cell.detector, cell.representation)  # fp32, same input representation
            r = self._scored_sets(cell, ref_det)
            from quantfake.stats import delong_paired_test

            dl = delong_paired_test(r["real"], r["fake"], s["real"], s["fake"])
            paired = {"reference_detector_precision": "fp32", "delta_auc": dl["delta"], "delta_auc_se": dl["se"],
                      "delta_auc_p_delong": dl["p"], "auc_ref": dl["auc_a"], "auc_q": dl["auc_b"]}
        elif cell.precision != ref:
            r = self._scored_sets(cell, det, precision=ref)
            paired = paired_shift(s["real"], r["fake"], s["fake"], thr_cal, seed=self.o.seed, n_boot=self.o.n_boot)
            paired["reference_precision"] = ref
        fake_res = self.fakes(cell.generator, cell.precision, cell.mode)
        extra = {"detector": det.describe(), "generation_key": fake_res.key,
                 **_memory_fits(memory_fit=fake_res),
                 "generation": self.generation.get(fake_res.key),
                 "prompts_sha256": prompts_sha256(tuple(fake_res.manifest["request"]["prompts"])),
                 "sample_paths": [str(im.path.resolve()) for im in fake_res.images[:4]],
                 "tiny_training": self.trainings.get(detector_token(cell.detector, cell.representation))}
        if qreport is not None:
            extra["detector_quantization"] = qreport
            extra["detector_ms_per_image"] = self._detector_latency(det)
            extra["reference_detector_ms_per_image"] = self._detector_latency(
                self.detector(cell.detector, cell.representation))
        extra["format_warnings"] = self._format_warnings_for(cell.generator, cell.precision, cell.mode)
        if self.real_shortfall:
            extra["real_shortfall"] = self.real_shortfall
        return CellResult(
            cell_id=cell.id, kind=cell.kind, params=cell.params(), metrics=metrics,
            ci95={k: [v.lo, v.hi] for k, v in ci.items()}, se={k: v.se for k, v in ci.items()},
            n={"real": int(len(s["real"])), "fake": int(len(s["fake"])), "calibration": int(len(s["calibration"]))},
            paired=paired, scores={"real": s["real"].tolist(), "fake": s["fake"].tolist()},
            timings={"cell_s": time.perf_counter() - start, **self._generation_timings(fake_res)},
            extra=extra,
        )

    def _generation_timings(self, res: GenerationResult) -> dict[str, Any]:
        """The set's generation seconds and what its speed recipe cost on top (check, compile)."""
        record = self.generation.get(res.key) or {}
        return {"generation_s": res.seconds, "generated": res.generated,
                "recipe_overhead_s": record.get("recipe_overhead_s", 0.0), "compile_s": record.get("compile_s")}

    def _format_warnings_for(self, generator: str, precision: str, mode: str) -> list[str]:
        """Once per image set, not once per detector."""
        key = (generator, precision, mode)
        if key not in self._format_checks:
            self._format_checks[key] = self._format_warnings(CellSpec("detection", generator, precision, mode))
        return list(self._format_checks[key])

    def _format_warnings(self, cell: CellSpec) -> list[str]:
        """Format-confound warnings (reals and fakes differing in format, size or JPEG history)."""
        from quantfake.perturbations import format_confound, image_meta

        if self.o.match_format:
            return []
        pools = self.real_pools()["evaluation"]
        real_meta = []
        for row, img in list(zip(pools.manifest, pools.images, strict=True))[:16]:
            meta = image_meta(img)
            meta["format"] = row.get("format") or ("PNG" if img.format is None else meta["format"])
            if row.get("is_jpeg") and meta["jpeg_quality"] is None:
                meta["jpeg_quality"] = "cut from a JPEG source"
            real_meta.append(meta)
        fakes = self.fakes(cell.generator, cell.precision, cell.mode)
        fake_meta = [image_meta(Image.open(im.path)) for im in fakes.images[:16]]
        return format_confound(real_meta, fake_meta)

    def fidelity_cell(self, cell: CellSpec) -> CellResult:
        """Paired drift of ``cell.precision`` against the reference precision on the same seeds."""
        from quantfake.fidelity import paired_drift

        start = time.perf_counter()
        ref = reference_precision(self.o.precisions)
        q, r = self.fakes(cell.generator, cell.precision, cell.mode), self.fakes(cell.generator, ref, cell.mode)
        drift = paired_drift([im.open() for im in r.images], [im.open() for im in q.images],
                             [np.load(im.latent_path) for im in r.images], [np.load(im.latent_path) for im in q.images])
        per_image = {"psnr": drift["psnr_db"], "ssim": drift["ssim"], "mad": drift["mad_255"],
                     "latent_rel_l2": drift["latent_rel_l2"], "latent_cos": drift["latent_cos"]}
        metrics, ci, se = {}, {}, {}
        rng = np.random.default_rng(self.o.seed)
        n_boot = self.o.n_boot  # 0: no CIs (the gate is then tolerance-only, and says so)
        for name, values in per_image.items():
            v = np.asarray(values, dtype=float)
            finite = v[np.isfinite(v)]
            metrics[name] = float(np.mean(finite)) if len(finite) else float("inf")
            if len(finite) > 1 and n_boot:
                boots = rng.choice(finite, size=(n_boot, len(finite))).mean(axis=1)
                ci[name] = [float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))]
                se[name] = float(boots.std(ddof=1))
        metrics["identical_fraction"] = float(np.mean(~np.isfinite(np.asarray(drift["psnr_db"], dtype=float))))
        extra: dict[str, Any] = {"reference_precision": ref, "generation_key": q.key,
                                 **_memory_fits(memory_fit=q, reference_memory_fit=r),
                                 "generation": self.generation.get(q.key),
                                 "reference_generation": self.generation.get(r.key),
                                 "sample_paths": [str(im.path.resolve()) for im in q.images[:4]], "per_image": {k: list(map(float, v))
                                                                           for k, v in per_image.items()}}
        extra.update(self._distribution_metrics(r, q))
        return CellResult(cell_id=cell.id, kind="fidelity", params=cell.params(), metrics=metrics, ci95=ci, se=se,
                          n={"fake": len(q.images)}, timings={"cell_s": time.perf_counter() - start}, extra=extra)

    def _distribution_metrics(self, ref: GenerationResult, q: GenerationResult) -> dict[str, Any]:
        """FID / KID vs the real set and vs the reference precision, when Inception weights are provided."""
        if not self.o.inception_weights:
            return {"fid": "skipped: pass --inception-weights DIR (pt_inception-2015-12-05-6726825d.pth)"}
        from quantfake.fidelity import InceptionFeatures, fid_from_features, kid_from_features

        feats = InceptionFeatures.from_dir(self.o.inception_weights, device=self.device)
        fq = feats([im.open() for im in q.images])
        fr = feats([im.open() for im in ref.images])
        freal = feats(list(self.real_pools()["evaluation"].images))
        k = min(len(fq), len(freal), 1000)
        return {"fid_vs_real": fid_from_features(freal, fq), "fid_vs_reference": fid_from_features(fr, fq),
                "kid_vs_real": kid_from_features(freal, fq, subset_size=k)[0]}


def _memory_fits(**sets: GenerationResult) -> dict[str, Any]:
    """The memory fits (``--vram-budget``) the image sets were generated under, by key; none without a budget."""
    return {key: res.manifest["memory_fit"] for key, res in sets.items() if res.manifest.get("memory_fit")}
