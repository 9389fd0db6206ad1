"""What made an artefact: package versions, torch / CUDA, device, git revision."""

from __future__ import annotations

import functools
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

TRACKED_PACKAGES: tuple[str, ...] = (
    "quantfake", "torch", "diffusers", "transformers", "accelerate", "bitsandbytes", "torchao", "optimum-quanto",
    "gguf", "safetensors", "numpy", "scipy", "scikit-learn", "scikit-image", "pillow",
)


@functools.lru_cache(maxsize=1)
def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that change results (None when absent)."""
    out: dict[str, str | None] = {}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


#: Libraries whose version can change a generated pixel at any precision (a precision adds its quantization backend).
GENERATION_PACKAGES: tuple[str, ...] = ("torch", "diffusers", "transformers")


def generation_versions(backend_packages: tuple[str, ...] = ()) -> dict[str, str | None]:
    """Versions that go into a generation key: upgrading any of them regenerates instead of reusing old pixels."""
    versions = package_versions()
    return {name: versions.get(name) for name in (*GENERATION_PACKAGES, *backend_packages)}


@functools.lru_cache(maxsize=1)
def git_revision(cwd: str | None = None) -> str | None:
    """The current commit (with ``+dirty`` when the tree has changes), or None outside a checkout."""
    where = cwd or str(Path.cwd())
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def device_summary() -> dict[str, Any]:
    """torch, CUDA and GPU facts of this process."""
    import torch

    info: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda, "gpu": None,
                            "gpu_capability": None, "cpu": platform.processor() or platform.machine(),
                            "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
    return info


def collect_environment() -> dict[str, Any]:
    """Everything a run record (and any other artefact) stores about where it ran: the run-record schema's keys
    always present (None when unknown); CUDA is recorded only where a GPU was used."""
    env = {"python": platform.python_version(), "platform": platform.platform(), "hostname": platform.node(),
           "packages": package_versions(), "git_revision": git_revision(), **device_summary()}
    if not env.get("gpu"):
        env["cuda"] = None
    return env


def quiet_libraries() -> None:
    """Silence diffusers / transformers info chatter and their per-load progress bars (ours stay)."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
