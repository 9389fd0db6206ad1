"""``quantfake`` command line: one subcommand per job, each with its own options (:data:`COMMANDS`).

``quantfake run`` is the main job: it runs the bench cells through pytest (so the same cells, ids, options
and baselines serve CI and people), records the run in the history and writes the report.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent.parent / "bench"


def _selects_cells(argv: list[str]) -> bool:
    """Whether ``argv`` picks a grid or cells itself (``--grid``, an axis option, ``-k`` / ``-m``, a node id)."""
    from quantfake.grids import AXES

    flags = {"--grid", "-k", "-m", *(f"--{a.replace('_', '-')}" for a in AXES)}
    return any(a.split("=", 1)[0] in flags or (a.startswith(("-k", "-m")) and len(a) > 2) or "::" in a
               for a in argv)


def _run(argv: list[str]) -> int:
    """Forward to ``pytest bench``; everything after ``run`` is a pytest / quantfake option.

    pytest runs as a child process (``python -m pytest``): the library never imports pytest (quantfake.layers).
    """
    import subprocess

    bench = BENCH_DIR if BENCH_DIR.exists() else Path("bench")
    if not bench.exists():
        print(f"quantfake run: no bench/ folder at {BENCH_DIR} or ./bench; run it from a quantfake checkout",
              file=sys.stderr)
        return 2
    args = [str(bench), "-p", "no:cacheprovider", *argv]
    if not _selects_cells(argv):
        args += ["--grid", "quick"]  # the first run shows what quantfake is for, in minutes; --grid full for all
    if not any(a.startswith("--rootdir") for a in argv):
        args += ["--rootdir", str(bench.parent)]
    if (bench.parent / "pyproject.toml").exists() and not any(a in ("-c", "--config-file") for a in argv):
        args += ["-c", str(bench.parent / "pyproject.toml")]  # the checkout's pytest settings, from anywhere
    return subprocess.call([sys.executable, "-m", "pytest", *args])


def _models(argv: list[str]) -> int:
    """List every registry with what each id means (the single source of truth, printed)."""
    from tabulate import tabulate

    from quantfake.detector_precisions import DETECTOR_PRECISIONS
    from quantfake.detectors import DETECTORS
    from quantfake.generators import GENERATORS
    from quantfake.precisions import PRECISIONS

    print(tabulate([(g.id, g.name, g.hub_id, g.denoiser_class, g.native_size, g.default_steps, g.default_guidance)
                    for g in GENERATORS.values()],
                   headers=["generator", "name", "hub id", "denoiser", "size", "steps", "guidance"]))
    print()
    print(tabulate([(p.id, p.kind, p.description, p.study_name or "", "CUDA" if p.requires_cuda else "")
                    for p in PRECISIONS.values()],
                   headers=["precision", "kind", "what it is", "study's name", "needs"]))
    print()
    print(tabulate([(d.id, d.name, d.upstream_repo) for d in DETECTORS.values()],
                   headers=["detector", "name", "upstream"]))
    print()
    print("What --weights-dir holds, per detector (the first path found of each choice is read; "
          "--detector-weights ID=CHOICE picks another choice):")
    print(tabulate([(d.id, w.id + (" (default)" if i == 0 and len(d.weights) > 1 else ""), "\n".join(w.files),
                     w.source, w.layout) for d in DETECTORS.values() for i, w in enumerate(d.weights)],
                   headers=["detector", "weights choice", "file(s) under --weights-dir", "public source", "layout"],
                   maxcolwidths=[None, None, 45, 60, 40]))
    print()
    print(tabulate([(d.id, d.tower.dir + "/", _tower_expectation(d.full_config), d.tower.source, d.tower.layout,
                     f"--format {d.tower.import_format}")
                    for d in DETECTORS.values() if d.tower],
                   headers=["detector", "CLIP tower folder under --weights-dir", "expected", "public source", "layout",
                            "quantfake import-weights"], maxcolwidths=[None, None, 14, 40, 28, None]))
    print("  quantfake import-weights --format FORMAT --source FILE --weights-dir DIR converts a public tower there")
    print()
    print(tabulate([(p.id, getattr(p, "description", "")) for p in DETECTOR_PRECISIONS.values()],
                   headers=["detector precision", "what it is"]))
    return 0


def _tower_expectation(cfg: dict) -> str:
    """``ViT 1024x24 /14 224px gelu``: the tower config a folder is checked against."""
    return (f"ViT {cfg['hidden_size']}x{cfg['num_hidden_layers']} /{cfg['patch_size']} {cfg['image_size']}px "
            f"{cfg['hidden_act']}")


def _doctor(argv: list[str]) -> int:
    """What this machine can run: device, packages, which precisions are available and why not."""
    import torch

    from quantfake.environment import collect_environment
    from quantfake.loading import resolve_device
    from quantfake.precisions import PRECISIONS, precision_note, unavailable_reason

    env = collect_environment()
    device = resolve_device(None)
    print(f"device: {device} ({env.get('gpu') or env.get('cpu')}), torch {torch.__version__}, cuda {env.get('cuda')}")
    for name, version in env["packages"].items():
        print(f"  {name:14s} {version or 'not installed'}")
    print("precisions:")
    for p in PRECISIONS.values():
        reason = unavailable_reason(p, device)
        note = precision_note(p)
        print(f"  {p.id:11s} {'ok' if reason is None else 'unavailable: ' + reason}{note}")
    return 0


def _forward(module: str) -> Callable[[list[str]], int]:
    """A command whose own parser lives in ``module`` (its ``main(argv)``): the arguments pass through untouched."""

    def handler(argv: list[str]) -> int:
        return int(importlib.import_module(module).main(argv) or 0)

    return handler


def _make_random_root(argv: list[str]) -> int:
    """Save full-size random pipelines once as a model root that ``--profile pretrained`` reads like real weights."""
    from quantfake.errors import UnknownIdError
    from quantfake.generators import GENERATORS
    from quantfake.options import parse_ids

    parser = argparse.ArgumentParser(prog="quantfake make-random-root", description=_make_random_root.__doc__)
    parser.add_argument("--generators", required=True, help=f"comma-separated ids or 'all': {', '.join(GENERATORS)}")
    parser.add_argument("--root", required=True, type=Path, help="model root; each lands at ROOT/<hub id>")
    parser.add_argument("--device", default=None, help="where weights are drawn (default: cuda if visible, else cpu)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        generators = parse_ids(args.generators, "generator", GENERATORS, ())
    except UnknownIdError as exc:
        parser.error(str(exc))
    from quantfake.fullsize import ensure_random_model_root, read_marker
    from quantfake.loading import resolve_device

    device = resolve_device(args.device)
    for generator in generators:
        folder = ensure_random_model_root(generator, args.root, device, seed=args.seed)
        print(f"{generator}: {folder} ({read_marker(folder)['model_key']})")
    return 0


@dataclass(frozen=True)
class Command:
    """One subcommand: its help line and what runs it (given every argument after the command's name)."""

    help: str
    handler: Callable[[list[str]], int]


COMMANDS: dict[str, Command] = {
    "run": Command("run the bench cells (pytest bench ...) and write the report", _run),
    "report": Command("write reports/<run-id>/ from a recorded run (file, run id, latest)", _forward("quantfake.report")),
    "compare": Command("compare two recorded runs; exit 1 on a significant regression", _forward("quantfake.compare")),
    "generate": Command("generate the paired images into the store (shardable with accelerate launch)",
                        _forward("quantfake.distributed")),
    "models": Command("list generators, precisions and detectors", _models),
    "doctor": Command("what this machine can run, and why not", _doctor),
    "train": Command("train or fine-tune a detector (e.g. on quantized fakes)", _forward("quantfake.detectors.train")),
    "make-random-weights": Command("write full-size random detectors in the --weights-dir layout (scores mean nothing)",
                                   _forward("quantfake.detectors.random_weights")),
    "import-weights": Command("convert an upstream CLIP tower (open_clip, OpenAI ViT-L-14.pt) into the --weights-dir "
                              "layout", _forward("quantfake.detectors.import_weights")),
    "make-random-root": Command("save full-size random pipelines as a model root (rehearsals, no download)",
                                _make_random_root),
    "plan": Command("predicted wall time and peak VRAM of a grid on N GPUs, from recorded costs",
                    _forward("quantfake.plan")),
}


def build_parser() -> argparse.ArgumentParser:
    """``quantfake COMMAND ARGS...``: one subparser per command; each command parses its own arguments (its
    ``-h`` included), so the subparsers take everything after the name as it is."""
    parser = argparse.ArgumentParser(prog="quantfake", description=__doc__.split("\n\n")[1].replace("\n", " "),
                                     epilog="`quantfake COMMAND -h` shows a command's options.")
    sub = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")
    for name, command in COMMANDS.items():
        # no prefix characters: ``--grid ci`` or ``-h`` after the name reaches the command's own parser untouched
        sub.add_parser(name, help=command.help, add_help=False, prefix_chars="\0").add_argument(
            "args", nargs=argparse.REMAINDER)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)  # an unknown command exits 2 listing the valid ones; -h prints the commands
    if args.command is None:
        parser.print_help()
        return 2
    from quantfake.errors import UserError

    try:
        return COMMANDS[args.command].handler(args.args)
    except UserError as exc:  # expected: one message naming the thing and the fix, no traceback
        print(f"quantfake {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
