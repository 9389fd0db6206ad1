"""Store I/O: atomic writes leave old-or-new files only, hashes are stable, concurrent writers lose nothing."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
from pathlib import Path

import pytest

from quantfake.store import (
    Store,
    atomic_dir,
    atomic_write_bytes,
    atomic_write_json,
    config_hash,
    sha256_bytes,
    sha256_file,
)

N_FILES = 50
HASHED = {"generator": "sd15", "precision": "nf4", "steps": 2, "sizes": (64, 128), "nested": {"b": 1, "a": [1, 2]}}


def test_atomic_write_creates_parents_and_replaces(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "x.bin"
    atomic_write_bytes(path, b"first")
    atomic_write_bytes(path, b"second")
    assert path.read_bytes() == b"second"
    assert os.listdir(path.parent) == ["x.bin"]


def test_failed_write_keeps_old_file_and_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "x.json"
    atomic_write_json(path, {"v": 1})

    def broken_replace(src: str, dst: str) -> None:
        assert Path(src).read_bytes() == b"new contents", "the temp file was complete before the rename"
        raise OSError("disk vanished mid-rename")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk vanished"):
        atomic_write_bytes(path, b"new contents")
    with pytest.raises(KeyboardInterrupt):  # an interrupt (BaseException) must clean up too
        monkeypatch.setattr(os, "replace", lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        atomic_write_bytes(path, b"new contents")
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"v": 1}
    assert sorted(os.listdir(tmp_path)) == ["x.json"], "temporary files were left behind"


def test_failed_write_of_new_file_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "replace", lambda *_: (_ for _ in ()).throw(OSError("no")))
    with pytest.raises(OSError):
        atomic_write_bytes(tmp_path / "new.png", b"\x89PNG")
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []


def test_config_hash_is_order_independent_and_discriminating() -> None:
    reordered = {"nested": {"a": [1, 2], "b": 1}, "steps": 2, "sizes": [64, 128], "precision": "nf4",
                 "generator": "sd15"}
    assert config_hash(HASHED) == config_hash(reordered)
    assert len(config_hash(HASHED)) == 12 and len(config_hash(HASHED, length=20)) == 20
    assert config_hash(HASHED, 20).startswith(config_hash(HASHED))
    assert config_hash(HASHED) != config_hash({**HASHED, "steps": 3})
    assert config_hash(HASHED) != config_hash({**HASHED, "nested": {"b": 1, "a": [2, 1]}}), "list order matters"


def test_sha256_helpers_agree(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 + 7)
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert sha256_file(path, chunk=1024) == sha256_bytes(data)


def test_atomic_dir_discards_failed_build(tmp_path: Path) -> None:
    final = tmp_path / "model"
    with pytest.raises(RuntimeError):
        with atomic_dir(final) as tmp:
            (tmp / "half.bin").write_bytes(b"x")
            raise RuntimeError("build failed")
    assert not final.exists()
    assert [p for p in os.listdir(tmp_path) if not p.endswith(".lock")] == []
    with atomic_dir(final) as tmp:
        (tmp / "whole.bin").write_bytes(b"y")
    assert os.listdir(final) == ["whole.bin"]


# --------------------------------------------------------------------------------------------- concurrency


def _writer(root: str, worker: int, queue: mp.Queue) -> None:
    """One process: its own files, shared files under the store lock, a shared folder, and a hash."""
    store = Store(root)
    shared_dir = store.root / "shared"
    for i in range(N_FILES):
        atomic_write_json(store.root / f"own_{worker}" / f"{i}.json", {"worker": worker, "i": i, "pad": "x" * 4096})
        with store.lock("shared"):
            path = shared_dir / f"{i}.json"
            count = json.loads(path.read_text())["writes"] if path.exists() else 0
            atomic_write_json(path, {"i": i, "writes": count + 1, "last": worker, "pad": "y" * 4096})
    with atomic_dir(store.root / "built") as tmp:
        (tmp / "weights.bin").write_bytes(bytes([worker]) * 10_000)
    queue.put(config_hash(HASHED))


def test_concurrent_writers_lose_and_corrupt_nothing(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, queue)) for w in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0]
    hashes = [queue.get(timeout=5) for _ in procs]
    assert hashes == [config_hash(HASHED)] * 2, "config_hash must not depend on the process"

    for worker in (0, 1):
        rows = [json.loads((tmp_path / f"own_{worker}" / f"{i}.json").read_text()) for i in range(N_FILES)]
        assert [(r["worker"], r["i"]) for r in rows] == [(worker, i) for i in range(N_FILES)]
    shared = [json.loads((tmp_path / "shared" / f"{i}.json").read_text()) for i in range(N_FILES)]
    assert [r["writes"] for r in shared] == [2] * N_FILES, "a locked read-modify-write was lost"
    built = (tmp_path / "built" / "weights.bin").read_bytes()
    assert built in (bytes([0]) * 10_000, bytes([1]) * 10_000)
    leftovers = [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".built.")]
    assert leftovers == []


def test_a_saved_pipeline_missing_a_components_weights_is_refused(tmp_path) -> None:
    """What transformers >= 5 leaves on rank 1 of a process group: a text encoder folder with no weights."""
    from quantfake.store import check_saved_pipeline

    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text("{}")
    (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"x")
    (tmp_path / "tokenizer").mkdir()
    (tmp_path / "tokenizer" / "tokenizer_config.json").write_text("{}")
    check_saved_pipeline(tmp_path)
    (tmp_path / "text_encoder").mkdir()
    (tmp_path / "text_encoder" / "config.json").write_text("{}")
    with pytest.raises(RuntimeError, match="text_encoder .* no weights file"):
        check_saved_pipeline(tmp_path)
