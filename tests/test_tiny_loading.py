"""Tiny factory + loader: every generator round-trips through save_pretrained / load_pipeline with the real
classes, generates in both modes at every CPU precision, and quantization provably took effect."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import diffusers
import numpy as np
import pytest
import torch
from PIL import Image

from quantfake.errors import QuantizationNotApplied
from quantfake.generate import GenerationRequest, generate
from quantfake.generators import GENERATORS, get_generator
from quantfake.loading import LoadedPipeline, load_pipeline
from quantfake.precision_apply import check_components, verify
from quantfake.precisions import DEFAULT_PRECISIONS, get_precision, unavailable_reason
from quantfake.profiles import TINY_SIZE
from quantfake.store import Store
from quantfake.tiny import build_tiny_pipeline, ensure_tiny_pipeline

FAMILY_REPRESENTATIVES = ("sd15", "sdxl", "sd3", "flux")
CPU_PRECISIONS = tuple(p for p in DEFAULT_PRECISIONS if unavailable_reason(get_precision(p), "cpu") is None)
QUANTIZED_CLASS = {"int8": "Linear8bitLt", "nf4": "Linear4bit", "fp4": "Linear4bit"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return Store(tmp_path_factory.mktemp("tiny_store"))


@pytest.fixture(scope="module")
def loaded(store: Store) -> Callable[[str, str], LoadedPipeline]:
    """Load each (generator, precision) once per module: loading is the expensive part."""
    cache: dict[tuple[str, str], LoadedPipeline] = {}

    def get(generator_id: str, precision: str) -> LoadedPipeline:
        if (generator_id, precision) not in cache:
            cache[(generator_id, precision)] = load_pipeline(generator_id, precision, "tiny", device="cpu",
                                                             store=store)
        return cache[(generator_id, precision)]

    return get


def _init_image() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (TINY_SIZE, TINY_SIZE, 3), dtype=np.uint8))


def _request(mode: str) -> GenerationRequest:
    return GenerationRequest(mode=mode, n_images=2, steps=2, size=TINY_SIZE, batch_size=2)


def _sweep() -> list[tuple[str, str]]:
    cells = [(g, "fp32") for g in GENERATORS]
    cells += [(g, p) for g in FAMILY_REPRESENTATIVES for p in CPU_PRECISIONS if p != "fp32"]
    return cells


def test_default_precisions_all_run_on_cpu() -> None:
    assert CPU_PRECISIONS == DEFAULT_PRECISIONS, "bitsandbytes >= 0.45 should run every default precision on CPU"


@pytest.mark.parametrize("generator_id", list(GENERATORS))
def test_tiny_round_trip_keeps_real_classes(generator_id: str, loaded, store: Store) -> None:
    spec = get_generator(generator_id)
    result = loaded(generator_id, "fp32")
    folder = Path(result.source)
    assert (folder / "model_index.json").exists() and folder.parent == store.models_dir
    assert result.model_key == f"tiny:{folder.name}"
    assert type(result.pipe).__name__ == spec.txt2img_class
    assert type(result.denoiser).__name__ == spec.denoiser_class
    assert type(result.for_mode("img2img")).__name__ == spec.img2img_class
    for name in (spec.denoiser, "vae", *spec.text_encoders):
        assert isinstance(result.pipe.components[name], torch.nn.Module), name
    assert type(result.pipe.scheduler).__name__ == spec.scheduler_class
    assert ensure_tiny_pipeline(generator_id, store.models_dir) == folder, "second ensure must reuse the folder"


@pytest.mark.parametrize(("generator_id", "precision"), _sweep())
def test_generates_both_modes(generator_id: str, precision: str, loaded, tmp_path: Path) -> None:
    result = loaded(generator_id, precision)
    out_store = Store(tmp_path)
    for mode in ("txt2img", "img2img"):
        init = [_init_image()] if mode == "img2img" else None
        res = generate(result, _request(mode), out_store, init_images=init, progress=False)
        assert res.generated == 2 and res.reused == 0
        assert [img.seed for img in res.images] == [0, 1]
        for img in res.images:
            pixels = np.asarray(img.open())
            assert pixels.shape == (TINY_SIZE, TINY_SIZE, 3)
            latent = np.load(img.latent_path)
            assert np.isfinite(latent).all(), f"{generator_id}/{precision}/{mode}: non-finite latent"
        first, second = (np.asarray(i.open()) for i in res.images)
        assert not np.array_equal(first, second), "different seeds must give different images"


@pytest.mark.parametrize("generator_id", FAMILY_REPRESENTATIVES)
def test_img2img_output_has_requested_size(generator_id: str, loaded, tmp_path: Path) -> None:
    """img2img must honour ``req.size`` like txt2img does.

    Regression guard: without height/width, the SD3 / Flux img2img pipelines fall back to
    ``default_sample_size * vae_scale_factor`` and resize the init image to it (256 px for tiny Flux).
    A size other than the tiny default (64) is used so a coincidental match cannot hide it.
    """
    size = 32
    req = GenerationRequest(mode="img2img", n_images=1, steps=2, size=size, batch_size=1)
    res = generate(loaded(generator_id, "fp32"), req, Store(tmp_path), init_images=[_init_image()], progress=False)
    assert res.images[0].open().size == (size, size)


def test_img2img_shares_components_without_undoing_precision(loaded) -> None:
    result = loaded("sd15", "nf4")
    img2img = result.for_mode("img2img")
    assert img2img.unet is result.pipe.unet and img2img.vae is result.pipe.vae
    assert result.for_mode("img2img") is img2img


@pytest.mark.parametrize("generator_id", list(GENERATORS))
def test_build_is_deterministic(generator_id: str) -> None:
    first, second = build_tiny_pipeline(generator_id), build_tiny_pipeline(generator_id)
    modules = {k: v for k, v in first.components.items() if isinstance(v, torch.nn.Module)}
    assert modules
    for name, module in modules.items():
        a, b = module.state_dict(), second.components[name].state_dict()
        assert a.keys() == b.keys(), name
        assert all(torch.equal(a[k], b[k]) for k in a), f"{generator_id}.{name} differs between builds"


def test_different_seed_builds_different_weights() -> None:
    a = build_tiny_pipeline("sd3", seed=0).transformer.state_dict()
    b = build_tiny_pipeline("sd3", seed=1).transformer.state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_same_request_in_two_stores_is_bitwise_identical(tmp_path: Path) -> None:
    pngs = []
    for name in ("a", "b"):
        fresh = Store(tmp_path / name)
        result = load_pipeline("sd15", "fp32", "tiny", device="cpu", store=fresh)
        res = generate(result, _request("txt2img"), fresh, progress=False)
        pngs.append([img.path.read_bytes() for img in res.images])
    assert pngs[0] == pngs[1]


# ------------------------------------------------------------------------------------------------ quantization


@pytest.mark.parametrize("generator_id", FAMILY_REPRESENTATIVES)
@pytest.mark.parametrize("precision", ["int8", "nf4", "fp4", "fp8"])
def test_quantization_is_verified(generator_id: str, precision: str, loaded) -> None:
    spec = get_generator(generator_id)
    quant = loaded(generator_id, precision).verification[spec.denoiser]
    ref = loaded(generator_id, "fp32").verification[spec.denoiser]
    assert quant["quantized_modules"] > 0
    assert quant["class"] == spec.denoiser_class
    if precision == "fp8":
        assert quant["param_dtypes"].get("float8_e4m3fn", 0) > 0
    else:
        assert quant["module_classes"].get(QUANTIZED_CLASS[precision], 0) == quant["quantized_modules"]
        assert "Linear" not in quant["module_classes"], "every nn.Linear should have been replaced"
    assert quant["weights_bytes"] < ref["weights_bytes"]
    assert ref["quantized_modules"] == 0


def test_four_bit_is_smaller_than_eight_bit(loaded) -> None:
    sizes = {p: loaded("sdxl", p).verification["unet"]["weights_bytes"] for p in ("fp32", "bf16", "int8", "nf4")}
    assert sizes["nf4"] < sizes["int8"] < sizes["bf16"] < sizes["fp32"]


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_half_precision_leaves_no_float32_in_denoiser(precision: str, loaded) -> None:
    for generator_id in FAMILY_REPRESENTATIVES:
        spec = get_generator(generator_id)
        result = loaded(generator_id, precision)
        dtypes = result.verification[spec.denoiser]["param_dtypes"]
        assert "float32" not in dtypes, f"{generator_id}: {dtypes}"
        assert {p.dtype for p in result.denoiser.parameters()} == {get_precision(precision).torch_dtype}


def test_quantized_output_differs_from_fp32(loaded, tmp_path: Path) -> None:
    """The quantized arithmetic really runs: same request, different pixels."""
    pixels = {}
    for precision in ("fp32", "nf4"):
        res = generate(loaded("sd15", precision), _request("txt2img"), Store(tmp_path), progress=False)
        pixels[precision] = np.asarray(res.images[0].open())
    assert not np.array_equal(pixels["fp32"], pixels["nf4"])


def test_missing_component_raises_at_class_check() -> None:
    with pytest.raises(QuantizationNotApplied, match="text_encoder_3"):
        check_components(diffusers.StableDiffusionPipeline, ["text_encoder_3"])
    check_components(diffusers.StableDiffusion3Pipeline, ["text_encoder_3"])  # present there: no error


def test_missing_component_raises_at_verify(loaded) -> None:
    result = loaded("sd15", "fp32")
    with pytest.raises(QuantizationNotApplied, match="transformer"):
        verify(result.pipe, get_precision("nf4"), ["transformer"])


def test_unquantized_component_raises_at_verify(loaded) -> None:
    """Asking for nf4 on a pipeline that holds only plain Linear layers must not pass silently."""
    result = loaded("sd15", "fp32")
    with pytest.raises(QuantizationNotApplied, match="no quantized module"):
        verify(result.pipe, get_precision("nf4"), ["unet"])
    with pytest.raises(QuantizationNotApplied, match="wanted bfloat16"):
        verify(result.pipe, get_precision("bf16"), ["unet"])
