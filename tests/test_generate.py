"""Paired, resumable generation: interrupted runs resume bitwise, manifests are complete, precisions pair."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from quantfake.generate import GenerationRequest, generate, request_key
from quantfake.loading import LoadedPipeline, load_pipeline
from quantfake.store import Store, sha256_bytes

MANIFEST_FIELDS = ("prompt", "seed", "generator", "precision", "mode", "steps", "guidance", "size", "versions",
                   "device", "seconds", "sha256", "model")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model_store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return Store(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def sd15_fp32(model_store: Store) -> LoadedPipeline:
    return load_pipeline("sd15", "fp32", "tiny", device="cpu", store=model_store)


@pytest.fixture(scope="module")
def sd15_bf16(model_store: Store) -> LoadedPipeline:
    return load_pipeline("sd15", "bf16", "tiny", device="cpu", store=model_store)


def _req(n_images: int = 8, batch_size: int = 4) -> GenerationRequest:
    return GenerationRequest(n_images=n_images, steps=2, size=64, batch_size=batch_size)


def test_resume_regenerates_only_missing_images_bitwise(sd15_fp32: LoadedPipeline, tmp_path: Path) -> None:
    store = Store(tmp_path)
    first = generate(sd15_fp32, _req(), store, progress=False)
    assert (first.generated, first.reused) == (8, 0)
    originals = {img.seed: img.path.read_bytes() for img in first.images}
    assert len(set(originals.values())) == 8, "every seed must give its own image"

    lost = (1, 2, 6)  # two in the first chunk, one in the second: both chunks must be rerun
    for seed in lost:
        (store.image_dir(first.key) / f"{seed}.png").unlink()
    resumed = generate(sd15_fp32, _req(), store, progress=False)
    assert (resumed.generated, resumed.reused) == (3, 5)
    assert resumed.key == first.key
    assert {img.seed: img.path.read_bytes() for img in resumed.images} == originals

    again = generate(sd15_fp32, _req(), store, progress=False)
    assert (again.generated, again.reused) == (0, 8)


def test_growing_a_request_keeps_existing_images(sd15_fp32: LoadedPipeline, tmp_path: Path) -> None:
    """n_images is not part of the key: asking for more extends the same folder and reuses the rest."""
    store = Store(tmp_path)
    small = generate(sd15_fp32, _req(n_images=2, batch_size=2), store, progress=False)
    big = generate(sd15_fp32, _req(n_images=4, batch_size=2), store, progress=False)
    assert big.key == small.key and (big.generated, big.reused) == (2, 2)
    assert [i.path.read_bytes() for i in big.images[:2]] == [i.path.read_bytes() for i in small.images]


def test_manifest_records_every_field(sd15_fp32: LoadedPipeline, tmp_path: Path) -> None:
    req = _req(n_images=2, batch_size=2)
    result = generate(sd15_fp32, req, Store(tmp_path), progress=False)
    for img in result.images:
        row = json.loads(img.path.with_suffix(".json").read_text())
        missing = [f for f in MANIFEST_FIELDS if f not in row]
        assert not missing, f"manifest lacks {missing}"
        assert row["seed"] == img.seed and row["prompt"] == req.prompt_for(img.seed) == img.prompt
        assert (row["generator"], row["precision"], row["mode"]) == ("sd15", "fp32", "txt2img")
        assert (row["steps"], row["guidance"], row["size"]) == (req.steps, req.guidance, req.size)
        assert row["device"] == "cpu" and row["seconds"] > 0
        assert row["versions"]["torch"] and row["versions"]["diffusers"]
        assert row["sha256"] == sha256_bytes(img.path.read_bytes()) == img.sha256
    request = json.loads((Path(result.images[0].path).parent / "request.json").read_text())
    assert request["key"] == result.key and request["request"]["n_images"] == 2


def test_precisions_are_paired(sd15_fp32: LoadedPipeline, sd15_bf16: LoadedPipeline, tmp_path: Path) -> None:
    store = Store(tmp_path)
    req = _req(n_images=4, batch_size=2)
    ref = generate(sd15_fp32, req, store, progress=False)
    half = generate(sd15_bf16, req, store, progress=False)
    assert ref.key != half.key and request_key(sd15_bf16, req) == half.key
    assert [i.seed for i in ref.images] == [i.seed for i in half.images] == req.seeds()
    assert [i.prompt for i in ref.images] == [i.prompt for i in half.images]
    rows = [[json.loads(i.path.with_suffix(".json").read_text()) for i in r.images] for r in (ref, half)]
    assert [(r["seed"], r["prompt"], r["batch"]) for r in rows[0]] == [(r["seed"], r["prompt"], r["batch"])
                                                                     for r in rows[1]]
    assert [r["precision"] for r in rows[1]] == ["bf16"] * 4


def test_img2img_without_init_images_fails(sd15_fp32: LoadedPipeline, tmp_path: Path) -> None:
    req = GenerationRequest(mode="img2img", n_images=1, steps=2, size=64, batch_size=1)
    with pytest.raises(ValueError, match="init images"):
        generate(sd15_fp32, req, Store(tmp_path), progress=False)
