"""Options and the command line: bad ids are usage errors naming the valid ids; registries drive the cells."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from quantfake.cells import CellSpec, detection_cells, detector_precision_cells, fidelity_cells
from quantfake.cli import main
from quantfake.errors import UnknownIdError
from quantfake.generators import GENERATORS
from quantfake.option_specs import BENCH_OPTIONS, GENERATE_OPTIONS
from quantfake.options import build_options

ROOT = Path(__file__).resolve().parent.parent


def test_unknown_generator_lists_valid_ids() -> None:
    with pytest.raises(UnknownIdError) as err:
        build_options({"generators": "sd3,sd9"})
    assert "'sd9'" in str(err.value) and all(g in str(err.value) for g in GENERATORS)


def test_profile_defaults_and_all() -> None:
    o = build_options({"generators": "all", "precisions": "fp32,nf4"})
    assert o.generators == tuple(GENERATORS) and o.precisions == ("fp32", "nf4")
    assert o.size == 64 and o.steps == 4


def test_cells_come_from_registries_with_readable_ids() -> None:
    o = build_options({"generators": "sd3", "precisions": "fp32,nf4", "detectors": "npr",
                       "detector_precisions": "int8", "perturbations": "none,jpeg75"})
    ids = [c.id for c in detection_cells(o)]
    assert "sd3-nf4-txt2img-npr" in ids and "sd3-nf4-img2img-npr-jpeg75" in ids and len(ids) == 2 * 2 * 2
    assert [c.id for c in fidelity_cells(o)] == ["sd3-nf4-txt2img", "sd3-nf4-img2img"]
    assert [c.id for c in detector_precision_cells(o)] == ["sd3-fp32-txt2img-npr@int8"]
    assert CellSpec("detection", "sd3", "nf4", "txt2img", "npr").group == "sd3-nf4"


def test_cli_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "sd35l" in out and "LLM.int8" in out and "npr" in out
    assert main(["doctor"]) == 0
    assert "nf4" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["bogus"])
    assert exc.value.code == 2


def test_pytest_usage_error_on_unknown_precision() -> None:
    proc = subprocess.run([sys.executable, "-m", "pytest", "bench/test_fidelity.py", "--collect-only", "-q",
                           "-p", "no:cacheprovider", "--precisions", "fp32,fp9"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "fp9" in proc.stderr and "nf4" in proc.stderr


def test_bench_and_generate_options_come_from_one_registry(pytestconfig: pytest.Config) -> None:
    from quantfake.distributed import parse_args

    for option in BENCH_OPTIONS:  # every spec is a pytest option under its build_options key
        pytestconfig.getoption(option.key)
    raw, _ = parse_args(["--n-images", "3", "--gen-batch-size", "2", "--compile"])
    assert set(raw) == {o.key for o in GENERATE_OPTIONS} and set(raw) < {o.key for o in BENCH_OPTIONS}
    assert (raw["n_images"], raw["batch_size"], raw["compile"], raw["steps"]) == ("3", "2", True, "")


def test_cli_subcommands_pass_their_arguments_through(monkeypatch: pytest.MonkeyPatch) -> None:
    import quantfake.cli as cli

    seen: list[list[str]] = []
    monkeypatch.setitem(cli.COMMANDS, "plan", cli.Command("plan", lambda argv: seen.append(argv) or 0))
    assert main(["plan", "--from", "x.json", "-h", "--gpus", "2"]) == 0
    assert seen == [["--from", "x.json", "-h", "--gpus", "2"]]  # options and -h reach the command's own parser
    assert main([]) == 2  # no command: the command list, exit 2


def test_python_dash_m_quantfake_lists_every_command():
    """``python -m quantfake -h`` (no console script needed) names each registered command."""
    import subprocess
    import sys

    from quantfake.cli import COMMANDS

    out = subprocess.run([sys.executable, "-m", "quantfake", "-h"], capture_output=True, text=True, check=True).stdout
    assert all(name in out for name in COMMANDS)
