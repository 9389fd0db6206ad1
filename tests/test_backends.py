"""optimum-quanto, GGUF and row-wise float8 precisions on tiny pipelines (CPU): each loads through its diffusers
path, is verified per component (module types, bytes), generates, and drifts from the fp32 reference by a PSNR
that is recorded in the test's output."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from PIL import Image

from quantfake.backends import gguf as qgguf
from quantfake.backends.load_gguf import load_gguf_pipeline
from quantfake.errors import MissingWeightsError, QuantizationNotApplied
from quantfake.fidelity import psnr
from quantfake.generate import GenerationRequest, generate
from quantfake.generators import get_generator
from quantfake.loading import LoadedPipeline, load_pipeline
from quantfake.precision_apply import verify
from quantfake.precisions import PRECISIONS, get_precision, unavailable_reason
from quantfake.profiles import TINY_SIZE
from quantfake.store import Store, sha256_file

GENERATOR = "flux"  # the cheapest tiny generator (grids.TINY_FP32_MS_PER_IMAGE)
QUANTO_IDS = ("quanto-int8", "quanto-int4", "quanto-fp8")
GGUF_IDS = ("q8_0", "q5_0", "q4_0")
MODULE_CLASS = {"quanto": "QLinear", "gguf": "GGUFLinear"}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return Store(tmp_path_factory.mktemp("backend_store"))


@pytest.fixture(scope="module")
def loaded(store: Store):
    cache: dict[str, LoadedPipeline] = {}

    def get(precision: str) -> LoadedPipeline:
        if precision not in cache:
            cache[precision] = load_pipeline(GENERATOR, precision, "tiny", device="cpu", store=store)
        return cache[precision]

    return get


def _images(lp: LoadedPipeline, store: Store) -> list[np.ndarray]:
    req = GenerationRequest(mode="txt2img", n_images=2, steps=2, size=TINY_SIZE, batch_size=2)
    return [np.asarray(Image.open(g.path).convert("RGB")) for g in generate(lp, req, store, progress=False).images]


@pytest.mark.parametrize("ggml_type", list(qgguf.GGUF_TYPES.values()))
def test_torch_port_is_byte_identical_to_the_gguf_package(ggml_type: str) -> None:
    torch.manual_seed(0)
    x = torch.randn(48, 256) * torch.rand(48, 1) * 4
    x[0, :32] = 0  # an all-zero block: scale 0
    x[1, :64] = torch.arange(64) / 2 - 16  # exact halves: the rounding rule shows
    ours = qgguf.quantize_blocks_torch(x, ggml_type)
    theirs = torch.from_numpy(gguf.quants.quantize(x.numpy(), qgguf.qtype(ggml_type)))
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("precision", [*QUANTO_IDS, *GGUF_IDS])
def test_tiny_cell_is_quantized_verified_and_drifts(precision: str, loaded, store: Store) -> None:
    spec = get_precision(precision)
    lp = loaded(precision)
    info = lp.verification[get_generator(GENERATOR).denoiser]
    bf16 = loaded("bf16").verification[get_generator(GENERATOR).denoiser]
    assert info["quantized_modules"] > 0
    assert info["module_classes"].get(MODULE_CLASS[spec.kind], 0) == info["quantized_modules"]
    assert info["weights_bytes"] < bf16["weights_bytes"], (info["weights_bytes"], bf16["weights_bytes"])
    if spec.kind == "gguf":
        assert info["gguf_types"] == {spec.gguf_type: info["quantized_modules"]}
        assert info["gguf_bits_per_weight"] == {spec.gguf_type: qgguf.expected_bits_per_weight(spec.gguf_type)}
        assert lp.weights_source["gguf_origin"] == "quantfake"
        assert lp.weights_source["gguf_sha256"] == sha256_file(Path(lp.weights_source["gguf_path"]))
    drift = float(np.mean([psnr(a, b) for a, b in zip(_images(loaded("fp32"), store), _images(lp, store), strict=True)]))
    print(f"{GENERATOR} {precision}: weights {info['weights_bytes']} B (bf16 {bf16['weights_bytes']} B), "
          f"PSNR vs fp32 {drift:.1f} dB")
    assert 10.0 < drift < float("inf"), drift  # changed by quantization, still an image of the same seeds


def test_fewer_bits_weigh_less(loaded) -> None:
    den = get_generator(GENERATOR).denoiser
    size = {p: loaded(p).verification[den]["weights_bytes"] for p in (*QUANTO_IDS, *GGUF_IDS)}
    assert size["quanto-int4"] < size["quanto-int8"] == size["quanto-fp8"]
    assert size["q4_0"] < size["q5_0"] < size["q8_0"]


def test_users_gguf_file_is_hashed_recorded_and_keys_the_images(tmp_path: Path, loaded, store: Store) -> None:
    made = Path(loaded("q4_0").weights_source["gguf_path"])
    (tmp_path / f"{GENERATOR}.gguf").write_bytes(made.read_bytes())
    lp = load_pipeline(GENERATOR, "gguf", "tiny", device="cpu", store=store, gguf_dir=tmp_path)
    sha = sha256_file(tmp_path / f"{GENERATOR}.gguf")
    assert lp.weights_source["gguf_origin"] == "user" and lp.weights_source["gguf_sha256"] == sha
    assert lp.weights_source["gguf_file_tensor_types"]["Q4_0"] > 0
    assert lp.model_key.endswith(f"+gguf:{sha[:16]}")
    with pytest.raises(QuantizationNotApplied, match="no quantized module"):
        verify(lp.pipe, get_precision("q8_0"), lp.components)


def test_missing_user_gguf_names_the_path(tmp_path: Path, store: Store) -> None:
    with pytest.raises(MissingWeightsError, match=f"{GENERATOR}.gguf"):
        load_pipeline(GENERATOR, "gguf", "tiny", device="cpu", store=store, gguf_dir=tmp_path)


def test_in_memory_paths_of_the_random_profile(monkeypatch: pytest.MonkeyPatch, loaded, store: Store) -> None:
    """The random profile's code (state dict into from_single_file; QLinear swap), on the tiny pipeline's weights."""
    import quantfake.fullsize as fullsize
    from quantfake.precision_apply import quantize_module_

    reference = loaded("fp32")
    monkeypatch.setattr(fullsize, "build_random_pipeline",
                        lambda generator, device, dtype: type(reference.pipe).from_pretrained(
                            reference.source, torch_dtype=dtype, local_files_only=True))
    gen, spec = get_generator(GENERATOR), get_precision("q5_0")
    pipe, source = load_gguf_pipeline(gen, spec, None, "cpu", store, "k", None)
    report = verify(pipe, spec, [gen.denoiser])
    assert source.path is None and source.tensor_types["Q5_0"] == report[gen.denoiser]["quantized_modules"] > 0
    module = quantize_module_(type(reference.denoiser).from_config(reference.denoiser.config), get_precision(
        "quanto-int4"))
    assert sum(type(m).__name__ == "QLinear" for m in module.modules()) > 0


def test_fp8rw_is_gpu_only_and_meant_compiled() -> None:
    spec = get_precision("fp8rw")
    assert spec.compiled and spec.torchao_granularity == "PerRow"
    assert "CUDA" in unavailable_reason(spec, "cpu")


def test_fp8rw_quantizes_an_all_zero_activation_row_to_zeros_not_nan() -> None:
    """SDXL zeroes an empty negative prompt's embeddings; a row-wise scale of 0 made 0/0 = NaN images on the H100."""
    pytest.importorskip("torchao")
    from torchao.quantization import quant_primitives as qp

    from quantfake.precision_apply import _torchao_config

    lb = _torchao_config(get_precision("fp8rw")).activation_value_lb
    assert lb == get_precision("fp8rw").torchao_activation_lb == 1e-12
    rows = torch.zeros(2, 16, dtype=torch.bfloat16)
    rows[1] = torch.linspace(-3, 3, 16)

    def quantized(bound: float | None) -> torch.Tensor:
        scale = qp._choose_scale_float8(rows, block_size=[1, 16], hp_value_lb=bound)
        return qp._quantize_affine_float8(rows, scale, torch.float8_e4m3fn).float() * scale.reshape(2, 1)

    assert torch.isnan(quantized(None)[0]).all(), "the failure the bound prevents (torchao's default)"
    bounded = quantized(lb)
    assert torch.equal(bounded[0], torch.zeros(16)) and torch.allclose(bounded[1], rows[1].float(), rtol=0.07)


def test_fp8rw_efficiency_cells_are_eager_and_compiled() -> None:
    from quantfake.session.efficiency.cells import efficiency_cells

    ids = [c.id for c in efficiency_cells(["flux"], ["bf16", "fp8rw"])]
    assert ids == ["effic-flux-bf16", "effic-flux-fp8rw", "effic-flux-fp8rw-compile"]


def test_every_new_id_is_registered() -> None:
    assert {*QUANTO_IDS, *GGUF_IDS, "gguf", "fp8rw"} <= set(PRECISIONS)
