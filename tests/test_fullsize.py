"""Full-size random pipelines: real architectures give the published sizes (on ``meta``, no memory), and the
saved-model-root -> ``pretrained`` loader path works end to end (shrunken configs through the same builder)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from quantfake import fullsize
from quantfake.fullsize import (
    MARKER_FILE,
    PipelineConfigs,
    build_random_pipeline,
    ensure_random_model_root,
    full_size_configs,
    random_model_key,
)
from quantfake.generators import GENERATORS, VAE_CONFIGS, get_generator, text_encoder_parts, vae_config_name
from quantfake.loading import load_pipeline
from quantfake.precisions import get_precision, unavailable_reason

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: Published parameter counts (model cards / papers); the builder must land within 2 %.
#: SD3-medium: "2B" on its card; diffusers' SD3Transformer2DModel of the hub config has 2.028e9.
PUBLISHED = {
    ("sd15", "unet"): 0.86e9, ("sd15", "text_encoder"): 0.123e9, ("sd15", "vae"): 83.7e6,
    ("sdxl", "unet"): 2.57e9, ("sdxl", "text_encoder"): 0.123e9, ("sdxl", "text_encoder_2"): 0.69e9,
    ("sdxl", "vae"): 83.7e6,
    ("sd3", "transformer"): 2.03e9, ("sd3", "text_encoder_2"): 0.69e9, ("sd3", "text_encoder_3"): 4.76e9,
    ("sd3", "vae"): 83.8e6,
    ("flux", "transformer"): 11.9e9, ("flux", "text_encoder"): 0.123e9, ("flux", "text_encoder_2"): 4.76e9,
    ("flux", "vae"): 83.8e6,
}
T5_LENGTHS = {"sd3": 256, "sd35": 256, "sd35l": 256, "flux": 512, "fluxs": 256}


def _counts(pipe) -> dict[str, int]:
    return {k: sum(p.numel() for p in v.parameters()) for k, v in pipe.components.items()
            if isinstance(v, torch.nn.Module)}


def test_registry_covers_every_generator_and_needs_no_torch() -> None:
    for spec in GENERATORS.values():
        assert tuple(text_encoder_parts(spec)) == spec.text_encoders
        assert vae_config_name(spec) in VAE_CONFIGS
    code = "import sys, quantfake.generators as g; g.tokenizer_max_lengths(g.GENERATORS['flux']); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.fixture(scope="module")
def meta_pipes() -> dict[str, object]:
    return {g: build_random_pipeline(g, "meta") for g in GENERATORS}


@pytest.mark.parametrize("generator", list(GENERATORS))
def test_every_generator_builds_whole_on_meta(generator: str, meta_pipes: dict) -> None:
    spec = get_generator(generator)
    pipe = meta_pipes[generator]
    assert type(pipe).__name__ == spec.txt2img_class
    params = list(pipe.components[spec.denoiser].parameters())
    assert params[0].device.type == "meta" and params[0].dtype == torch.bfloat16
    for enc in spec.text_encoders:
        assert _counts(pipe)[enc] > 1e8, enc  # full-size, never the tiny ones
        tok = pipe.components[enc.replace("text_encoder", "tokenizer")]
        want = T5_LENGTHS[generator] if type(pipe.components[enc]).__name__.startswith("T5") else 77
        assert tok.model_max_length == want
        assert tok("a photo").input_ids  # the local tokenizer tokenizes
    assert pipe.vae.config.latent_channels == (4 if spec.family in ("sd", "sdxl") else 16)


@pytest.mark.parametrize(("generator", "component"), list(PUBLISHED))
def test_parameter_counts_match_published_sizes(generator: str, component: str, meta_pipes: dict) -> None:
    n = _counts(meta_pipes[generator])[component]
    assert n == pytest.approx(PUBLISHED[(generator, component)], rel=0.02), f"{generator}.{component}: {n:.4g}"


def test_vae_scaling_and_shift_factors(meta_pipes: dict) -> None:
    got = {g: (meta_pipes[g].vae.config.scaling_factor, meta_pipes[g].vae.config.shift_factor)
           for g in ("sd15", "sdxl", "sd3", "flux")}
    assert got == {"sd15": (0.18215, None), "sdxl": (0.13025, None), "sd3": (1.5305, 0.0609),
                   "flux": (0.3611, 0.1159)}


def test_random_profile_loads_whole_verified_pipelines_on_meta() -> None:
    for generator in ("sd21", "sd3", "flux"):
        lp = load_pipeline(generator, "bf16", "random", device="meta")
        assert lp.model_key == random_model_key(generator, "meta")
        assert lp.model_key.startswith(f"random:{generator}:")
        assert lp.verification[lp.generator.denoiser]["param_dtypes"] == {"bfloat16": _counts(lp.pipe)[lp.generator.denoiser]}
        assert set(lp.generator.text_encoders) <= set(lp.verification)
    assert random_model_key("sd3", "cpu") != random_model_key("sd3", "cuda")  # different RNG streams


# ------------------------------------------------------------------ shrunken configs, same code path


def _shrink(generator: str) -> PipelineConfigs:
    """The real configs with every width cut to toy size; everything else (classes, keys, code path) kept."""
    real = full_size_configs(generator)
    encoders: dict[str, tuple[str, dict]] = {}
    for comp, (cls, cfg) in real.text_encoders.items():
        small = (dict(d_model=32, d_ff=37, num_layers=2, num_heads=4, d_kv=8) if cls.startswith("T5") else
                 dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                      projection_dim=32))
        encoders[comp] = (cls, {**cfg, **small})
    vae = {**real.vae, "block_out_channels": (32,) * 4, "layers_per_block": 1, "sample_size": 64}
    spec = get_generator(generator)
    if spec.family == "sd3":
        den = {**real.denoiser, "sample_size": 8, "num_layers": 2, "attention_head_dim": 8, "num_attention_heads": 4,
               "joint_attention_dim": 32, "caption_projection_dim": 32, "pooled_projection_dim": 64,
               "pos_embed_max_size": 16}
    elif spec.family == "flux":
        den = {**real.denoiser, "num_layers": 1, "num_single_layers": 1, "attention_head_dim": 16,
               "num_attention_heads": 2, "joint_attention_dim": 32, "pooled_projection_dim": 32,
               "axes_dims_rope": (4, 6, 6)}
    else:  # UNet families: same block types, toy widths; SDXL conditions on both CLIPs (32 + 32)
        n = len(real.denoiser["block_out_channels"])
        xl = spec.family == "sdxl"
        den = {**real.denoiser, "sample_size": 8, "layers_per_block": 1, "block_out_channels": (32, 64, 64, 64)[:n],
               "cross_attention_dim": 64 if xl else 32, "attention_head_dim": 8}
        if xl:
            den.update(transformer_layers_per_block=(1, 1, 2), addition_time_embed_dim=8,
                       projection_class_embeddings_input_dim=6 * 8 + 32)
    return dataclasses.replace(real, denoiser=den, text_encoders=encoders, vae=vae)


def _image(lp, generator: str) -> np.ndarray:
    kwargs = dict(get_generator(generator).call_kwargs)
    out = lp.pipe(prompt="a photo of a cat", num_inference_steps=2, height=64, width=64, output_type="np",
                  generator=torch.Generator().manual_seed(0), **kwargs)
    return out.images


def test_saved_random_root_loads_through_the_pretrained_loader(tmp_path: Path) -> None:
    small = _shrink("sd3")
    spec = get_generator("sd3")
    folder = ensure_random_model_root("sd3", tmp_path, "cpu", configs=small)
    assert folder == tmp_path / spec.hub_id and (folder / "model_index.json").exists()
    assert list((folder / "transformer").glob("*.safetensors"))
    assert json.loads((folder / "transformer" / "config.json").read_text())["num_layers"] == 2
    assert json.loads((folder / MARKER_FILE).read_text())["model_key"] == random_model_key("sd3", "cpu", small)
    stamp = (folder / "model_index.json").stat().st_mtime_ns
    assert ensure_random_model_root("sd3", tmp_path, "cpu", configs=small) == folder  # made once
    assert (folder / "model_index.json").stat().st_mtime_ns == stamp
    with pytest.raises(FileExistsError, match="another|not"):
        ensure_random_model_root("sd3", tmp_path, "cpu", configs=_shrink("sd3"), seed=1)

    lp = load_pipeline("sd3", "bf16", "pretrained", device="cpu", model_root=tmp_path)
    assert lp.model_key == random_model_key("sd3", "cpu", small)  # never mistaken for real weights
    assert lp.pipe.tokenizer_3.model_max_length == 256 and lp.pipe.tokenizer.model_max_length == 77
    assert lp.pipe.vae.config.shift_factor == pytest.approx(0.0609)
    # the saved root holds exactly the weights the in-memory builder draws (same seed, same device type)
    mem = build_random_pipeline("sd3", "cpu", configs=small)
    for name in ("transformer", "text_encoder_3", "vae"):
        saved = getattr(lp.pipe, name).state_dict()
        for key, value in getattr(mem, name).state_dict().items():
            assert torch.equal(saved[key].to(value.dtype), value), f"{name}.{key}"
    images = _image(lp, "sd3")
    assert images.shape == (1, 64, 64, 3) and np.isfinite(images).all()

    if unavailable_reason(get_precision("nf4"), "cpu") is None:
        q = load_pipeline("sd3", "nf4", "pretrained", device="cpu", model_root=tmp_path)
        assert q.verification["transformer"]["quantized_modules"] > 0
        assert "Linear4bit" in q.verification["transformer"]["module_classes"]


def test_existing_real_weights_are_never_overwritten(tmp_path: Path) -> None:
    folder = tmp_path / get_generator("sd3").hub_id
    folder.mkdir(parents=True)
    (folder / "model_index.json").write_text("{}")
    with pytest.raises(FileExistsError, match="did not make"):
        ensure_random_model_root("sd3", tmp_path, "cpu", configs=_shrink("sd3"))


@pytest.mark.parametrize(("generator", "precision"), [("flux", "bf16"), ("flux", "nf4"), ("sdxl", "nf4"),
                                                       ("sd21", "fp32")])
def test_random_profile_in_memory_quantizes_and_generates(generator: str, precision: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """load_pipeline(profile="random") on CPU, shrunken via the registry lookup it uses: quantized, verified, runs."""
    if unavailable_reason(get_precision(precision), "cpu"):
        pytest.skip(unavailable_reason(get_precision(precision), "cpu"))
    monkeypatch.setattr(fullsize, "full_size_configs", _shrink)
    lp = load_pipeline(generator, precision, "random", device="cpu")
    assert lp.model_key == random_model_key(generator, "cpu", _shrink(generator))
    assert lp.source.startswith("in memory")
    if generator == "flux":
        assert lp.pipe.tokenizer_2.model_max_length == 512
    if precision == "nf4":
        assert lp.verification[lp.generator.denoiser]["quantized_modules"] > 0
    images = _image(lp, generator)
    assert images.shape == (1, 64, 64, 3) and np.isfinite(images).all()


def test_cli_make_random_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    from quantfake.cli import main

    monkeypatch.setattr(fullsize, "full_size_configs", _shrink)
    assert main(["make-random-root", "--generators", "flux", "--root", str(tmp_path), "--device", "cpu"]) == 0
    folder = tmp_path / get_generator("flux").hub_id
    assert (folder / "model_index.json").exists()
    assert random_model_key("flux", "cpu") in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["make-random-root", "--generators", "flux,sd9", "--root", str(tmp_path)])
    assert exc.value.code == 2


@pytest.mark.parametrize("precision", ["bf16", "nf4"])
def test_unplaced_random_build_parks_the_same_weights_on_the_cpu(precision: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """``place=False`` (a memory-fitted load) builds component by component and parks each on the CPU: the same
    weights, cast and quantized as a whole build, so a fitted run's images are a plain run's images."""
    if unavailable_reason(get_precision(precision), "cpu"):
        pytest.skip(unavailable_reason(get_precision(precision), "cpu"))
    monkeypatch.setattr(fullsize, "full_size_configs", _shrink)
    whole = load_pipeline("flux", precision, "random", device="cpu")
    parked = load_pipeline("flux", precision, "random", device="cpu", place=False)
    assert parked.model_key == whole.model_key and parked.verification == whole.verification
    for name in ("transformer", "text_encoder_2", "vae"):
        expected = getattr(whole.pipe, name).state_dict()
        for key, value in getattr(parked.pipe, name).state_dict().items():
            assert value.device.type == "cpu" and value.dtype == expected[key].dtype
            assert torch.equal(value, expected[key]), f"{name}.{key}"
