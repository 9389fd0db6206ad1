"""The session parts, each built and used without the others (stand-ins where a part needs a neighbour)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from quantfake import fidelity
from quantfake.cells import CellSpec
from quantfake.options import build_options
from quantfake.session import fidelity_cell
from quantfake.session.engine import Session
from quantfake.session.fakes import TRAIN_SEED_OFFSET, FakeSource
from quantfake.session.inception import InceptionCache
from quantfake.session.reals import RealImages
from quantfake.store import Store


def test_the_fake_source_pairs_precisions_and_keeps_training_seeds_apart(tmp_path: Path) -> None:
    o = build_options({"generators": "sd3", "store": str(tmp_path), "n_images": "4", "n_train": "3"})
    fakes = FakeSource(o, Store(o.store), "cpu", RealImages(o, notices=[]), notices=[])
    evaluated, training = fakes.request("sd3", "txt2img"), fakes.request("sd3", "txt2img", role="train")
    assert evaluated.seeds() == [0, 1, 2, 3] and training.seeds() == [TRAIN_SEED_OFFSET + i for i in range(3)]
    assert not set(evaluated.seeds()) & set(training.seeds())
    img2img = fakes.request("sd3", "img2img")  # its init images come from the real pools, split on first use
    assert len(img2img.init_hashes) == 4 and set(img2img.init_hashes) <= set(fakes.reals.pool("init").ids)


def test_a_session_wires_one_store_device_and_notice_list(tmp_path: Path) -> None:
    session = Session.open(build_options({"generators": "fluxs", "store": str(tmp_path), "device": "cpu"}))
    assert session.fakes.store is session.detectors.store is session.store and session.device == "cpu"
    assert session.fakes.reals is session.detectors.reals is session.reals and session.inception is None
    session.reals.notices.append({"kind": "test", "message": "from the real images"})
    session.fakes.notices.append({"kind": "test", "message": "from the fake source"})
    assert [n["message"] for n in session.take_notices()] == ["from the real images", "from the fake source"]
    assert session.take_notices() == []


class _Network:
    """Stands in for the Inception network: 32 features (not 2048, to keep FID's matrix square root fast) from a
    fixed projection of the first pixels."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, images: list) -> np.ndarray:
        self.calls += 1
        pixels = np.stack([np.asarray(im, dtype=np.float64).reshape(-1)[:64] / 255 for im in images])
        return np.abs(pixels @ np.random.default_rng(0).normal(size=(64, 32)) / 8)  # pool3 features are >= 0


@pytest.fixture
def network(monkeypatch: pytest.MonkeyPatch) -> dict:
    loads: dict = {"count": 0, "network": _Network()}

    def from_dir(weights_dir, device="cpu"):
        loads["count"] += 1
        return loads["network"]

    monkeypatch.setattr(fidelity.InceptionFeatures, "from_dir", staticmethod(from_dir))
    return loads


def _image(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8))


def test_inception_loads_once_and_each_set_is_featurised_once(network: dict) -> None:
    cache = InceptionCache("weights", "cpu")
    reals = [_image(i) for i in range(4)]
    first = cache.features(reals, [f"r{i}" for i in range(4)])
    again = cache.features(reals, [f"r{i}" for i in range(4)])
    cache.features([_image(9), _image(10)], ["f1", "f2"])
    assert first is again and first.shape == (4, 32)
    assert network["count"] == 1 and network["network"].calls == 2


class _Stored:
    def __init__(self, tmp_path: Path, seed: int, shift: int) -> None:
        pixels = np.random.default_rng(seed).integers(0, 200, (16, 16, 3), dtype=np.uint8) + shift
        self.image, self.sha256 = Image.fromarray(pixels.astype(np.uint8)), f"{seed}-{shift}"
        self.path = self.latent_path = tmp_path / f"{seed}-{shift}.npy"
        np.save(self.latent_path, pixels.astype(np.float32))

    def open(self) -> Image.Image:
        return self.image


def _fidelity_session(tmp_path: Path, inception: InceptionCache | None) -> SimpleNamespace:
    """A session of stand-ins: fp32 and int8 sets of 6 images, 8 evaluation reals."""
    sets = {p: SimpleNamespace(key=f"key-{p}", images=[_Stored(tmp_path, i, shift) for i in range(6)], manifest={})
            for p, shift in (("fp32", 0), ("int8", 3))}
    fakes = SimpleNamespace(images=lambda g, p, m: sets[p], generation={})
    evaluation = SimpleNamespace(images=[_image(50 + i) for i in range(8)], ids=[f"r{i}" for i in range(8)])
    return SimpleNamespace(options=build_options({"precisions": "fp32,int8", "n_boot": "50"}), fakes=fakes,
                           reals=SimpleNamespace(pool=lambda name: evaluation), inception=inception)


