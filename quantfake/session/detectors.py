"""The session part that owns detectors: the fp32 detector (trained on the tiny world, or loaded), its
quantized copies with their calibration set, and the score cache.

Tiny detectors train on reference-precision fakes of every generator (training seeds) against the ``train``
reals; a quantized detector is calibrated on calibration reals plus training fakes, and when that set shapes its
scores (static int8) its hash joins the scores' cache key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from quantfake.detectors.loaded import LoadedDetector
from quantfake.detectors.registry import DEFAULT_REPRESENTATION, check_representation, detector_token
from quantfake.generate import GeneratedImage
from quantfake.generators import GENERATORS
from quantfake.options import BenchOptions
from quantfake.precisions import reference_precision
from quantfake.realdata import RealSet
from quantfake.session.fakes import FakeSource
from quantfake.session.reals import TRAIN_MODES, RealImages
from quantfake.store import Store, config_hash

#: Calibration reals and calibration fakes a quantized detector sees (16 of each).
N_CALIBRATION_IMAGES = 16
#: The precision whose fakes train tiny detectors.
TRAINING_PRECISION = "fp32"


class DetectorSource:
    """Detectors loaded once per session by (id, input representation, detector precision), and their scores."""

    def __init__(self, options: BenchOptions, store: Store, device: str, reals: RealImages, fakes: FakeSource) -> None:
        self.options, self.store, self.device, self.reals, self.fakes = options, store, device, reals, fakes
        self.trainings: dict[str, dict[str, Any]] = {}  # per detector token: held-out AUC, cached, weights hash
        self.quantization: dict[tuple[str, str, str], dict[str, Any]] = {}  # what quantize_detector reported
        self._detectors: dict[tuple[str, str, str], LoadedDetector] = {}
        self._score_cache: Any = None

    def fp32(self, detector_id: str, representation: str = DEFAULT_REPRESENTATION) -> LoadedDetector:
        """The fp32 detector on ``representation``: trained on the tiny world (cached) or loaded from
        ``--weights-dir`` (``<id>+<representation>.safetensors`` when not RGB)."""
        key = (detector_id, representation, "fp32")
        if key not in self._detectors:
            self._detectors[key] = self._load(detector_id, representation)
        return self._detectors[key]

    def _load(self, detector_id: str, representation: str) -> LoadedDetector:
        from quantfake.detectors import get_detector, load_detector

        get_detector(detector_id)
        check_representation(detector_id, representation)
        o = self.options
        if o.profile == "tiny":
            return load_detector(detector_id, "tiny", device=self.device, representation=representation,
                                 tiny_dir=self._train_tiny(detector_id, representation))
        if o.profile == "random" and not o.weights_dir:  # full size, seeded random, in memory
            return load_detector(detector_id, "random", device=self.device, representation=representation)
        # real weights, or the random ones `quantfake make-random-weights` saved in the upstream layout
        return load_detector(detector_id, "pretrained", weights_dir=o.weights_dir, device=self.device,
                             trust_checkpoints=o.trust_checkpoints, representation=representation,
                             weights=o.detector_weights.get(detector_id))

    def training_set(self) -> tuple[list[Image.Image], list[str], list[Image.Image], list[str]]:
        """Reals, their hashes, fakes, their hashes: reference-precision fakes of every generator and training
        mode (training seeds) against the ``train`` reals."""
        fakes, fake_ids = [], []
        for generator in GENERATORS:
            for mode in TRAIN_MODES:
                result = self.fakes.images(generator, TRAINING_PRECISION, mode, role="train")
                fakes += [im.open() for im in result.images]
                fake_ids += [im.sha256 for im in result.images]
        reals = self.reals.pool("train")
        return list(reals.images), list(reals.ids), fakes, fake_ids

    def _train_tiny(self, detector_id: str, representation: str) -> Path:
        from quantfake.detectors.train import TrainConfig, train_detector

        # one process of a -n N run makes the shared training fakes (recipe checks included) while the others wait,
        # then find them in the store: unlocked, every xdist worker made them all at once (issue 17's tiny grid)
        with self.store.lock("training-set"):
            reals, real_ids, fakes, fake_ids = self.training_set()
        out = self.store.detectors_dir / config_hash({"real": real_ids, "fake": fake_ids})
        token = detector_token(detector_id, representation)
        with self.store.lock(f"train-{token}"):
            res = train_detector(detector_id, reals, fakes, TrainConfig(profile="tiny", seed=self.options.seed), out,
                                 real_sha256s=real_ids, fake_sha256s=fake_ids, representation=representation)
        self.trainings[token] = {"heldout_auc": res.heldout_auc, "cached": res.cached,
                                 "weights_sha256": res.weights_sha256, "n_train": res.n_train}
        return out

    def at(self, detector_id: str, precision: str, representation: str = DEFAULT_REPRESENTATION) -> LoadedDetector:
        """The detector at a detector precision: fp32 itself, or a quantized copy calibrated on calibration reals
        and training fakes (what it reported is in :attr:`quantization`)."""
        if precision == "fp32":
            return self.fp32(detector_id, representation)
        key = (detector_id, representation, precision)
        if key not in self._detectors:
            self._detectors[key] = self._quantize(detector_id, precision, representation)
        return self._detectors[key]

    def _quantize(self, detector_id: str, precision: str, representation: str) -> LoadedDetector:
        from quantfake.detector_quant import quantize_detector, uses_calibration

        base = self.fp32(detector_id, representation)
        reals, fakes = self.calibration_set()
        batch = base.preprocess(list(reals.images[:N_CALIBRATION_IMAGES]) + [im.open() for im in fakes])
        module, report = quantize_detector(base.module, precision, calib_batches=[batch.to(self.device)],
                                           device=self.device)
        self.quantization[(detector_id, representation, precision)] = report
        # the calibration set shapes a static int8 detector's scores, so it joins their cache key
        calibration_sha = (config_hash([*reals.ids[:N_CALIBRATION_IMAGES], *(im.sha256 for im in fakes)], length=64)
                           if uses_calibration(precision) else None)
        return base.with_module(module, precision, calibration_sha)

    def calibration_set(self) -> tuple[RealSet, list[GeneratedImage]]:
        """Calibration reals and the first training fakes of the first generator at the reference precision."""
        o = self.options
        fakes = self.fakes.images(o.generators[0], reference_precision(o.precisions), "txt2img", role="train")
        return self.reals.pool("calibration"), list(fakes.images[:N_CALIBRATION_IMAGES])

    def scores(self, detector: LoadedDetector, images: list[Image.Image], hashes: list[str] | None) -> np.ndarray:
        """Detector scores (higher = more fake), cached in the store by image, detector and checkpoint."""
        from quantfake.detectors import ScoreCache, score_images

        if self._score_cache is None:
            self._score_cache = ScoreCache(self.store.scores_db)
        return score_images(detector, images, batch_size=64, device=self.device, cache=self._score_cache,
                            progress=False, image_sha256s=hashes)
