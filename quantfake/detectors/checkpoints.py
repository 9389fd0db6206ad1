"""Finding, hashing and safely loading detector checkpoints.

Checkpoints are data: ``.safetensors`` is read with safetensors, ``.pth``/``.pt`` with
``torch.load(weights_only=True)``.  A pickle that needs code execution is refused with
:class:`UnsafeCheckpoint` unless the caller explicitly trusts it (``--trust-checkpoints``).
Upstream wrappers (``{'model': ...}``, ``{'state_dict': ...}``, ``{'net': ...}``,
``module.`` prefixes from DataParallel) are unwrapped explicitly, never guessed silently.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from quantfake.errors import MissingWeightsError, UserError

WRAPPER_KEYS: tuple[str, ...] = ("model", "state_dict", "net")
SAFE_SUFFIXES: tuple[str, ...] = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")


class MissingWeights(MissingWeightsError):
    """Checkpoint not on this machine; the message lists every path searched (tests skip on it)."""

    def __init__(self, what: str, searched: Iterable[object], hint: str = "") -> None:
        super().__init__(what, searched, hint)


class UnsafeCheckpoint(UserError, RuntimeError):
    """A pickle checkpoint that ``torch.load(weights_only=True)`` refuses: it wants to run code (an expected
    error: shown as its message, which names the file and ``--trust-checkpoints``, not as a traceback)."""


@dataclass(frozen=True)
class LoadedCheckpoint:
    path: Path
    sha256: str
    state_dict: dict[str, torch.Tensor]


def find_checkpoint(weights_dir: Path | str | None, names: Sequence[str], what: str) -> Path:
    """First existing ``weights_dir / name``; :class:`MissingWeights` naming all candidates otherwise."""
    if weights_dir is None:
        raise MissingWeights(what, names, hint="no weights dir given (pass --weights-dir)")
    candidates = [Path(weights_dir) / name for name in names]
    for path in candidates:
        if path.is_file():
            return path
    raise MissingWeights(what, candidates)


def file_sha256(path: Path | str, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def read_checkpoint(path: Path | str, trust: bool = False) -> Any:
    """Deserialize without executing code unless ``trust``; returns the raw object."""
    path = Path(path)
    if not path.is_file():
        raise MissingWeights(str(path.name), [path])
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    if path.suffix not in SAFE_SUFFIXES:
        raise ValueError(f"unknown checkpoint format {path.suffix!r} for {path}; accepted: {', '.join(SAFE_SUFFIXES)}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if not trust:
            raise UnsafeCheckpoint(
                f"{path} is a pickle that needs code execution to load (weights_only=True refused it: "
                f"{_refusal(err)}). Only if you trust its source, pass --trust-checkpoints "
                "(trust_checkpoints=True) to load it with weights_only=False."
            ) from None
    return torch.load(path, map_location="cpu", weights_only=False)


def _refusal(err: Exception) -> str:
    """The line of torch's refusal that says what the pickle wanted (e.g. "Unsupported global: GLOBAL print ..."),
    without torch's paragraphs of advice."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    reason = next((line for line in lines if "WeightsUnpickler error" in line), lines[0] if lines else repr(err))
    return reason.removeprefix("WeightsUnpickler error: ").split(". Please")[0].rstrip(".")


def unwrap_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    """Upstream wrapper -> flat ``{name: tensor}``, stripping a uniform ``module.`` prefix."""
    for key in WRAPPER_KEYS:
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping):
        raise TypeError(f"checkpoint holds a {type(obj).__name__}, expected a state dict (mapping of tensors)")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ValueError(f"checkpoint mapping holds no tensors; its keys: {sorted(map(str, obj))[:20]}")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


def load_checkpoint(path: Path | str, trust: bool = False) -> LoadedCheckpoint:
    """Hash, read safely and unwrap a checkpoint file."""
    path = Path(path)
    sha = file_sha256(path)
    return LoadedCheckpoint(path=path, sha256=sha, state_dict=unwrap_state_dict(read_checkpoint(path, trust)))


def save_state_dict(state_dict: Mapping[str, torch.Tensor], path: Path | str, metadata: dict[str, str] | None = None) -> str:
    """Atomically write a safetensors file; returns its SHA-256.

    ``metadata`` is packed into ONE header entry (sorted JSON): safetensors writes several
    entries in hash-map order, which would make identical weights hash differently.
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".safetensors.tmp")
    os.close(fd)
    try:
        packed = {"quantfake": json.dumps(metadata, sort_keys=True)} if metadata else None
        save_file(tensors, tmp, metadata=packed)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return file_sha256(path)
