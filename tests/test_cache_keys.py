"""Cache keys hold every input that changes the output (issue 21): library versions in the generation key, the
calibration set in the score-cache key of a calibrated quantized detector."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from quantfake import environment
from quantfake.detectors import ScoreCache, get_detector, score_images
from quantfake.detectors.loaded import LoadedDetector
from quantfake.detectors.npr import NPR
from quantfake.detectors.scoring import cache_precision
from quantfake.generate import GenerationRequest, request_key
from quantfake.generators import GENERATORS
from quantfake.options import build_options
from quantfake.precisions import PRECISIONS
from quantfake.realdata import RealSet
from quantfake.session.detectors import DetectorSource
from quantfake.store import Store, png_bytes, sha256_bytes


def _loaded(precision: str) -> SimpleNamespace:
    """What :func:`request_key` reads of a loaded pipeline."""
    return SimpleNamespace(model_key="tiny:fluxs:abc", precision=PRECISIONS[precision], device="cpu",
                           components=["transformer"], generator=GENERATORS["fluxs"], memory_fit=None)


@pytest.mark.parametrize(("package", "precision", "changes"), [
    ("diffusers", "fp32", True), ("transformers", "fp32", True), ("torch", "bf16", True),
    ("bitsandbytes", "nf4", True), ("bitsandbytes", "fp32", False), ("torchao", "int8wo", True),
    ("scikit-learn", "fp32", False),
])
def test_generation_key_holds_the_library_versions(monkeypatch: pytest.MonkeyPatch, package: str, precision: str,
                                                   changes: bool) -> None:
    req = GenerationRequest()
    before = request_key(_loaded(precision), req)
    upgraded = {**environment.package_versions(), package: "99.0"}
    monkeypatch.setattr(environment, "package_versions", lambda: upgraded)
    assert (request_key(_loaded(precision), req) != before) is changes


def _npr() -> LoadedDetector:
    torch.manual_seed(0)
    spec = get_detector("npr")
    return LoadedDetector(spec=spec, profile="tiny", module=NPR(width=8, layers=(1, 1)).eval(),
                          preprocess=spec.tiny_preprocess, checkpoint_path=None, checkpoint_sha256="test-sha")


def test_quantized_scores_are_keyed_by_their_calibration_set(tmp_path: Path) -> None:
    base = _npr()
    images = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    cache = ScoreCache(tmp_path / "scores.sqlite")
    first = base.with_module(base.module, "int8", "a" * 64)
    other = base.with_module(torch.nn.Sequential(base.module, torch.nn.Tanh()), "int8", "b" * 64)
    assert cache_precision(first) != cache_precision(other)
    a = score_images(first, images, cache=cache, progress=False)
    b = score_images(other, images, cache=cache, progress=False)
    assert not np.allclose(a, b), "another calibration's detector must not read the first one's cached scores"
    assert len(cache) == 6


class _StoredFake:
    def __init__(self, seed: int) -> None:
        self.image = Image.fromarray(np.full((64, 64, 3), seed * 40, dtype=np.uint8))
        self.sha256 = sha256_bytes(png_bytes(self.image))

    def open(self) -> Image.Image:
        return self.image


def _session_calibration(tmp_path: Path, generators: str, base: LoadedDetector) -> str | None:
    """The calibration hash the detector source gives an int8 detector when ``generators`` lists the run's
    generators (the source built alone: stand-ins for the real images and the fake source)."""
    reals = [Image.fromarray(np.full((64, 64, 3), v, dtype=np.uint8)) for v in (10, 20)]
    calibration = RealSet(reals, ["r1", "r2"], [{}, {}])
    first = {"fluxs": 1, "sd3": 2}  # the first generator's train fakes calibrate the detector
    real_images = SimpleNamespace(pool=lambda name: calibration)
    fakes = SimpleNamespace(images=lambda g, p, m, role="eval": SimpleNamespace(images=[_StoredFake(first[g]),
                                                                                        _StoredFake(5)]))
    source = DetectorSource(build_options({"generators": generators, "store": str(tmp_path)}), Store(tmp_path), "cpu",
                            real_images, fakes)
    source.fp32 = lambda detector_id, representation="rgb": base
    det = source.at("npr", "int8")
    assert source.quantization[("npr", "rgb", "int8")]["precision"] == "int8"
    return cache_precision(det)


def test_the_session_keys_int8_scores_by_the_run_s_calibration_set(tmp_path: Path) -> None:
    base = _npr()
    one = _session_calibration(tmp_path, "fluxs,sd3", base)
    other = _session_calibration(tmp_path, "sd3,fluxs", base)
    assert one != other and one.startswith("int8+calib:")


def test_cpu_generation_keys_hold_the_thread_count() -> None:
    """On a CPU the same img2img request gave other bytes at 1 and 2 intra-op threads."""
    from quantfake.generate import GenerationRequest, request_key

    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = request_key(_loaded("fp32"), GenerationRequest(mode="img2img"))
        torch.set_num_threads(2)
        two = request_key(_loaded("fp32"), GenerationRequest(mode="img2img"))
    finally:
        torch.set_num_threads(previous)
    assert one != two
