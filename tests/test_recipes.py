"""Speed recipes (batch > 1, torch.compile) are used only as far as they keep eager batch-1 images (issue 15).

The claims are checked against an independent eager batch-1 run into another store: the stated check must be
what the images show, a refused recipe's images must never be the ones kept, and the store key must separate
images that differ. torch.compile runs through dynamo with a test backend (tests/plugins/fake_compile.py):
inductor takes minutes per tiny pipeline on these CPUs.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from quantfake.environment import generation_versions
from quantfake.fidelity import psnr
from quantfake.generate import GenerationRequest, GenerationResult, generate, request_key
from quantfake.loading import LoadedPipeline, load_pipeline
from quantfake.precisions import required_packages
from quantfake.recipes import MIN_PSNR_DB, SessionRecipes, probe_positions, recipe_label
from quantfake.store import Store, config_hash
from tests.plugins.fake_compile import compile_with

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model_store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return Store(tmp_path_factory.mktemp("models"))


@pytest.fixture
def fluxs(model_store: Store) -> LoadedPipeline:
    """A fresh pipeline per test: a compiled wrapper (and its backend) must not leak into the next test."""
    return load_pipeline("fluxs", "fp32", "tiny", device="cpu", store=model_store)


def _req(batch_size: int, compile: bool = False, n_images: int = 8) -> GenerationRequest:
    return GenerationRequest(n_images=n_images, steps=2, size=64, batch_size=batch_size, compile=compile,
                             guidance=3.5)


def _planned(loaded: LoadedPipeline, req: GenerationRequest, store: Store,
             recipes: SessionRecipes | None = None) -> tuple[GenerationResult, dict]:
    """What FakeSource.images does: plan the recipe, generate with it, summarise."""
    recipes = recipes or SessionRecipes(store)
    plan = recipes.plan(loaded, req, None)
    res = generate(loaded, plan.request, store, ready=plan.ready, recipe=plan.manifest, progress=False)
    return res, plan.summary(res)


def _eager(loaded: LoadedPipeline, req: GenerationRequest, tmp_path: Path) -> GenerationResult:
    """Eager batch 1 into a store of its own, so no image of the recipe can be reused."""
    loaded.set_compiled(False)
    return generate(loaded, dataclasses.replace(req, batch_size=1, compile=False), Store(tmp_path / "eager"),
                    progress=False)


def _pixels(res: GenerationResult) -> list[bytes]:
    return [im.open().tobytes() for im in res.images]


def test_probe_positions_cover_the_batch_edges() -> None:
    assert probe_positions(1) == [0] and probe_positions(4) == [0, 1, 2, 3] and probe_positions(16) == [0, 5, 10, 15]
    assert recipe_label(4, True) == "batch 4 + compile" and recipe_label(1) == "eager batch 1"


def test_batch_4_is_checked_against_eager_batch_1_and_says_how_close(fluxs: LoadedPipeline, tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    req = _req(batch_size=4)
    res, summary = _planned(fluxs, req, store)
    eager = _eager(fluxs, req, tmp_path)
    per_image = [psnr(a.open(), b.open()) for a, b in zip(eager.images, res.images, strict=True)]
    print(f"fluxs fp32, batch 4 vs eager batch 1, per image PSNR dB: {[round(float(p), 1) for p in per_image]}; "
          f"stated: {summary['check']}")
    compared = summary["check_detail"]["compared_seeds"]
    assert compared == [0, 1, 2, 3] and summary["used"] == "batch 4" and summary["requested"] == "batch 4"
    worst_compared = min(per_image[s] for s in compared)  # the probe's claim, recomputed from the stored images
    stated = "bitwise" if math.isinf(worst_compared) else f"PSNR {worst_compared:.1f} dB"
    assert summary["check"] == stated and worst_compared >= MIN_PSNR_DB
    assert min(per_image) >= MIN_PSNR_DB, "every image keeps its own seed: same image whatever the batch"
    assert res.key != eager.key and summary["pixels"] == "batch 4", "a recipe's images never pass for eager ones"
    # the check's batch is the set's first chunk: generated once, used, its seconds counted as generation
    assert res.generated == 8 and res.ready_s > 0
    assert summary["s_per_image_amortised"] > summary["s_per_image"] > 0
    assert summary["recipe_overhead_s"] > 0 and summary["compile_s"] is None


def test_a_checked_recipe_is_not_checked_again_when_the_store_holds_its_images(fluxs: LoadedPipeline,
                                                                               tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    first, before = _planned(fluxs, _req(batch_size=4, n_images=4), store)
    later = SessionRecipes(store)
    again, summary = _planned(fluxs, _req(batch_size=4, n_images=4), store, later)
    assert not later.checks, "nothing to generate: no check, no compile"
    assert again.key == first.key and again.generated == 0 and _pixels(again) == _pixels(first)
    assert summary["used"] == "none: every image was in the store" and summary["check"] == before["check"]


def _compiled(loaded: LoadedPipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str, batch_size: int,
              n_images: int) -> tuple[GenerationResult, dict, GenerationResult]:
    """A compiled recipe planned and generated with a test backend, and eager batch 1 of the same request."""
    monkeypatch.setattr(torch, "compile", compile_with(backend))
    req = _req(batch_size=batch_size, compile=True, n_images=n_images)
    res, summary = _planned(loaded, req, Store(tmp_path / "store"))
    return res, summary, _eager(loaded, req, tmp_path)


def _row(image) -> dict:
    import json

    return json.loads(image.path.with_suffix(".json").read_text())


def test_compile_through_dynamo_is_checked_and_timed(fluxs: LoadedPipeline, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    res, summary, eager = _compiled(fluxs, tmp_path, monkeypatch, "passthrough", batch_size=1, n_images=3)
    assert summary["used"] == "batch 1 + compile" and summary["compile_s"] >= 0
    same = _pixels(res) == _pixels(eager)
    assert summary["check"] == "bitwise" if same else summary["check"].startswith("PSNR")
    assert res.key != eager.key
    assert [_row(im)["compile"] for im in res.images] == [True] * 3


def test_a_compile_that_changes_images_is_refused_and_the_batch_alone_kept(fluxs: LoadedPipeline, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    res, summary, _ = _compiled(fluxs, tmp_path, monkeypatch, "perturbing", batch_size=4, n_images=4)
    attempts = {a["recipe"]: a for a in summary["check_detail"]["attempts"]}
    assert attempts["batch 4 + compile"]["verdict"] == "refused"
    assert attempts["batch 4 + compile"]["psnr_db"] < MIN_PSNR_DB
    assert summary["used"] == "batch 4" and "with batch 4 (refused: batch 4 + compile: PSNR" in summary["check"]
    assert summary["compile_s"] is not None, "a refused compile's seconds were still spent"
    assert not fluxs.compiled and [_row(im)["compile"] for im in res.images] == [False] * 4
    batch_alone = generate(fluxs, _req(batch_size=4, n_images=4), Store(tmp_path / "batch"), progress=False)
    assert _pixels(res) == _pixels(batch_alone), "the refused compiled images must not be the ones kept"


def test_a_refused_recipe_falls_back_to_eager_batch_1_bitwise(fluxs: LoadedPipeline, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    res, summary, eager = _compiled(fluxs, tmp_path, monkeypatch, "perturbing", batch_size=1, n_images=2)
    assert summary["check"].startswith("refused: batch 1 + compile: PSNR") and summary["check"].endswith(
        "eager batch 1 used")
    assert summary["used"] == "eager batch 1" and res.key == eager.key and _pixels(res) == _pixels(eager)


def test_a_compile_that_fails_is_refused_with_its_error(fluxs: LoadedPipeline, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch, "compile", compile_with("failing"))
    res, summary = _planned(fluxs, _req(batch_size=1, compile=True, n_images=1), Store(tmp_path / "store"))
    assert "torch.compile failed" in summary["check"] and "no C++ compiler found" in summary["check"]
    assert summary["used"] == "eager batch 1" and res.generated == 1 and not fluxs.compiled


def test_eager_batch_1_needs_no_check(fluxs: LoadedPipeline, tmp_path: Path) -> None:
    recipes = SessionRecipes(Store(tmp_path))
    res, summary = _planned(fluxs, _req(batch_size=1, n_images=1), recipes.store, recipes)
    assert not recipes.checks and summary["check"].startswith("none needed") and res.generated == 1


def test_the_key_records_the_recipe_and_keeps_eager_keys(fluxs: LoadedPipeline) -> None:
    keys = {request_key(fluxs, _req(b, c)) for b, c in ((1, False), (4, False), (1, True), (4, True))}
    assert len(keys) == 4, "batch and compile can move pixels: each recipe has its own images"
    ident = {"model": fluxs.model_key, "precision": "fp32", "device": "cpu", "text_encoders": fluxs.components,
             **{k: v for k, v in dataclasses.asdict(_req(4)).items() if k not in ("n_images", "compile")}}
    ident["prompts"] = list(ident["prompts"])
    ident["versions"] = generation_versions(required_packages(fluxs.precision))
    ident["cpu_threads"] = torch.get_num_threads()
    assert request_key(fluxs, _req(4)).endswith(config_hash(ident)), "eager keys hold no compile field"


def test_a_complete_eager_set_is_reused_for_any_recipe_unchecked(fluxs: LoadedPipeline, tmp_path: Path) -> None:
    store = Store(tmp_path)
    eager = generate(fluxs, _req(batch_size=1, n_images=2), store, progress=False)
    recipes = SessionRecipes(store)
    res, summary = _planned(fluxs, _req(batch_size=4, compile=True, n_images=2), store, recipes)
    assert not recipes.checks and not fluxs.compiled and res.key == eager.key and res.generated == 0
    assert summary["pixels"] == "eager batch 1" and summary["check"].startswith("none needed")


def test_a_reloaded_pipeline_compiles_again_and_pays_for_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One pipeline at a time (as on a GPU): evicting a compiled one resets dynamo; its reload is timed again."""
    from quantfake.options import build_options
    from quantfake.session.engine import Session

    monkeypatch.setattr(torch, "compile", compile_with("passthrough"))
    fakes = Session.open(build_options({"generators": "fluxs", "precisions": "fp32,w8", "n_images": "2",
                                        "n_real": "2", "n_calibration": "2", "steps": "2", "batch_size": "1",
                                        "compile": True, "store": str(tmp_path)}), max_pipelines=1).fakes
    first = fakes.generation[fakes.images("fluxs", "fp32", "txt2img").key]
    fakes.images("fluxs", "w8", "txt2img")  # evicts fp32
    again = fakes.generation[fakes.images("fluxs", "fp32", "img2img").key]
    assert len(fakes.recipes.checks) == 2, "one check per generator x precision, not per load"
    assert first["used"] == again["used"] == "batch 1 + compile" and again["check"] == first["check"]
    assert first["compile_s"] is not None and again["compile_s"] is not None
    assert again["recipe_overhead_s"] > 0 and again["s_per_image_amortised"] > again["s_per_image"]


