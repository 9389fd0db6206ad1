"""The declared layers hold (quantfake.layers), an upward import fails the check, and the registries are data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from quantfake.layers import LAYERS, check, layer_of

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "quantfake"
REGISTRIES = ("quantfake.options", "quantfake.precisions", "quantfake.generators", "quantfake.detectors.registry",
              "quantfake.grids", "quantfake.profiles", "quantfake.detector_precisions", "quantfake.option_specs")


def test_the_package_keeps_its_declared_layers() -> None:
    assert [str(v) for v in check(PACKAGE_DIR)] == []


def test_an_added_upward_import_fails_the_check() -> None:
    source = (PACKAGE_DIR / "precisions.py").read_text() + "\nfrom quantfake.session.efficiency import runner\n"
    found = check(PACKAGE_DIR, sources={"quantfake.precisions": source})
    assert [(v.module, v.imported) for v in found] == [("quantfake.precisions", "quantfake.session.efficiency.runner")]
    assert "registries may not import session" in str(found[0])


def test_a_lazy_import_counts_and_type_checking_does_not() -> None:
    lazy = (PACKAGE_DIR / "metrics.py").read_text() + "\n\ndef _late():\n    from quantfake.cli import main\n"
    assert [v.imported for v in check(PACKAGE_DIR, sources={"quantfake.metrics": lazy})] == ["quantfake.cli"]
    typing_only = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from quantfake.world import World\n"
                   + (PACKAGE_DIR / "metrics.py").read_text())
    assert check(PACKAGE_DIR, sources={"quantfake.metrics": typing_only}) == []


def test_the_library_never_imports_pytest() -> None:
    source = "import pytest\n" + (PACKAGE_DIR / "stats.py").read_text()
    assert [v.why for v in check(PACKAGE_DIR, sources={"quantfake.stats": source})] == [
        "the library never imports pytest"]


def test_a_module_without_a_layer_is_reported() -> None:
    layers = tuple((name, tuple(e for e in entries if e != "quantfake.stats")) for name, entries in LAYERS)
    assert [v.module for v in check(PACKAGE_DIR, layers)] == ["quantfake.stats"]
    assert layer_of("quantfake.stats", layers) is None
    assert layer_of("quantfake.detectors.registry") < layer_of("quantfake.detectors.loaded")  # the longest entry wins


def test_registries_import_and_validate_without_torch() -> None:
    code = ("import sys\n" + "".join(f"import {m}\n" for m in REGISTRIES)
            + "from quantfake.options import build_options\n"
            + "build_options({'grid': 'ci', 'precisions': 'all', 'detector_precisions': 'all', 'profile': 'tiny'})\n"
            + "from quantfake.precisions import get_precision; get_precision('nf4').dtype\n"
            + "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=PACKAGE_DIR.parent).stdout
    assert out.strip() == "[]"
