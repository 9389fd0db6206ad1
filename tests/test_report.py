"""Tests for quantfake.report: HTML + Markdown reports from a synthetic recorded run."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from quantfake.report import build_report, main
from quantfake.report.record import benchmark_frame, cells_frame
from quantfake.results import read_run_record

REPO_ROOT = Path(__file__).resolve().parents[1]
GENERATORS = ("sd15", "sdxl")
PRECISIONS = ("fp32", "nf4")
DETECTORS = ("npr", "univfd")
ALWAYS = ("Summary", "Detection", "Score distributions", "Paired shifts", "Environment")
OPTIONAL = ("Fidelity", "Efficiency", "Samples", "History")


def _detection_cell(rng: np.random.Generator, generator: str, precision: str, detector: str,
                    real: list[float]) -> dict[str, Any]:
    shift = 1.5 if precision == "fp32" else 0.8
    fake = rng.normal(shift, 1.0, size=40).tolist()
    auc = float(roc_auc_score([0] * len(real) + [1] * len(fake), real + fake))
    paired = None
    if precision != "fp32":
        paired = {"reference_precision": "fp32", "delta_auc": -0.1, "delta_auc_ci95": [-0.2, 0.0],
                  "delta_auc_p_delong": 0.04, "wilcoxon_p": 0.01, "mcnemar_p": 0.2, "ks": 0.3,
                  "ks_p": 0.002, "wasserstein": 0.7}
    return {
        "cell_id": f"{generator}-{precision}-txt2img-{detector}", "kind": "detection",
        "params": {"generator": generator, "precision": precision, "mode": "txt2img",
                   "detector": detector, "perturbation": "none", "detector_precision": "fp32"},
        "status": "passed", "message": "",
        "metrics": {"auc": auc, "ap": auc, "acc_calibrated": 0.7, "acc_fixed": 0.6, "acc_oracle": 0.8},
        "ci95": {"auc": [auc - 0.05, min(1.0, auc + 0.05)]}, "n": {"real": len(real), "fake": len(fake)},
        "paired": paired, "scores": {"real": real, "fake": fake}, "timings": {}, "extra": {},
    }


def make_record(seed: int = 0, run_id: str = "20260101T000000Z-0000abcd", fidelity: bool = False,
                samples: dict[str, Any] | None = None) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    real = rng.normal(0.0, 1.0, size=40).tolist()
    cells = [_detection_cell(rng, g, p, d, real)
             for g in GENERATORS for p in PRECISIONS for d in DETECTORS]
    if fidelity:
        cells += [{"cell_id": f"{g}-nf4-txt2img-fidelity", "kind": "fidelity",
                   "params": {"generator": g, "precision": "nf4", "mode": "txt2img"},
                   "status": "passed", "message": "",
                   "metrics": {"psnr": float(rng.uniform(20, 30)), "ssim": float(rng.uniform(0.5, 0.9))},
                   "ci95": {}, "n": {"real": 0, "fake": 8}, "paired": None} for g in GENERATORS]
    cells.append({"cell_id": "sdxl-fp4-txt2img-npr", "kind": "detection",
                  "params": {"generator": "sdxl", "precision": "fp4", "mode": "txt2img", "detector": "npr"},
                  "status": "error", "message": "PrecisionUnavailable: no CUDA", "metrics": {}})
    return {
        "schema": 1, "run_id": run_id, "created": f"2026-01-0{seed + 1}T00:00:00+00:00",
        "profile": "tiny", "options": {"seeds": 4},
        "environment": {"python": "3.11", "platform": "linux", "torch": "2.13", "cuda": None,
                        "packages": {"torch": "2.13", "diffusers": "0.42.1"}},
        "cells": cells, "benchmark_json": None, "samples": samples,
    }


def write_samples(root: Path) -> dict[str, Any]:
    samples: dict[str, Any] = {}
    for g in GENERATORS:
        per_precision = {}
        for p in PRECISIONS:
            paths = []
            for seed in range(2):
                rel = f"samples/{g}-{p}-{seed}.png"
                (root / "samples").mkdir(exist_ok=True)
                value = 40 * seed + (0 if p == "fp32" else 100)
                Image.new("RGB", (16, 16), (value, 80, 120)).save(root / rel)
                paths.append(rel)
            per_precision[p] = paths
        samples[f"{g}-txt2img"] = per_precision
    samples["sd15-txt2img"]["nf4"].append("samples/missing.png")  # a missing file must not crash
    return samples


def write_benchmark(path: Path) -> Path:
    benchmarks = [{"name": f"test_gen[{g}-{p}]", "fullname": f"bench::test_gen[{g}-{p}]",
                   "params": {"generator": g, "precision": p}, "stats": {"median": 0.05, "mean": 0.06},
                   "extra_info": {"generator": g, "precision": p, "step_ms": 12.0 if p == "fp32" else 9.0,
                                  "peak_rss_gib": 1.5 if p == "fp32" else 0.6, "weights_bytes": 2**24}}
                  for g in GENERATORS for p in PRECISIONS]
    benchmarks.append({"name": "test_bare", "stats": {"median": 0.01, "mean": 0.01}})  # no extra_info
    path.write_text(json.dumps({"machine_info": {}, "commit_info": {}, "benchmarks": benchmarks}))
    return path


def headings(html: str, md: str) -> tuple[set[str], set[str]]:
    return set(re.findall(r"<h2>(.*?)</h2>", html)), set(re.findall(r"^## (.+)$", md, re.M))


@pytest.fixture(scope="module")
def full_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("run")
    record = make_record(fidelity=True, samples=write_samples(root))
    record["benchmark_json"] = str(write_benchmark(root / "bench.json").name)  # relative to record
    (root / "run.json").write_text(json.dumps(record))
    history = root / "history"
    history.mkdir()
    for seed in range(3):
        rec = make_record(seed=seed, run_id=f"2026010{seed}T000000Z-0000abc{seed}")
        (history / f"{rec['run_id']}.json").write_text(json.dumps(rec))
    (history / "notes.json").write_text("[1, 2]")  # not a run record: skipped
    rows = [{"cell_id": "sd15-nf4-txt2img-npr", "metric": "auc", "a": 0.9, "b": 0.7, "delta": -0.2,
             "p": 0.001, "regression": True},
            {"cell_id": "sdxl-nf4-txt2img-npr", "metric": "auc", "a": 0.8, "b": 0.81, "delta": 0.01,
             "p": 0.6, "regression": False}]
    out = build_report(root / "run.json", out_dir=root / "out", history_dir=history, comparison_rows=rows)
    return out, record


def test_full_report_has_all_sections(full_report: tuple[Path, dict[str, Any]]) -> None:
    out, _ = full_report
    html, md = (out / "index.html").read_text(), (out / "report.md").read_text()
    html_heads, md_heads = headings(html, md)
    for title in ALWAYS + OPTIONAL:
        assert title in html_heads and title in md_heads, title


def test_html_is_self_contained(full_report: tuple[Path, dict[str, Any]]) -> None:
    out, _ = full_report
    html = (out / "index.html").read_text()
    sources = re.findall(r'<img[^>]*src="([^"]+)"', html)
    assert len(sources) >= 8  # 2 heatmaps, 4 score plots, trade-off, 2 sample grids, trend
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"


def test_markdown_images_are_files_beside_it(full_report: tuple[Path, dict[str, Any]]) -> None:
    out, _ = full_report
    md = (out / "report.md").read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(images) >= 8
    for name in images:
        assert "/" not in name and (out / name).read_bytes()[:4] == b"\x89PNG"


def test_tables_show_recorded_numbers(full_report: tuple[Path, dict[str, Any]]) -> None:
    out, record = full_report
    md = (out / "report.md").read_text()
    html = (out / "index.html").read_text()
    for cell in record["cells"]:
        if cell["kind"] == "detection" and cell["metrics"]:
            auc = cell["metrics"]["auc"]
            lo, hi = cell["ci95"]["auc"]
            assert f"{auc:.3f} [{lo:.3f}, {hi:.3f}]" in md
    assert "PrecisionUnavailable: no CUDA" in md and "PrecisionUnavailable: no CUDA" in html
    assert "-0.100 [-0.200, 0.000]" in md  # paired ΔAUC with CI
    assert "12.0" in md and "(rss)" in md  # efficiency table
    assert "test_bare" in md  # benchmark without extra_info still listed


def test_regressions_are_highlighted(full_report: tuple[Path, dict[str, Any]]) -> None:
    out, _ = full_report
    md = (out / "report.md").read_text()
    html = (out / "index.html").read_text()
    assert "**sd15-nf4-txt2img-npr**" in md and "REGRESSION" in md
    assert "**sdxl-nf4-txt2img-npr**" not in md
    marked = re.findall(r'<mark class="regression">([^<]*)</mark>', html)
    assert "sd15-nf4-txt2img-npr" in marked and "sdxl-nf4-txt2img-npr" not in marked


def test_minimal_record_without_optional_parts(tmp_path: Path) -> None:
    record = make_record()
    for cell in record["cells"]:
        cell.pop("scores", None)
        cell["paired"] = None
    record.pop("samples")
    record["benchmark_json"] = "gone.json"  # named but missing: warn, no Efficiency section
    (tmp_path / "run.json").write_text(json.dumps(record))
    out = build_report(tmp_path / "run.json", out_dir=tmp_path / "out")
    assert out == tmp_path / "out"
    html, md = (out / "index.html").read_text(), (out / "report.md").read_text()
    html_heads, md_heads = headings(html, md)
    assert set(ALWAYS) <= html_heads and set(ALWAYS) <= md_heads
    assert not (set(OPTIONAL) & (html_heads | md_heads))
    assert "No per-image scores were recorded" in md
    assert "No paired comparisons were recorded" in html


def test_default_out_dir_is_reports_run_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    record = make_record(run_id="20260101T000000Z-deadbeef")
    record["cells"] = record["cells"][:2]
    (tmp_path / "run.json").write_text(json.dumps(record))
    monkeypatch.chdir(tmp_path)
    out = build_report(tmp_path / "run.json")
    assert out == Path("reports/20260101T000000Z-deadbeef")
    assert (tmp_path / out / "index.html").is_file()


def test_frames_handle_missing_keys(tmp_path: Path) -> None:
    payload = json.loads(write_benchmark(tmp_path / "b.json").read_text())
    bench = benchmark_frame(payload)
    bare = bench[bench["name"] == "test_bare"].iloc[0]
    assert pd.isna(bare["memory_kind"]) and np.isnan(bare["peak_gib"])
    assert bare["latency_ms"] == pytest.approx(10.0)  # falls back to the median
    record = make_record()
    cells = cells_frame(record)
    assert len(cells) == len(record["cells"])
    assert cells.loc[cells["cell_id"] == "sdxl-fp4-txt2img-npr", "auc"].isna().all()


def test_bad_schema_names_accepted(tmp_path: Path) -> None:
    (tmp_path / "run.json").write_text(json.dumps({"schema": 2, "cells": []}))
    with pytest.raises(ValueError, match="accepted"):
        read_run_record(tmp_path / "run.json")


def test_cli_latest_with_history(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    history = tmp_path / "history"
    history.mkdir()
    for seed in range(2):
        rec = make_record(seed=seed, run_id=f"2026010{seed + 1}T000000Z-0000abc{seed}")
        rec["cells"] = rec["cells"][:2]
        (history / f"{rec['run_id']}.json").write_text(json.dumps(rec))
    code = main(["latest", "--history", str(history), "--out", str(tmp_path / "out"),
                 "--pyproject", str(REPO_ROOT / "pyproject.toml")])
    assert code == 0, capsys.readouterr().err
    md = (tmp_path / "out" / "report.md").read_text()
    assert "# quantfake report: 20260102T000000Z-0000abc1" in md
    assert "## History" in md and "verdict" in md  # compare_runs rows rendered
    assert main(["nope", "--history", str(history)]) == 2


def test_generation_lines_count_outcomes_when_there_are_many_sets() -> None:
    """Per set while few; counted by outcome (with the lowest PSNR) when a grid makes many sets."""
    from quantfake.report.tables import MAX_GENERATION_LINES, generation_lines, generation_rows

    checks = ["bitwise", "PSNR 51.2 dB", "PSNR 47.9 dB with batch 4 (refused: batch 4 + compile: PSNR 30.0 dB < 40 dB)",
              "refused: batch 16: PSNR 31.0 dB < 40 dB; eager batch 1 used"]
    cells = [{"extra": {"generation": {"key": f"k{i}", "generator": "sd3", "precision": f"p{i}", "mode": "txt2img",
                                       "requested": "batch 16", "used": "batch 16", "check": checks[i % 4]}}}
             for i in range(MAX_GENERATION_LINES + 4)]
    rows = generation_rows(cells + cells[:2])  # a set appears in several cells: listed once
    assert len(rows) == MAX_GENERATION_LINES + 4
    assert generation_lines(rows[:2])[0].startswith("generation sd3-p0-txt2img: batch 16 -> batch 16: bitwise")
    (line,) = generation_lines(rows)
    assert line == (f"generation recipes of {len(rows)} image sets vs eager batch 1: 8 PSNR >= 40 dB, 4 bitwise, "
                    "4 refused (lowest PSNR 47.9 dB)")
    assert generation_lines([{**rows[0], "requested": "eager batch 1"}]) == []