def test_bench_cells_state_the_check_and_a_bad_compile_is_refused(tmp_path: Path) -> None:
    """End to end: fidelity cells with --gen-batch-size 4 --compile, the compiler miscompiling (fault injection)."""
    import json
    import os
    import subprocess
    import sys

    from quantfake.report import build_report

    repo = Path(__file__).resolve().parent.parent
    history = tmp_path / "history"
    cmd = [sys.executable, "-m", "pytest", "bench/test_fidelity.py", "-p", "no:cacheprovider", "-q",
           "-p", "tests.plugins.fake_compile", "--generators=fluxs", "--precisions=fp32,w8", "--modes=txt2img",
           "--n-images=4", "--n-real=4", "--n-calibration=4", "--gen-batch-size=4", "--compile",
           f"--store={tmp_path / 'store'}", f"--history={history}", f"--baselines-dir={tmp_path / 'baselines'}",
           "--update-baselines", "--no-report"]
    env = {k: v for k, v in os.environ.items() if k not in ("QUANTFAKE_RUN_ID", "QUANTFAKE_STORE")}
    env.update(QF_TEST_COMPILE_BACKEND="perturbing", OMP_NUM_THREADS="1", PYTHONPATH=str(repo))
    proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "generation fluxs-w8-txt2img: batch 4 + compile -> batch 4: PSNR" in out, out[-3000:]
    (record_path,) = history.glob("*.json")
    (cell,) = json.loads(record_path.read_text())["cells"]
    for made in (cell["extra"]["generation"], cell["extra"]["reference_generation"]):
        assert made["used"] == "batch 4" and "(refused: batch 4 + compile: PSNR" in made["check"]
        assert made["s_per_image_amortised"] > made["s_per_image"] > 0
    assert cell["extra"]["generation"]["precision"] == "w8"
    assert cell["extra"]["reference_generation"]["precision"] == "fp32"
    report = (build_report(record_path, out_dir=tmp_path / "report") / "report.md").read_text()
    assert "## Generation" in report and "refused: batch 4 + compile" in report