def test_fidelity_cell_reports_fid_and_kid_as_metrics_with_a_small_sample_warning(tmp_path: Path, network: dict) -> None:
    cell = CellSpec("fidelity", "fluxs", "int8", "txt2img")
    without = fidelity_cell.measure_fidelity(_fidelity_session(tmp_path, None), cell)
    assert "fid" not in without.metrics and without.extra["fid_skipped"].startswith("pass --inception-weights")
    assert without.metrics["psnr"] > 20 and "psnr" in without.ci95
    result = fidelity_cell.measure_fidelity(_fidelity_session(tmp_path, InceptionCache("weights", "cpu")), cell)
    assert np.isfinite(result.metrics["fid"]) and result.metrics["fid"] > 0 and np.isfinite(result.metrics["kid"])
    assert "6 fakes" in result.extra["fid_warning"] and "2048" in result.extra["fid_warning"]
    assert {k: v for k, v in result.metrics.items() if k not in ("fid", "kid")} == without.metrics


def test_the_project_gate_holds_fid_and_kid_of_fidelity_cells() -> None:
    from quantfake.baselines import check_cell, load_config

    config = load_config(Path(__file__).parents[1] / "pyproject.toml")
    base = {"cell_id": "fluxs-int8-txt2img", "kind": "fidelity", "metrics": {"psnr": 30.0, "ssim": 0.9, "fid": 40.0,
                                                                             "kid": 0.01}}
    assert check_cell(base, base, config).ok
    worse = check_cell({**base, "metrics": {**base["metrics"], "fid": 40.0 + 2 * config.tolerance("fid")}}, base, config)
    assert not worse.ok and "fid" in worse.message
    no_inception = {**base, "metrics": {"psnr": 30.0, "ssim": 0.9}}  # the tiny CI run: FID applies to neither side
    assert check_cell(no_inception, no_inception, config).ok


def test_training_fakes_are_made_under_one_lock_so_xdist_workers_do_not_all_make_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each worker of `pytest -n N` trains the tiny detectors from the same training fakes; without the lock every
    worker generated all of them at once (two CPU workers, both in DetectorSource.training_set)."""
    from filelock import Timeout

    import quantfake.detectors.train as train

    session = Session.open(build_options({"generators": "sd3", "store": str(tmp_path), "device": "cpu"}))
    held = []

    def training_set() -> tuple[list, list, list, list]:
        other_worker = session.store.lock("training-set")
        with pytest.raises(Timeout):
            other_worker.acquire(timeout=0)
        held.append(True)
        return [], [], [], []

    monkeypatch.setattr(session.detectors, "training_set", training_set)
    monkeypatch.setattr(train, "train_detector", lambda *a, **k: SimpleNamespace(
        heldout_auc=0.5, cached=True, weights_sha256="0" * 64, n_train=0))
    session.detectors._train_tiny("npr", "rgb")
    assert held == [True]
    free = session.store.lock("training-set")
    free.acquire(timeout=0)  # released once the set is made
    free.release()


def test_a_set_whole_in_the_store_is_read_without_loading_its_pipeline(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bench over a filled store (or a worker reading the training fakes another made) loads no pipeline; a set
    with an entry missing or corrupt still goes through the pipeline, which makes or repairs it."""
    import quantfake.session.fakes as fakes_module

    o = build_options({"generators": "sd3", "precisions": "fp32", "store": str(tmp_path), "n_images": "3",
                       "device": "cpu"})
    first = FakeSource(o, Store(o.store), "cpu", RealImages(o, notices=[]), notices=[], progress=False)
    made = first.images("sd3", "fp32", "txt2img")
    assert made.generated == 3

    loads = []
    real_load = fakes_module.load_pipeline
    monkeypatch.setattr(fakes_module, "load_pipeline", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    again = FakeSource(o, Store(o.store), "cpu", RealImages(o, notices=[]), notices=[], progress=False)
    reused = again.images("sd3", "fp32", "txt2img")
    assert loads == [] and reused.key == made.key and reused.generated == 0 and reused.reused == 3
    assert [im.sha256 for im in reused.images] == [im.sha256 for im in made.images]
    record = again.generation[made.key]  # what the cell records about the set, as when it was loaded
    assert (record["generated"], record["reused"]) == (0, 3)
    assert record["check"] == first.generation[made.key]["check"] and record["pixels"] == first.generation[made.key]["pixels"]

    (made.images[1].path).write_bytes(b"not a png")  # a corrupt entry: the pipeline regenerates it
    repaired = FakeSource(o, Store(o.store), "cpu", RealImages(o, notices=[]), notices=[], progress=False)
    result = repaired.images("sd3", "fp32", "txt2img")
    assert len(loads) == 1 and result.generated == 1 and len(result.repairs) == 1
    assert [im.sha256 for im in result.images] == [im.sha256 for im in made.images]
