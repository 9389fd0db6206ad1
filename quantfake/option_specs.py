"""Every option of a bench run, once: ``pytest bench`` (``quantfake run``) and ``quantfake generate`` are built
from this list, so a flag, its help and its :func:`quantfake.options.build_options` key are written in one place.

Data only: values arrive as strings ("" when not given) and :mod:`quantfake.options` validates them.
"""

from __future__ import annotations

from dataclasses import dataclass

from quantfake.profiles import TINY_SIZE, TINY_STEPS

#: Where run records are kept and baselines read: one default for the bench, ``report`` and ``compare``.
DEFAULT_HISTORY_DIR = "reports/history"
DEFAULT_BASELINES_DIR = "baselines"


@dataclass(frozen=True)
class OptionSpec:
    """One command-line option: its flag, help, and the key :func:`~quantfake.options.build_options` reads."""

    name: str  # the flag, e.g. ``--n-images``
    help: str
    dest: str = ""  # the raw option key; default: the flag without dashes, ``-`` -> ``_``
    flag: bool = False  # a switch (store_true) instead of a value
    generate: bool = False  # also an option of ``quantfake generate`` (what decides the images)

    @property
    def key(self) -> str:
        return self.dest or self.name.lstrip("-").replace("-", "_")

    def argparse_kwargs(self) -> dict[str, object]:
        """Keyword arguments for ``argparse`` / pytest ``addoption`` (same spelling for both)."""
        if self.flag:
            return {"dest": self.key, "action": "store_true", "default": False, "help": self.help}
        return {"dest": self.key, "default": "", "help": self.help}


BENCH_OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec("--profile", "weights profile: tiny (offline, CPU), random (full-size, no weights), "
                            "pretrained", generate=True),
    OptionSpec("--preset", "a published protocol's option defaults, e.g. study (given options win)"),
    OptionSpec("--img2img-steps", "img2img denoising steps (default: --steps)"),
    OptionSpec("--grid", "full (every combination), ci (covering subset: every id once), quick; default: ci, or "
                         "full when ids or -k select cells"),
    OptionSpec("--generators", "comma-separated generator ids, or 'all' (default: all)", generate=True),
    OptionSpec("--precisions", "comma-separated precision ids (default: "
                               "fp32,fp16,bf16,fp8,int8,nf4,fp4)", generate=True),
    OptionSpec("--modes", "txt2img,img2img (default: both)", generate=True),
    OptionSpec("--detectors", "comma-separated detector ids (default: all)"),
    OptionSpec("--perturbations", "robustness axis, e.g. none,jpeg75,resize0.5 (default: none)"),
    OptionSpec("--detector-precisions", "detector precisions for bench/test_detector_precision.py, e.g. int8,w4,w2"),
    OptionSpec("--representations", "detector inputs: rgb,npr (npr only for r50nodown, r50tf; default: rgb)"),
    OptionSpec("--n-images", "fakes per generator x precision x mode (profile default)", generate=True),
    OptionSpec("--n-real", "evaluated real images (profile default)", generate=True),
    OptionSpec("--n-calibration", "held-out real images for threshold calibration", generate=True),
    OptionSpec("--steps", f"denoising steps (default: tiny {TINY_STEPS}, else the generator's)", generate=True),
    OptionSpec("--size", f"image side in pixels (default: tiny {TINY_SIZE}, else native)", generate=True),
    OptionSpec("--guidance", "guidance scale (default: the generator's)", generate=True),
    OptionSpec("--strength", "img2img strength (default 0.6)", generate=True),
    OptionSpec("--gen-batch-size", "images per generation call (profile default; > 1 is checked against eager "
                                   "batch 1 per generator x precision, see --compile)", dest="batch_size", generate=True),
    OptionSpec("--n-boot", "bootstrap resamples for CIs: 0 (none; the gate then checks tolerances only) or >= 40"),
    OptionSpec("--seed", "seed offset (default 0)", generate=True),
    OptionSpec("--device", "cpu or cuda (default: cuda when available)", generate=True),
    OptionSpec("--cpu-affinity", "auto (default): each process of a multi-process launch (pytest -n N workers, "
               "quantfake generate ranks) gets its own whole cores, near its GPU's NUMA node, and as many torch "
               "threads; none: as launched (use it when another launch shares the host; on a CPU the thread count "
               "keys the images)", generate=True),
    OptionSpec("--vram-budget", "GiB of GPU memory a cell may use: picks offload / VAE slicing or tiling / batch "
                                "size to fit, caps torch's allocator there, refuses what cannot fit", generate=True),
    OptionSpec("--store", "store folder (default $QUANTFAKE_STORE or .quantfake)", generate=True),
    OptionSpec("--model-root", "folder with diffusers model folders (pretrained profile)", generate=True),
    OptionSpec("--weights-dir", "folder with detector checkpoints (pretrained profile)"),
    OptionSpec("--detector-weights", "which public checkpoint a detector reads, DETECTOR=CHOICE comma-separated, "
                                     "e.g. r50nodown=corvi2023 (`quantfake models` lists the choices)"),
    OptionSpec("--gguf-dir", "folder with your own <generator>.gguf denoiser files (precision gguf)"),
    OptionSpec("--real-dir", "folder of real images (default in tiny: shipped photographs)", generate=True),
    OptionSpec("--prompts", "text file, one prompt a line (default: the built-in 16); recorded by hash"),
    OptionSpec("--inception-weights", "folder holding the FID Inception weights file"),
    OptionSpec("--history", "run-record history folder (default reports/history)"),
    OptionSpec("--baselines-dir", "baselines folder (default baselines/)"),
    OptionSpec("--compile", "torch.compile the denoiser: efficiency cells, and generation "
                            "wherever its images match eager batch 1 (bitwise or PSNR >= 40 dB, checked per "
                            "generator x precision; else refused, recorded)", flag=True, generate=True),
    OptionSpec("--quantize-text-encoders", "quantize the text encoders too, not only the "
                                           "denoiser", flag=True, generate=True),
    OptionSpec("--trust-checkpoints", "allow detector checkpoints that need pickle code execution "
                                      "(unsafe)", flag=True),
    OptionSpec("--no-repair", "stop on a corrupt store entry (naming it) instead of "
                              "quarantining and regenerating it", flag=True, generate=True),
    OptionSpec("--match-format", "re-encode reals and fakes the same way (JPEG q95) to remove the format "
                                 "confound", flag=True),
    OptionSpec("--update-baselines", "rewrite baselines/<profile>.json for the cells that ran and print "
                                     "the diff", flag=True),
    OptionSpec("--no-report", "do not write reports/<run-id>/ at the end of the session", flag=True),)

#: The options ``quantfake generate`` shares with the bench: same spelling, same ``build_options`` key.
GENERATE_OPTIONS: tuple[OptionSpec, ...] = tuple(o for o in BENCH_OPTIONS if o.generate)
