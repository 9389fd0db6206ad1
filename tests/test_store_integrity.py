"""The store verifies what it reads: truncated or replaced entries are named and regenerated (issue 21)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from quantfake.generate import GenerationRequest, GenerationResult, generate
from quantfake.loading import LoadedPipeline, load_pipeline
from quantfake.store import Store, sha256_bytes

pytestmark = pytest.mark.usefixtures("one_torch_thread")
REQ = GenerationRequest(n_images=4, steps=2, size=64, batch_size=4)


@pytest.fixture(scope="module")
def fluxs(tmp_path_factory: pytest.TempPathFactory) -> LoadedPipeline:
    return load_pipeline("fluxs", "fp32", "tiny", device="cpu", store=Store(tmp_path_factory.mktemp("models")))


@pytest.fixture
def stored(fluxs: LoadedPipeline, tmp_path: Path) -> tuple[Store, GenerationResult, dict[int, bytes]]:
    store = Store(tmp_path)
    first = generate(fluxs, REQ, store, progress=False)
    return store, first, {im.seed: im.path.read_bytes() for im in first.images}


def _whole_and_true(result: GenerationResult) -> bool:
    """Every image decodes fully and its bytes hash to its manifest."""
    for im in result.images:
        manifest = json.loads(im.path.with_suffix(".json").read_text())
        if sha256_bytes(im.path.read_bytes()) != manifest["sha256"]:
            return False
        im.open().load()
    return True


def test_a_truncated_png_is_named_and_regenerated(fluxs, stored) -> None:
    store, first, originals = stored
    png = first.images[2].path
    png.write_bytes(originals[2][: len(originals[2]) // 2])
    again = generate(fluxs, REQ, store, progress=False)
    assert _whole_and_true(again) and again.images[2].path.read_bytes() == originals[2]
    (repair,) = again.repairs
    assert repair.path == str(png) and "truncated or replaced" in repair.reason
    assert Path(repair.quarantined_to, "2.png").read_bytes() == originals[2][: len(originals[2]) // 2]


def test_a_truncated_manifest_is_named_and_regenerated(fluxs, stored) -> None:
    store, first, originals = stored
    manifest = first.images[1].path.with_suffix(".json")
    manifest.write_text(manifest.read_text()[:40])
    again = generate(fluxs, REQ, store, progress=False)
    assert _whole_and_true(again) and again.images[1].path.read_bytes() == originals[1]
    (repair,) = again.repairs
    assert repair.path == str(manifest) and "manifest unreadable" in repair.reason


def test_a_replaced_image_is_not_scored_under_its_old_hash(fluxs, stored, tmp_path: Path) -> None:
    from quantfake.errors import CorruptStoreError

    store, first, originals = stored
    png = first.images[3].path
    Image.new("RGB", (64, 64), (0, 128, 0)).save(png)  # another picture, manifest (and score-cache key) unchanged
    with pytest.raises(CorruptStoreError, match=f"{png}: bytes changed"):
        first.images[3].open()  # the result read before the swap can no longer hand these pixels out
    with pytest.raises(CorruptStoreError, match=rf"(?s)1 corrupt store entry:.*{png}.*--no-repair"):
        generate(fluxs, REQ, store, progress=False, repair=False)
    again = generate(fluxs, REQ, store, progress=False)
    assert [r.path for r in again.repairs] == [str(png)]
    assert _whole_and_true(again) and png.read_bytes() == originals[3]
