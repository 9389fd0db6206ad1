"""--preset study: the original study's protocol in one flag; options given on the command line win."""

from __future__ import annotations

from pathlib import Path

import pytest

from quantfake.errors import UnknownIdError
from quantfake.options import build_options
from quantfake.session.engine import Session


def test_study_preset_sets_the_protocol(tmp_path: Path) -> None:
    o = build_options({"preset": "study", "store": str(tmp_path)})
    assert o.preset == "study" and o.grid == "full"
    assert o.generators == ("sd15", "sd21", "sdxl", "sd3", "sd35", "flux")
    assert o.precisions == ("fp16", "int8", "nf4") and o.detectors == ("npr", "r50nodown", "r50tf", "clipd")
    assert o.n_images == 500 and o.strength == 0.6 and o.steps == 60 and o.img2img_steps == 30
    fakes = Session.open(o).fakes
    t2i = fakes.request("sd3", "txt2img")
    assert t2i.steps == 60 and t2i.seeds()[:2] == [123, 124]
    assert t2i.prompt_for(123) != t2i.prompt_for(124) and "cyberpunk" in "".join(t2i.prompts)
    i2i = fakes.request("sd3", "img2img")
    assert i2i.steps == 30 and i2i.prompts == ("oil painting, van gogh style, thick brushstrokes",)


def test_given_options_win_over_the_preset_and_defaults_are_unchanged_without_one(tmp_path: Path) -> None:
    o = build_options({"preset": "study", "n_images": "8", "generators": "sd3", "steps": "4", "store": str(tmp_path)})
    assert o.n_images == 8 and o.generators == ("sd3",) and o.steps == 4 and o.img2img_steps == 30
    plain = build_options({"store": str(tmp_path)})
    assert plain.preset is None and plain.img2img_steps is None and plain.first_seed == 0
    req = Session.open(plain).fakes.request("sd3", "txt2img")
    assert req.seed_offset == 0 and req.steps == 4  # the tiny world is as before (baselines unchanged)
    with pytest.raises(UnknownIdError, match="'studdy'.*study"):
        build_options({"preset": "studdy"})
    with pytest.raises(ValueError, match="--img2img-steps 0: accepted an integer >= 1"):
        build_options({"img2img_steps": "0"})
