"""Numeric options are range-checked where options are built: a bad value is a usage error naming it (issue 21)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from quantfake.generators import GENERATORS
from quantfake.options import build_options

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(("raw", "expected"), [
    ({"n_images": "0"}, "--n-images 0: accepted an integer >= 1"),
    ({"n_images": "-3"}, "--n-images -3: accepted an integer >= 1"),
    ({"n_real": "0"}, "--n-real 0: accepted an integer >= 1"),
    ({"n_calibration": "0"}, "--n-calibration 0: accepted an integer >= 1"),
    ({"strength": "-0.5", "modes": "txt2img"}, "--strength -0.5: accepted a number in (0, 1]"),
    ({"strength": "1.5", "modes": "txt2img"}, "--strength 1.5: accepted a number in (0, 1]"),
    ({"strength": "0"}, "--strength 0.0: accepted a number in (0, 1]"),
    ({"size": "63"}, "--size 63: sd15 (tiny profile) accepts a positive multiple of 8"),
    ({"size": "0"}, "--size 0: accepted an integer >= 1"),
    ({"steps": "0"}, "--steps 0: accepted an integer >= 1"),
    ({"batch_size": "0"}, "--gen-batch-size 0: accepted an integer >= 1"),
    ({"seed": "-1"}, "--seed -1: accepted an integer >= 0"),
    ({"guidance": "nan"}, "--guidance nan"),
    ({"steps": "four"}, "--steps 'four' is not an integer; accepted: an integer >= 1"),
    ({"n_boot": "5"}, "--n-boot 5: accepted 0 (no CIs; the gate then checks tolerances only) or >= 40"),
    ({"strength": "0.1", "steps": "4"}, "int(4 x 0.1) = 0 denoising steps"),
])
def test_bad_numbers_are_refused_naming_the_value_and_the_range(raw: dict, expected: str) -> None:
    with pytest.raises(ValueError) as err:  # quantfake.errors.OptionError, a usage error in the bench
        build_options(raw)
    assert expected in str(err.value)


def test_zero_never_means_the_default() -> None:
    for key in ("steps", "size", "n_images"):
        with pytest.raises(ValueError, match=f"--{key.replace('_', '-')} 0"):
            build_options({"generators": "sd3", key: "0"})
    given = build_options({"generators": "sd3", "steps": "8", "size": "128", "seed": "0"})
    assert (given.steps, given.size, given.seed) == (8, 128, 0)


def test_size_multiple_follows_the_generator_and_profile() -> None:
    from quantfake.validation import size_multiple

    assert {g: size_multiple(s, "tiny") for g, s in GENERATORS.items()} == dict.fromkeys(GENERATORS, 8)
    full = {g: size_multiple(s, "pretrained") for g, s in GENERATORS.items()}
    assert full["sd15"] == full["sdxl"] == 8 and full["sd3"] == full["flux"] == 16
    with pytest.raises(ValueError, match="--size 1000: sd3 .*multiple of 16.*e.g. 992 or 1008"):
        build_options({"profile": "pretrained", "generators": "sd3", "size": "1000"})
    assert build_options({"profile": "pretrained", "generators": "sd3", "size": "1008"}).size == 1008


def test_n_boot_zero_cannot_write_baselines() -> None:
    assert build_options({"n_boot": "0"}).n_boot == 0
    with pytest.raises(ValueError, match="--n-boot 0 with --update-baselines: baselines need standard errors"):
        build_options({"n_boot": "0", "update_baselines": True})


def test_the_bench_refuses_a_bad_number_before_any_work() -> None:
    proc = subprocess.run([sys.executable, "-m", "pytest", "bench/test_detection.py", "--collect-only", "-q",
                           "-p", "no:cacheprovider", "--n-images", "0"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 4, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "--n-images 0: accepted an integer >= 1" in proc.stderr and "Traceback" not in proc.stderr
