"""The store checks what it reads: a generated image's entry is whole and its bytes are what its manifest says.

An entry is ``<seed>.json`` (the manifest, with the PNG's and the latent's SHA-256), ``<seed>.latent.npy`` and
``<seed>.png`` (written last). A truncated file, a manifest that does not parse, or a PNG / latent whose bytes no
longer hash to the manifest (replaced, edited, bit-rotted) is *corrupt*: it is moved aside to
``<store>/quarantine/`` and regenerated, and the move is reported with its path; with ``repair=False`` (``--no-repair``)
the run stops instead with :class:`~quantfake.errors.CorruptStoreError` naming every file.
"""

from __future__ import annotations

import io
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from quantfake.errors import CorruptStoreError
from quantfake.store import sha256_bytes


@dataclass(frozen=True)
class StoreRepair:
    """A corrupt entry found in the store: what was wrong and where its files went."""

    path: str
    reason: str
    quarantined_to: str | None = None  # None with --no-repair (nothing moved)

    def as_record(self) -> dict[str, Any]:
        return {"path": self.path, "reason": self.reason, "quarantined_to": self.quarantined_to}


def entry_files(folder: Path, seed: int) -> list[Path]:
    """The files of one entry, manifest first."""
    return [folder / f"{seed}.json", folder / f"{seed}.latent.npy", folder / f"{seed}.png"]


def entry_problem(folder: Path, seed: int) -> tuple[Path, str] | None:
    """``(file, reason)`` when the entry of ``seed`` is present but not whole and true to its manifest, else None.

    An entry whose PNG is absent is incomplete, not corrupt (an interrupted run): generation simply makes it.
    """
    manifest_path, latent_path, png_path = entry_files(folder, seed)
    if not png_path.exists():
        return None
    try:
        manifest = json.loads(manifest_path.read_text())
        expected = manifest["sha256"]
    except FileNotFoundError:
        return manifest_path, "manifest missing (the image has no record of what made it)"
    except (ValueError, KeyError, TypeError) as exc:
        return manifest_path, f"manifest unreadable ({type(exc).__name__}: {exc})"
    data = png_path.read_bytes()
    if sha256_bytes(data) != expected:
        return png_path, f"PNG bytes do not hash to the manifest's sha256 {expected[:12]}... (truncated or replaced)"
    latent_sha = manifest.get("latent_sha256")
    if latent_sha is not None:
        if not latent_path.exists():
            return latent_path, "latent missing"
        if sha256_bytes(latent_path.read_bytes()) != latent_sha:
            return latent_path, f"latent bytes do not hash to the manifest's latent_sha256 {latent_sha[:12]}..."
    return None


def check_entries(folder: Path, seeds: list[int], quarantine_root: Path, repair: bool = True) -> list[StoreRepair]:
    """Find the corrupt entries among ``seeds``; move them aside (``repair``) or raise naming every one."""
    problems = [(seed, found) for seed in seeds if (found := entry_problem(folder, seed)) is not None]
    if not problems:
        return []
    if not repair:
        lines = "\n  ".join(f"{path}: {reason}" for _seed, (path, reason) in problems)
        raise CorruptStoreError(f"{len(problems)} corrupt store entr{'y' if len(problems) == 1 else 'ies'}:\n  {lines}\n"
                                "Run without --no-repair to move them to quarantine and regenerate them.")
    stamp = time.strftime("%Y%m%dT%H%M%S")
    repairs = []
    for seed, (path, reason) in problems:
        target = quarantine_root / folder.name / stamp
        target.mkdir(parents=True, exist_ok=True)
        for file in entry_files(folder, seed):
            if file.exists():
                os.replace(file, target / file.name)
        repairs.append(StoreRepair(str(path), reason, str(target)))
    return repairs


def read_verified_image(path: Path, sha256: str) -> Image.Image:
    """The RGB pixels of ``path`` decoded from the very bytes that hash to ``sha256``.

    What is scored is what the score cache is keyed by: a file changed since its entry was checked raises
    :class:`CorruptStoreError` instead of being scored under the old hash.
    """
    data = Path(path).read_bytes()
    if sha256_bytes(data) != sha256:
        raise CorruptStoreError(f"{path}: bytes changed since the store checked them (sha256 no longer "
                                f"{sha256[:12]}...); rerun to regenerate the entry")
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")
