"""Batched scoring with a persistent cache, so a rerun never scores an image twice.

Images are identified by the SHA-256 of their PNG bytes.  Pass ``image_sha256`` when you
have the files (hash of the file bytes); otherwise each image is PNG-encoded by PIL with
fixed settings and that is hashed (deterministic for identical pixels).  Do not mix the two
conventions within one cache.  The cache key is (image, detector id [+ input representation
when not RGB], detector precision (with the calibration set's hash for a calibrated quantized detector),
checkpoint SHA-256, preprocessing-policy SHA-256): anything that changes a score changes it.

A batch that runs out of memory is halved and retried (a full-resolution detector such as r50nodown holds
about 1 GiB per 1024 px image in each early layer: 16 such images asked for a 16 GiB tensor on an 80 GiB H100,
benchmarks/multigpu_h100), and the batch that fit is remembered for that detector, device and image size. What
counts as out of memory is the project's one test (:func:`quantfake.measure.oom.is_oom`); accelerate's
``find_executable_batch_size`` is not used: it restarts the whole call at a smaller batch, re-scoring what was done.

Scoring runs the module as it is: an ``fp32`` detector computes in fp32 on every device (as every upstream
test script does); mixed precision is the explicit detector precision ``fp16amp`` / ``bf16amp``.
"""

from __future__ import annotations

import sqlite3
import time
import warnings
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from quantfake.image_io import image_sha256
from quantfake.measure.oom import free_cached_memory, is_oom

from .loaded import LoadedDetector
from .preprocessing import ImageBatch, as_pil_list

CacheKey = tuple[str, str, str, str, str]


class ScoreCache:
    """sqlite3-backed score store; WAL + busy timeout so parallel workers can share one file."""

    def __init__(self, path: Path | str, timeout_s: float = 60.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.timeout_s = timeout_s
        with closing(self._connect()) as con, con:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute(
                "CREATE TABLE IF NOT EXISTS scores ("
                " image_sha256 TEXT NOT NULL, detector_id TEXT NOT NULL, precision TEXT NOT NULL,"
                " checkpoint_sha256 TEXT NOT NULL, preprocess_sha256 TEXT NOT NULL, score REAL,"
                " created_unix REAL NOT NULL,"
                " PRIMARY KEY (image_sha256, detector_id, precision, checkpoint_sha256, preprocess_sha256))"
            )

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=self.timeout_s)

    def get_many(self, keys: Sequence[CacheKey]) -> dict[CacheKey, float]:
        """Scores already stored for ``keys`` (missing keys are absent)."""
        found: dict[CacheKey, float] = {}
        with closing(self._connect()) as con:
            for key in keys:
                row = con.execute(
                    "SELECT score FROM scores WHERE image_sha256=? AND detector_id=? AND precision=?"
                    " AND checkpoint_sha256=? AND preprocess_sha256=?", key,
                ).fetchone()
                if row is not None:  # NULL stores a NaN score (sqlite cannot hold NaN)
                    found[key] = float("nan") if row[0] is None else float(row[0])
        return found

    def put_many(self, items: dict[CacheKey, float]) -> None:
        now = time.time()
        with closing(self._connect()) as con, con:
            con.executemany(
                "INSERT OR REPLACE INTO scores VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(*key, None if np.isnan(score) else float(score), now) for key, score in items.items()],
            )

    def __len__(self) -> int:
        with closing(self._connect()) as con:
            return int(con.execute("SELECT COUNT(*) FROM scores").fetchone()[0])


def cache_precision(detector: LoadedDetector) -> str:
    """The precision name the score cache records: a calibrated quantized detector's includes its calibration set."""
    name = detector.precision
    return f"{name}+calib:{detector.calibration_sha256[:16]}" if detector.calibration_sha256 else name


def score_images(
    detector: LoadedDetector,
    images: ImageBatch,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    cache: ScoreCache | None = None,
    progress: bool = True,
    image_sha256s: Sequence[str] | None = None,
) -> np.ndarray:
    """Scores (float64, higher = more fake) for ``images`` in order, computed at ``detector.precision``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    pil = as_pil_list(images)
    if image_sha256s is not None and len(image_sha256s) != len(pil):
        raise ValueError(f"got {len(image_sha256s)} image hashes for {len(pil)} images")
    device = torch.device(device)
    scores = np.full(len(pil), np.nan, dtype=np.float64)
    todo = list(range(len(pil)))
    keys: list[CacheKey] = []
    if cache is not None:
        hashes = list(image_sha256s) if image_sha256s is not None else [image_sha256(im) for im in pil]
        # the token is the id for RGB (keys unchanged) and ``<id>+<representation>`` otherwise
        prefix = (detector.token, cache_precision(detector), detector.checkpoint_sha256,
                  detector.preprocess.sha256())
        keys = [(h, *prefix) for h in hashes]
        hits = cache.get_many(keys)
        todo = [i for i, key in enumerate(keys) if key not in hits]
        for i, key in enumerate(keys):
            if key in hits:
                scores[i] = hits[key]
    fit_key = (detector.token, str(device), pil[todo[0]].size) if todo else None
    size = min(batch_size, _FITTING_BATCH.get(fit_key, batch_size))
    bar = tqdm(total=len(todo), desc=f"score {detector.spec.id}", unit="img", disable=not progress or not todo)
    with torch.inference_mode(), bar:
        start = 0
        while start < len(todo):
            idx = todo[start : start + size]
            try:
                out = _forward(detector, [pil[i] for i in idx], device)
            except (RuntimeError, MemoryError) as exc:
                if size == 1 or not is_oom(exc):
                    raise
                out = None  # the exception (and the activations its traceback holds) is freed on leaving here
            if out is None:
                warnings.warn(f"scoring {detector.spec.id} on {device}: out of memory at batch {size} of "
                              f"{pil[idx[0]].size[0]}x{pil[idx[0]].size[1]} px images; retrying at {size // 2}",
                              stacklevel=2)  # UserWarning: Python hides ResourceWarning by default
                size //= 2
                _FITTING_BATCH[fit_key] = size
                free_cached_memory()
                continue
            scores[idx] = out
            if cache is not None:
                cache.put_many({keys[i]: scores[i] for i in idx})
            bar.update(len(idx))
            start += len(idx)
    return scores


#: The largest batch known to fit per (detector token, device, first image's size), once one ran out of memory:
#: later calls in the process start there instead of running out of memory again in every cell.
_FITTING_BATCH: dict[object, int] = {}


def _forward(detector: LoadedDetector, images: list, device: torch.device) -> np.ndarray:
    """One batch's scores (float64) through the module as it is, inputs cast to its floating dtype."""
    module = detector.module
    batch = detector.preprocess(images).to(device)
    param = next(module.parameters(), None)
    if param is not None and param.is_floating_point():
        batch = batch.to(param.dtype)
    out = module(batch).float().reshape(len(images), -1)
    if out.shape[1] != 1:
        raise RuntimeError(f"{detector.spec.id} returned {out.shape[1]} values per image, expected 1")
    return out[:, 0].cpu().numpy().astype(np.float64)
