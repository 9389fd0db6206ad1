"""The declared layers of quantfake, bottom to top, and the check that the imports keep to them.

A module may import its own layer and any layer below it, never one above: the measurement primitives and the
registries stay importable without the engines on top of them, and the faces (CLI, report) are the only place
that sees everything. Every import counts, those inside functions too (a lazy import is still a dependency);
only ``if TYPE_CHECKING:`` blocks are left out. The library never imports pytest. ``tests/test_layers.py`` runs
:func:`check` in CI; a module missing from :data:`LAYERS` is an error too, so each new module is given a place.

Standard library only (``ast``), so the check costs milliseconds and imports nothing it reads.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "quantfake"
#: Imported nowhere in the library: tests and the pytest plugin (``fixtures/``) hold everything pytest.
FORBIDDEN = ("pytest", "_pytest")

#: Layers bottom to top; each entry a module or a package (every module under it). The longest entry matching a
#: module places it, so a submodule can sit apart from its package.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("foundation", ("quantfake", "quantfake.errors", "quantfake.measure", "quantfake.store", "quantfake.environment",
                    "quantfake.image_io", "quantfake.integrity", "quantfake.packing", "quantfake.cpu_affinity", "quantfake.latency_stats", "quantfake.auc",
                    "quantfake.layers")),
    ("registries", ("quantfake.profiles", "quantfake.precisions", "quantfake.generators", "quantfake.grids",
                    "quantfake.detectors.registry", "quantfake.detectors.preprocessing",
                    "quantfake.detector_precisions", "quantfake.perturbations", "quantfake.presets",
                    "quantfake.prompts", "quantfake.option_specs", "quantfake.validation", "quantfake.options")),
    ("models", ("quantfake.detectors", "quantfake.backends", "quantfake.precision_apply", "quantfake.ptq",
                "quantfake.detector_quant", "quantfake.tiny", "quantfake.fullsize", "quantfake.loading",
                "quantfake.generate", "quantfake.memory_fit", "quantfake.memory_placement", "quantfake.recipes",
                "quantfake.realdata", "quantfake.fidelity")),
    ("numbers", ("quantfake.metrics", "quantfake.stats", "quantfake.results", "quantfake.baselines",
                 "quantfake.compare", "quantfake.compare_efficiency", "quantfake.efficiency_gates",
                 "quantfake.generate_record")),
    # the session engine: the parts that run cells (add new session modules here)
    ("session", ("quantfake.session", "quantfake.cells", "quantfake.outcomes",
                 "quantfake.scheduling", "quantfake.plan", "quantfake.distributed")),
    ("faces", ("quantfake.cli", "quantfake.report", "quantfake.session.finish", "quantfake.__main__")),
)


@dataclass(frozen=True)
class Violation:
    """One import that breaks the layering (or a module the map does not place)."""

    module: str
    line: int
    imported: str
    why: str

    def __str__(self) -> str:
        return f"{self.module}:{self.line} imports {self.imported}: {self.why}"


def layer_of(module: str, layers: tuple[tuple[str, tuple[str, ...]], ...] = LAYERS) -> int | None:
    """Index of the layer holding ``module`` (longest matching entry), None when no entry matches."""
    best: tuple[int, int] | None = None
    for index, (_name, entries) in enumerate(layers):
        for entry in entries:
            if module == entry or module.startswith(entry + ".") and entry != PACKAGE:
                if best is None or len(entry) > best[0]:
                    best = (len(entry), index)
    return None if best is None else best[1]


def module_files(root: Path) -> dict[str, Path]:
    """``quantfake.x.y`` -> its file, for every module under the package folder ``root``."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(module: str, path: Path, source: str | None = None) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path``, outside ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(source if source is not None else path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    skipped = {id(n) for block in ast.walk(tree) if _is_type_checking(block) for n in ast.walk(block)}
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[:len(parts) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"


def _is_type_checking(node: ast.AST) -> bool:
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _target(name: str, modules: Iterable[str]) -> str | None:
    """The quantfake module an import name refers to (``from pkg import mod`` or ``from mod import name``)."""
    known = set(modules)
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def check(root: Path, layers: tuple[tuple[str, tuple[str, ...]], ...] = LAYERS,
          sources: dict[str, str] | None = None) -> list[Violation]:
    """Every layering violation under the package folder ``root``; ``sources`` overrides file texts by module
    name (how a test adds an upward import without writing into the package)."""
    files = module_files(root)
    found: list[Violation] = []
    for module, path in files.items():
        own = layer_of(module, layers)
        if own is None:
            found.append(Violation(module, 0, "-", "not placed in quantfake.layers.LAYERS; add it to its layer"))
            continue
        for line, name in imports(module, path, (sources or {}).get(module)):
            if name.split(".")[0] in FORBIDDEN:
                found.append(Violation(module, line, name, "the library never imports pytest"))
                continue
            if not name.startswith(PACKAGE + ".") and name != PACKAGE:
                continue
            target = _target(name, files)
            if target is None or target == module:
                continue
            other = layer_of(target, layers)
            if other is not None and other > own:
                found.append(Violation(module, line, target,
                                       f"upward: {layers[own][0]} may not import {layers[other][0]}"))
    return found
