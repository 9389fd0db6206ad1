"""Memory fit (--vram-budget): the estimate against recorded GPU peaks, the choice as a pure function, and the
recipe applied to tiny pipelines on the CPU (offload recorded as not applicable there)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from quantfake.errors import MemoryBudgetError
from quantfake.memory_fit import (
    HEADROOM_FRACTION,
    Recipe,
    candidate_recipes,
    choose_recipe,
    estimate,
    full_size_memory,
)
from quantfake.options import build_options
from quantfake.validation import check_budget

REPO = Path(__file__).resolve().parent.parent
H200 = json.loads((REPO / "benchmarks/rehearsal/effic_e2e_h200.json").read_text())["benchmarks"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _recorded(generator: str, precision: str) -> dict:
    (extra,) = [b["extra_info"] for b in H200 if b["extra_info"].get("generator") == generator
                and b["extra_info"].get("precision") == precision and "component_weights_bytes" in b["extra_info"]]
    return extra


def _memory(generator: str = "flux", precision: str = "bf16", **changes):
    mem = full_size_memory(generator, precision, _recorded(generator, precision)["component_weights_bytes"])
    return dataclasses.replace(mem, **changes)


def test_the_estimate_reproduces_every_recorded_gpu_peak() -> None:
    """63 recorded peaks (H100 denoiser steps, H200 whole pipelines at batch 1 and 4) within -3 % .. +60 %, and the
    module's constants equal their refit from those records (scripts/memory_fit_calibration.py --check)."""
    proc = subprocess.run([sys.executable, str(REPO / "scripts/memory_fit_calibration.py"), "--check"],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "63 recorded peaks; 0 out of bounds" in proc.stdout and "0 drifted" in proc.stdout


def test_whole_pipeline_estimates_match_the_h200_records_closely() -> None:
    for generator in ("sd3", "sdxl", "flux"):
        for precision in ("bf16", "nf4"):
            mem, rec = _memory(generator, precision), _recorded(generator, precision)
            for batch, key in ((1, "e2e_peak_vram_gib"), (4, "e2e_peak_vram_gib_b4")):
                assert estimate(mem, Recipe(batch=batch), 1024).peak_gib == pytest.approx(rec[key], rel=0.01)


def test_recipes_come_least_costly_first() -> None:
    recipes = list(candidate_recipes(_memory(largest_module_bytes=10**8), batch=4))
    assert recipes[0] == Recipe(batch=4)
    assert recipes[1:3] == [Recipe(batch=4, vae_slicing=True), Recipe(batch=4, vae_slicing=True, vae_tiling=True)]
    assert [r.batch for r in recipes[:9]] == [4] * 3 + [2] * 3 + [1] * 3
    assert [r.offload for r in recipes[::9]] == ["none", "model", "sequential"]
    assert all(r.offload != "sequential" for r in candidate_recipes(_memory(), 4))  # without a module size


def test_flux_bf16_on_a_24_gib_card_needs_model_offload_at_batch_1() -> None:
    mem = _memory()  # 31.4 GiB of weights (transformer 22.2, T5-XXL 8.9)
    assert choose_recipe(mem, 80, 1024, 1).recipe == Recipe()
    fit = choose_recipe(mem, 24, 1024, 4)
    assert fit.recipe == Recipe("model", batch=1)
    assert fit.estimate.peak_phase == "denoise" and fit.estimate.peak_gib <= 24 * (1 - HEADROOM_FRACTION)
    record = fit.as_record()
    assert record["summary"] == "model offload, batch 1" and record["requested_batch"] == 4
    assert record["budget_gib"] == 24 and record["offload"] == "model"


def test_vae_slicing_before_a_smaller_batch_before_offload() -> None:
    mem = _memory("sd3", "bf16")  # 14.4 GiB weights; decode of 4 images at 1024 px ~8.1 GiB
    as_is = estimate(mem, Recipe(batch=4), 1024).peak_gib
    sliced = estimate(mem, Recipe(batch=4, vae_slicing=True), 1024).peak_gib
    assert sliced < as_is
    budget = (sliced + 0.1) / (1 - HEADROOM_FRACTION)
    assert choose_recipe(mem, budget, 1024, 4).recipe == Recipe(batch=4, vae_slicing=True)
    # where denoising dominates (a 4x wider denoiser), the batch shrinks before anything is offloaded
    wide = _memory(denoiser_width=4 * _memory().denoiser_width)
    den = {b: estimate(wide, Recipe(batch=b, vae_slicing=True), 1024).phases_gib["denoise"] for b in (1, 2, 4)}
    usable = den[2] + 0.05
    assert den[4] > usable > estimate(wide, Recipe(batch=2, vae_slicing=True), 1024).phases_gib["decode"]
    assert choose_recipe(wide, usable / (1 - HEADROOM_FRACTION), 1024, 4).recipe == Recipe(batch=2, vae_slicing=True)


def test_tiling_is_chosen_only_where_it_saves_memory() -> None:
    mem = _memory("sd3", "bf16")  # the VAE tiles at its sample_size, 1024 px: nothing to save at 1024
    assert estimate(mem, Recipe(vae_tiling=True), 1024).peak_gib == estimate(mem, Recipe(), 1024).peak_gib
    at_2048 = estimate(mem, Recipe(), 2048)
    tiled = estimate(mem, Recipe(vae_tiling=True, vae_slicing=True), 2048)
    assert at_2048.peak_phase == "decode" and tiled.peak_gib < at_2048.peak_gib
    fit = choose_recipe(mem, (tiled.peak_gib + 0.05) / (1 - HEADROOM_FRACTION), 2048, 1)
    assert fit.recipe == Recipe(vae_slicing=True, vae_tiling=True) and fit.recipe.vae_mode == "tiling+slicing"
    assert fit.recipe.summary == "VAE tiling+slicing, batch 1"


def test_refusal_names_budget_estimate_and_what_would_fit() -> None:
    mem = _memory(largest_module_bytes=300 * 2**20)
    fit = choose_recipe(mem, 8, 1024, 1)  # sequential offload streams one module at a time
    assert fit.recipe.offload == "sequential"
    with pytest.raises(MemoryBudgetError) as exc:
        choose_recipe(mem, 1, 1024, 1)
    message = str(exc.value)
    assert "flux-bf16 does not fit --vram-budget 1 GiB" in message and "estimated 33.9" in message
    assert "sequential offload, batch 1" in message and "needs --vram-budget" in message
    nf4 = _memory("flux", "nf4", sequential_unsupported="bitsandbytes weights break under sequential offload")
    with pytest.raises(MemoryBudgetError, match="sequential offload not offered: bitsandbytes"):
        choose_recipe(nf4, 4, 1024, 1)


@pytest.mark.parametrize("bad", ["0", "-3", "lots", "nan"])
def test_a_bad_budget_is_a_usage_error_naming_it(bad: str) -> None:
    with pytest.raises(ValueError, match=f"--vram-budget '{bad}': expected a positive number of GiB"):
        check_budget(bad)
    with pytest.raises(ValueError, match="--vram-budget"):
        build_options({"vram_budget": bad})
    assert build_options({"vram_budget": "23.5"}).vram_budget_gib == 23.5
    assert build_options({}).vram_budget_gib is None


# ------------------------------------------------------------------ applied to tiny pipelines on the CPU


def _tiny_fit(tmp_path: Path, budget: float, batch: int = 4):
    from quantfake.memory_placement import load_within_budget
    from quantfake.store import Store

    return load_within_budget("sd3", "fp32", "tiny", budget_gib=budget, size=64, batch=batch, device="cpu",
                              store=Store(tmp_path / "store"))


def test_tiny_pipeline_takes_the_recipe_and_offload_is_recorded_not_applicable_on_cpu(tmp_path: Path) -> None:
    from quantfake.generate import GenerationRequest, generate, request_key
    from quantfake.store import Store

    roomy = _tiny_fit(tmp_path, 1.0)
    record = roomy.memory_fit.record()
    assert roomy.memory_fit.recipe == Recipe(batch=4) and record["offload_applied"] == "none"
    assert record["cap"].startswith("none on cpu")
    mem = roomy.memory_fit.memory
    assert mem.component_bytes["transformer"] > 0 and mem.largest_module_bytes > 0
    # a budget below "as is" and every VAE option at batch 4 and 2, but above model offload at batch 4
    model4 = estimate(mem, Recipe("model", batch=4, vae_slicing=True), 64).peak_gib
    none1 = estimate(mem, Recipe(batch=1), 64).peak_gib
    assert model4 < none1, "tiny sd3 should need model offload under this budget"
    tight = _tiny_fit(tmp_path, (model4 + none1) / 2 / (1 - HEADROOM_FRACTION))
    assert tight.memory_fit.recipe == Recipe("model", vae_slicing=True, batch=4)
    assert tight.memory_fit.record()["offload_applied"] == "none"
    assert "not applicable on the CPU" in tight.memory_fit.record()["offload_note"]
    assert tight.pipe.vae.use_slicing and not tight.pipe.vae.use_tiling
    req = GenerationRequest(n_images=2, steps=2, size=64, batch_size=2)
    res = generate(tight, req, Store(tmp_path / "store"), progress=False)
    pixels = np.asarray(res.images[0].open())
    assert pixels.shape == (64, 64, 3) and res.manifest["memory_fit"]["vae_mode"] == "slicing"
    # sliced decoding is in the image key (it may change pixels); offload alone is not
    assert request_key(tight, req) != request_key(roomy, req)
    unsliced = dataclasses.replace(tight.memory_fit.fit, recipe=Recipe("model", batch=4))
    tight.memory_fit = dataclasses.replace(tight.memory_fit, fit=unsliced)
    assert request_key(tight, req) == request_key(roomy, req)
    with pytest.raises(MemoryBudgetError, match="sd3-fp32 does not fit --vram-budget 1e-06 GiB"):
        _tiny_fit(tmp_path, 1e-6)


def test_batch_fits_uses_the_same_recipe(tmp_path: Path) -> None:
    lp = _tiny_fit(tmp_path, 1.0, batch=1)
    placement = lp.memory_fit
    assert placement.batch_fits(1) and placement.batch_fits(4)
    assert placement.batch_estimate_gib(4) > placement.batch_estimate_gib(1)
    assert torch.device(lp.pipe.device).type == "cpu"
