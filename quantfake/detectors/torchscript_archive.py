"""Read the tensors of a TorchScript archive (``torch.jit.save``) without running any of its code.

Why: OpenAI's ``ViT-L-14.pt`` (what UnivFD's ``clip.load`` reads) is a TorchScript archive, which
``torch.load(weights_only=True)`` refuses and ``torch.jit.load`` would compile and instantiate. The
archive is a zip: ``<name>/data.pkl`` pickles the module tree (each module a ``__torch__.*`` object
whose state is a dict of attributes) and ``<name>/data/<key>`` holds the raw storages. This unpickler
accepts only those module placeholders, tensor rebuilds, storage types, ``OrderedDict`` and the
``torch.jit._pickle`` list builders (replaced by a function that returns its argument); any other
global is refused with :class:`~.checkpoints.UnsafeCheckpoint` naming it. Nothing from ``code/`` is read.
"""

from __future__ import annotations

import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from .checkpoints import UnsafeCheckpoint

#: Storage classes a TorchScript archive names, and the dtype of their elements.
_STORAGE_DTYPES: dict[str, torch.dtype] = {
    "FloatStorage": torch.float32, "HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}
_TENSOR_REBUILDS = {"_rebuild_tensor_v2": torch._utils._rebuild_tensor_v2}
#: ``torch.jit._pickle`` helpers that typed list / tagged attributes go through; all return their data as is.
_JIT_PICKLE = {"build_intlist", "build_tensorlist", "build_doublelist", "build_boollist", "build_genericlist"}


def _as_is(value: Any, *_type_tag: Any) -> Any:
    return value


class _Module:
    """Stands for a ``__torch__.*`` object: keeps the attribute dict it is built with, runs nothing."""

    def __init__(self, *_args: Any) -> None:
        self.attrs: dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:
        self.attrs = dict(state) if isinstance(state, dict) else {}


class _StorageType:
    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


class _ArchiveUnpickler(pickle.Unpickler):
    def __init__(self, archive: zipfile.ZipFile, prefix: str, path: Path) -> None:
        super().__init__(archive.open(f"{prefix}data.pkl"))
        self.archive, self.prefix, self.path = archive, prefix, path

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("__torch__"):
            return _Module
        if module == "torch._utils" and name in _TENSOR_REBUILDS:
            return _TENSOR_REBUILDS[name]
        if module == "torch.jit._pickle" and (name in _JIT_PICKLE or name == "restore_type_tag"):
            return _as_is
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        raise UnsafeCheckpoint(f"{self.path}: the TorchScript archive's data.pkl names {module}.{name}, which is not a "
                               "module, tensor or storage; refusing to read it")

    def persistent_load(self, pid: Any) -> Any:
        kind, storage_type, key, _location, numel = pid
        if kind != "storage" or not isinstance(storage_type, _StorageType):
            raise UnsafeCheckpoint(f"{self.path}: unexpected persistent id {pid!r} in data.pkl")
        raw = bytearray(self.archive.read(f"{self.prefix}data/{key}"))
        found = len(raw) // torch.empty((), dtype=storage_type.dtype).element_size()
        if found != numel:
            raise ValueError(f"{self.path}: storage {key} holds {found} elements, data.pkl says {numel}")
        untyped = torch.UntypedStorage.from_buffer(raw, dtype=torch.uint8) if raw else torch.UntypedStorage(0)
        return torch.storage.TypedStorage(wrap_storage=untyped, dtype=storage_type.dtype, _internal=True)


def is_torchscript_archive(path: Path | str) -> bool:
    """A zip with ``<name>/data.pkl`` and ``<name>/code/``: what ``torch.jit.save`` writes."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any(n.endswith("/data.pkl") for n in names) and any("/code/" in n for n in names)


def read_torchscript_tensors(path: Path | str) -> dict[str, torch.Tensor]:
    """``{dotted.name: tensor}`` for every tensor attribute of the archived module tree (its state dict)."""
    path = Path(path)
    with zipfile.ZipFile(path) as archive:
        pkl = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise ValueError(f"{path} is not a TorchScript archive (expected one <name>/data.pkl, found {pkl})")
        prefix = pkl[0][: -len("data.pkl")]
        if f"{prefix}byteorder" in archive.namelist() and archive.read(f"{prefix}byteorder") != b"little":
            raise ValueError(f"{path}: a big-endian TorchScript archive; only little-endian ones are read")
        root = _ArchiveUnpickler(archive, prefix, path).load()
    if not isinstance(root, _Module):
        raise ValueError(f"{path}: data.pkl holds a {type(root).__name__}, expected a scripted module")
    tensors: dict[str, torch.Tensor] = {}
    _collect(root, "", tensors)
    return tensors


def _collect(node: _Module, prefix: str, out: dict[str, torch.Tensor]) -> None:
    for name, value in node.attrs.items():
        if isinstance(value, torch.Tensor):
            out[prefix + name] = value
        elif isinstance(value, _Module):
            _collect(value, f"{prefix}{name}.", out)
