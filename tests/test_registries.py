"""Registry facts: every id resolves to real diffusers classes, full-size configs match published sizes,
and unknown ids fail with the list of valid ones."""

from __future__ import annotations

import inspect

import diffusers
import pytest
import torch

from quantfake.errors import UnknownIdError
from quantfake.generators import GENERATORS, MODES, check_mode, get_generator
from quantfake.loading import load_pipeline
from quantfake.precision_apply import check_components
from quantfake.precisions import COMPUTE_DTYPES, DEFAULT_PRECISIONS, PRECISIONS, dtype_from_name, get_precision
from quantfake.profiles import PROFILES, check_profile

# Published denoiser sizes (weights in the hub checkpoint, i.e. parameters + persistent buffers such as the
# SD3 positional-embedding table). Sources: model cards / checkpoint sizes of each hub repo.
PUBLISHED_DENOISER_PARAMS: dict[str, float] = {
    "sd15": 0.86e9,   # SD1.5 UNet 859.5M
    "sd21": 0.866e9,  # SD2.1 UNet 865.9M
    "sdxl": 2.6e9,    # SDXL base UNet 2.57B
    "sd3": 2.0e9,     # SD3 Medium MMDiT "2B"
    "sd35": 2.5e9,    # SD3.5 Medium MMDiT-X "2.5B"
    "sd35l": 8.1e9,   # SD3.5 Large "8.1B"
    "flux": 11.9e9,   # FLUX.1 [dev] "12B" (11.9B)
    "fluxs": 11.9e9,  # FLUX.1 [schnell]
}


def test_published_sizes_cover_every_generator() -> None:
    assert set(PUBLISHED_DENOISER_PARAMS) == set(GENERATORS)


@pytest.mark.parametrize("generator_id", list(GENERATORS))
def test_generator_resolves_to_real_diffusers_classes(generator_id: str) -> None:
    spec = get_generator(generator_id)
    assert spec.id == generator_id
    owner, _, repo = spec.hub_id.partition("/")
    assert owner and repo, f"hub id {spec.hub_id!r} is not owner/name"
    for mode in MODES:
        cls = getattr(diffusers, spec.pipeline_class_name(mode))
        expected, _optional = cls._get_signature_keys(cls)
        assert spec.denoiser in expected
        # every component the registry names must be a real component of both pipeline classes
        check_components(cls, [spec.denoiser, *spec.text_encoders])
    assert spec.pipeline_class_name("txt2img") != spec.pipeline_class_name("img2img")
    assert hasattr(diffusers, spec.denoiser_class)
    scheduler = getattr(diffusers, spec.scheduler_class)(**spec.scheduler_config)
    assert scheduler.config.num_train_timesteps == 1000
    assert spec.default_steps > 0 and spec.native_size % 64 == 0


@pytest.mark.parametrize("generator_id", list(GENERATORS))
def test_denoiser_config_keys_are_constructor_arguments(generator_id: str) -> None:
    """diffusers ignores unknown config keys with only a log line; a typo would silently build another model."""
    spec = get_generator(generator_id)
    accepted = set(inspect.signature(getattr(diffusers, spec.denoiser_class).__init__).parameters)
    unknown = set(spec.denoiser_config) - accepted
    assert not unknown, f"{generator_id}: keys {sorted(unknown)} are not arguments of {spec.denoiser_class}"


@pytest.mark.parametrize("generator_id", list(GENERATORS))
def test_full_size_denoiser_builds_on_meta_with_published_size(generator_id: str) -> None:
    spec = get_generator(generator_id)
    cls = getattr(diffusers, spec.denoiser_class)
    with torch.device("meta"):
        model = cls.from_config(dict(spec.denoiser_config))
    assert type(model).__name__ == spec.denoiser_class
    checkpoint_numel = sum(t.numel() for t in model.state_dict().values())
    published = PUBLISHED_DENOISER_PARAMS[generator_id]
    assert abs(checkpoint_numel - published) / published < 0.10, (
        f"{generator_id}: {checkpoint_numel / 1e9:.3f}e9 weights vs published {published / 1e9:.2f}e9")


def test_flux_variants_differ_only_in_guidance_embedding() -> None:
    dev, schnell = get_generator("flux").denoiser_config, get_generator("fluxs").denoiser_config
    assert dev["guidance_embeds"] and not schnell["guidance_embeds"]
    assert {k: v for k, v in dev.items() if k != "guidance_embeds"} == {
        k: v for k, v in schnell.items() if k != "guidance_embeds"}


@pytest.mark.parametrize(
    ("lookup", "bad", "kind", "valid"),
    [
        (get_generator, "sd99", "generator", list(GENERATORS)),
        (get_precision, "int3", "precision", list(PRECISIONS)),
        (check_mode, "inpaint", "mode", list(MODES)),
        (check_profile, "huge", "profile", list(PROFILES)),
        (dtype_from_name, "float64", "dtype", list(COMPUTE_DTYPES.values())),
    ],
)
def test_unknown_id_lists_valid_ids(lookup, bad: str, kind: str, valid: list[str]) -> None:
    with pytest.raises(UnknownIdError) as info:
        lookup(bad)
    err = info.value
    assert isinstance(err, ValueError)
    assert (err.kind, err.value, err.valid) == (kind, bad, valid)
    message = str(err)
    assert repr(bad) in message
    assert all(v in message for v in valid)


def test_pipeline_class_name_rejects_unknown_mode() -> None:
    with pytest.raises(UnknownIdError, match="txt2img, img2img"):
        get_generator("sd15").pipeline_class_name("video")


def test_load_pipeline_rejects_unknown_ids_before_any_work(tmp_path) -> None:
    from quantfake.store import Store

    store = Store(tmp_path)
    for kwargs, kind in [(dict(generator="nope", precision="fp32"), "generator"),
                         (dict(generator="sd15", precision="fp7"), "precision"),
                         (dict(generator="sd15", precision="fp32", profile="medium"), "profile")]:
        with pytest.raises(UnknownIdError) as info:
            load_pipeline(**kwargs, store=store, device="cpu")
        assert info.value.kind == kind
    assert not store.models_dir.exists(), "an invalid id must not build anything"


def test_precision_naming_is_truthful() -> None:
    int8, fp8 = get_precision("int8"), get_precision("fp8")
    assert int8.study_name == "fp8", "the study's 'fp8' was bitsandbytes LLM.int8; int8 must say so"
    assert int8.bnb_kwargs == {"load_in_8bit": True} and int8.diffusers_backend == "bitsandbytes_8bit"
    assert fp8.kind == "layerwise" and fp8.study_name is None
    assert get_precision("nf4").diffusers_backend == "bitsandbytes_4bit"
    assert get_precision("fp4").bnb_kwargs["bnb_4bit_quant_type"] == "fp4"


def test_default_precisions_are_registered_with_one_reference() -> None:
    assert set(DEFAULT_PRECISIONS) <= set(PRECISIONS)
    assert [p for p in PRECISIONS.values() if p.is_reference] == [PRECISIONS["fp32"]]
    assert [p for p in DEFAULT_PRECISIONS if not PRECISIONS[p].quantizes] == ["fp32", "fp16", "bf16"]
