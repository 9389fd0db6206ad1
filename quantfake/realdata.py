"""Real images: photographs shipped inside installed packages, and users' own folders.

Why this module exists: a fake-image detector is only meaningful against real
photographs, and the offline "tiny" profile cannot download any. scikit-image
and scikit-learn wheels carry a handful of licensed photographs; cutting random
multi-scale patches from them gives a few hundred distinct, deterministic real
images at 64x64 without a network.

Source choice (see ``PHOTO_SOURCES``):

* Default: the colour natural photographs only (astronaut, coffee, chelsea,
  rocket from ``skimage/data``; china, flower from ``sklearn/datasets/images``).
  Grayscale photos converted to RGB would be a confound against colour fakes,
  so they are opt-in by key and flagged ``grayscale_converted`` in the manifest.
* ``motorcycle_left`` is a colour photo but its licence is not stated in the
  scikit-image docs (Middlebury 2014 stereo set), so it is opt-in too.
* Not used: ``lfw_subset`` (25x25 grayscale crops would need 2.5x upsampling
  plus colour conversion: two confounds), microscopy/retina/astronomy images
  (a different domain from what generators produce), synthetic images.

Licences are quoted from the docstrings of ``skimage.data`` functions and from
``sklearn/datasets/images/README.txt`` of the installed versions.

Format confound: rocket, china and flower are JPEG sources; every manifest row
records ``source_format`` and ``is_jpeg`` so a report can check whether a
detector separates "JPEG vs PNG" rather than "real vs fake".
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from quantfake.image_io import GRAY_MODES, image_sha256, to_rgb

__all__ = [
    "PhotoSource",
    "PHOTO_SOURCES",
    "DEFAULT_SOURCE_KEYS",
    "IMAGE_SUFFIXES",
    "RESIZE_POLICIES",
    "RealSet",
    "tiny_real_set",
    "load_real_dir",
]

LOG = logging.getLogger(__name__)

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
RESIZE_POLICIES: tuple[str, ...] = ("center_crop", "resize", "none")
CROP_SCALES: tuple[float, ...] = (1.0, 1.5, 2.0, 3.0, 4.0)
#: Real images whose shorter side is below this are rejected: a tiny source says nothing about real photographs.
MIN_REAL_SIDE = 32
#: ... and so are those that would be upsampled more than this to reach ``--size`` (the detector would see
#: interpolation, not the photograph).
MAX_REAL_UPSAMPLE = 2.0


@dataclass(frozen=True)
class PhotoSource:
    """One photograph shipped inside an installed Python package."""

    key: str
    package: str  # importable package that holds the file
    filename: str
    licence: str
    attribution: str
    licence_reference: str  # where the licence statement was read
    default: bool = True  # used when no source keys are given

    def path(self) -> Path:
        """Filesystem path of the file inside the installed package (no download)."""
        return Path(str(resources.files(self.package).joinpath(self.filename)))


_SKIMAGE_DOC = "docstring of skimage.data.{}() (scikit-image {})"
_SKLEARN_README = "sklearn/datasets/images/README.txt"

PHOTO_SOURCES: dict[str, PhotoSource] = {
    s.key: s
    for s in (
        PhotoSource("astronaut", "skimage.data", "astronaut.png", "public domain",
                    "NASA (Eileen Collins portrait)", _SKIMAGE_DOC.format("astronaut", "0.26")),
        PhotoSource("coffee", "skimage.data", "coffee.png", "CC0",
                    "Rachel Michetti, courtesy of Pikolo Espresso Bar",
                    _SKIMAGE_DOC.format("coffee", "0.26")),
        PhotoSource("chelsea", "skimage.data", "chelsea.png", "CC0", "Stefan van der Walt",
                    _SKIMAGE_DOC.format("chelsea", "0.26")),
        PhotoSource("rocket", "skimage.data", "rocket.jpg", "public domain",
                    "SpaceX (DSCOVR launch on Falcon 9)", _SKIMAGE_DOC.format("rocket", "0.26")),
        PhotoSource("china", "sklearn.datasets.images", "china.jpg", "CC BY 2.0",
                    "danielbuechele (Flickr)", _SKLEARN_README),
        PhotoSource("flower", "sklearn.datasets.images", "flower.jpg", "CC BY 2.0",
                    "vultilion (Flickr)", _SKLEARN_README),
        # Opt-in sources: licence unknown or grayscale (a confound vs colour fakes).
        PhotoSource("motorcycle_left", "skimage.data", "motorcycle_left.png",
                    "not stated (Middlebury 2014 stereo benchmark)",
                    "Nesic, Westling, Wang, Kitajima, Krathwohl, Scharstein",
                    _SKIMAGE_DOC.format("stereo_motorcycle", "0.26"), default=False),
        PhotoSource("camera", "skimage.data", "camera.png", "CC0", "Lav Varshney",
                    _SKIMAGE_DOC.format("camera", "0.26"), default=False),
        PhotoSource("coins", "skimage.data", "coins.png", "no known copyright restrictions",
                    "Brooklyn Museum Collection", _SKIMAGE_DOC.format("coins", "0.26"),
                    default=False),
    )
}
DEFAULT_SOURCE_KEYS: tuple[str, ...] = tuple(k for k, s in PHOTO_SOURCES.items() if s.default)


@dataclass
class RealSet:
    """Real images with one manifest row each, plus the files that were excluded."""

    images: list[Image.Image]
    ids: list[str]
    manifest: list[dict[str, Any]]
    excluded: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not len(self.images) == len(self.ids) == len(self.manifest):
            raise ValueError(
                f"RealSet parts differ in length: images={len(self.images)}, "
                f"ids={len(self.ids)}, manifest={len(self.manifest)}"
            )

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, indices: Sequence[int], name: str | None = None) -> RealSet:
        """A RealSet of the given indices; ``name`` is stored in each manifest row."""
        rows = [dict(self.manifest[i]) for i in indices]
        if name is not None:
            for row in rows:
                row["subset"] = name
        return RealSet([self.images[i] for i in indices], [self.ids[i] for i in indices],
                       rows, list(self.excluded))

    def split(self, calibration_fraction: float, seed: int = 0) -> tuple[RealSet, RealSet]:
        """(calibration, evaluation) with no image in both.

        Why: reals used to pick a detection threshold must never be scored as
        evaluation reals. Identical images (same id) always land on the same side.
        """
        if not 0.0 < calibration_fraction < 1.0:
            raise ValueError(
                f"calibration_fraction={calibration_fraction!r}; accepted: a float in (0, 1)"
            )
        unique_ids = sorted(set(self.ids))
        if len(unique_ids) < 2:
            raise ValueError(
                f"cannot split a RealSet with {len(unique_ids)} distinct image(s); need >= 2"
            )
        order = np.random.default_rng(seed).permutation(len(unique_ids))
        n_calibration = int(round(calibration_fraction * len(unique_ids)))
        n_calibration = min(max(n_calibration, 1), len(unique_ids) - 1)
        calibration_ids = {unique_ids[i] for i in order[:n_calibration]}
        calibration = [i for i, h in enumerate(self.ids) if h in calibration_ids]
        evaluation = [i for i, h in enumerate(self.ids) if h not in calibration_ids]
        return self.subset(calibration, "calibration"), self.subset(evaluation, "evaluation")

    def partition(self, sizes: Mapping[str, int], seed: int = 0) -> dict[str, RealSet]:
        """Disjoint pools of (at most) the asked sizes, filled in the order given; an image identity (same id,
        i.e. the same pixels) never lands in two pools.

        Identities are taken in a seeded random order; each pool takes whole groups of identical images that
        still fit, leaving the others to the pools after it. With all images distinct this is the first
        ``sizes[0]`` of a permutation, then the next ``sizes[1]``, and so on. When the set is too small the
        later pools come out short (the caller reports it).
        """
        groups: dict[str, list[int]] = {}
        for index, image_id in enumerate(self.ids):
            groups.setdefault(image_id, []).append(index)
        members = list(groups.values())
        queue = [members[int(i)] for i in np.random.default_rng(seed).permutation(len(members))]
        pools: dict[str, RealSet] = {}
        for name, n in sizes.items():
            taken: list[int] = []
            rest: list[list[int]] = []
            for group in queue:
                if len(taken) + len(group) <= n:
                    taken += group
                else:
                    rest.append(group)
            queue = rest
            pools[name] = self.subset(taken, name=name)
        return pools

    def duplicates(self) -> int:
        """How many images repeat an earlier one's pixels."""
        return len(self.ids) - len(set(self.ids))

    def write_manifest(self, path: str | Path) -> Path:
        """Write rows and exclusions as JSON (the provenance of every real image)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "schema": 1,
            "kind": "real_set",
            "n": len(self),
            "rows": self.manifest,
            "excluded": [{"path": p, "error": e} for p, e in self.excluded],
        }
        path.write_text(json.dumps(payload, indent=2, sort_keys=True), encoding="utf-8")
        return path


def _load_rgb(path: Path) -> tuple[Image.Image, dict[str, Any]]:
    """Fully decode ``path`` to 8-bit RGB (:func:`quantfake.image_io.to_rgb`: 16-bit scaled, alpha composited,
    EXIF orientation applied) and describe what it was (format, mode, size, JPEG, greyscale)."""
    with Image.open(path) as image:
        image.load()
        info = {"source_format": image.format, "source_size": list(image.size)}
        rgb, conversion = to_rgb(image)
    info.update(conversion)
    info["is_jpeg"] = info["source_format"] == "JPEG"
    info["grayscale_converted"] = info["source_mode"] in GRAY_MODES
    return rgb, info


def _open_source(source: PhotoSource) -> tuple[Image.Image, dict[str, Any]]:
    """Load a packaged photo as RGB and describe the original (mode, format, size)."""
    file_path = source.path()
    if not file_path.is_file():
        raise FileNotFoundError(
            f"photo source {source.key!r} expected at {file_path} (package {source.package}); "
            "it is not in the installed wheel and will not be downloaded"
        )
    return _load_rgb(file_path)


def _resolve_sources(sources: Sequence[str] | None) -> list[PhotoSource]:
    keys = DEFAULT_SOURCE_KEYS if sources is None else tuple(sources)
    unknown = [k for k in keys if k not in PHOTO_SOURCES]
    if unknown or not keys:
        raise ValueError(f"photo sources {list(unknown or keys)!r} invalid; "
                         f"accepted: a non-empty list from {sorted(PHOTO_SOURCES)}")
    return [PHOTO_SOURCES[k] for k in keys]


def tiny_real_set(size: int, n: int, seed: int = 0,
                  sources: Sequence[str] | None = None,
                  max_attempts_per_image: int = 50) -> RealSet:
    """``n`` distinct, deterministic ``size``x``size`` RGB patches of packaged photographs.

    Each patch is a random square crop whose side is ``size`` times a scale from
    ``CROP_SCALES`` (only scales that fit the photo), resized with LANCZOS. Same
    arguments and library versions give the same patches. Raises ValueError if
    ``n`` distinct patches cannot be found.
    """
    if size < 1 or n < 0:
        raise ValueError(f"size={size!r}, n={n!r}; accepted: size >= 1 and n >= 0")
    chosen = _resolve_sources(sources)
    loaded = [_open_source(s) for s in chosen]
    rng = np.random.default_rng(seed)
    images: list[Image.Image] = []
    ids: list[str] = []
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    seen_boxes: set[tuple[int, tuple[int, int, int, int]]] = set()
    attempts = 0
    while len(images) < n:
        attempts += 1
        if attempts > max_attempts_per_image * max(n, 1):
            raise ValueError(
                f"found only {len(images)} distinct {size}x{size} patches of {n} requested "
                f"from sources {[s.key for s in chosen]}; add sources or lower n"
            )
        k = int(rng.integers(len(chosen)))
        source, (photo, info) = chosen[k], loaded[k]
        width, height = photo.size
        shortest = min(width, height)
        sides = [int(round(size * s)) for s in CROP_SCALES if size * s <= shortest]
        side = sides[int(rng.integers(len(sides)))] if sides else shortest
        left = int(rng.integers(width - side + 1))
        top = int(rng.integers(height - side + 1))
        box = (left, top, left + side, top + side)
        if (k, box) in seen_boxes:  # same crop, same patch: skip the resize and hashing
            continue
        seen_boxes.add((k, box))
        patch = photo.crop(box)
        if side != size:
            patch = patch.resize((size, size), Image.Resampling.LANCZOS)
        digest = image_sha256(patch)
        if digest in seen:
            continue
        seen.add(digest)
        images.append(patch)
        ids.append(digest)
        rows.append({
            "id": digest, "index": len(rows), "origin": "packaged_photo",
            "source": source.key, "package": source.package.split(".")[0],
            "file": f"{source.package.replace('.', '/')}/{source.filename}",
            "licence": source.licence, "attribution": source.attribution,
            "licence_reference": source.licence_reference,
            "crop_box": list(box), "scale": side / size, "size": [size, size],
            "upsampled": side < size, "seed": seed, **info,
        })
    return RealSet(images, ids, rows, [])


def _fit(image: Image.Image, size: int | None, policy: str) -> tuple[Image.Image, bool]:
    """Apply the resize policy; return the image and whether it was upsampled."""
    if size is None or policy == "none":
        return image, False
    width, height = image.size
    if policy == "resize":
        return image.resize((size, size), Image.Resampling.LANCZOS), min(width, height) < size
    factor = size / min(width, height)
    new_w, new_h = max(size, round(width * factor)), max(size, round(height * factor))
    scaled = image.resize((new_w, new_h), Image.Resampling.LANCZOS)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return scaled.crop((left, top, left + size, top + size)), factor > 1.0


def _read_checked(path: Path) -> tuple[Image.Image, dict[str, Any]]:
    """verify() then a fresh full load(); raises on corrupt or truncated files."""
    with Image.open(path) as probe:
        probe.verify()
    return _load_rgb(path)


def too_small(source_size: Sequence[int], size: int | None) -> str | None:
    """Why an image of ``source_size`` (w, h) is too small to stand for real photographs at ``size``, else None."""
    shortest = min(source_size)
    need = max(MIN_REAL_SIDE, math.ceil(size / MAX_REAL_UPSAMPLE)) if size else MIN_REAL_SIDE
    if shortest < need:
        limit = f" (and upsampled at most {MAX_REAL_UPSAMPLE:g}x to {size} px)" if size else ""
        return f"too small: {source_size[0]}x{source_size[1]} px; accepted: shorter side >= {need} px{limit}"
    return None


def load_real_dir(path: str | Path, size: int | None = None,
                  policy: str = "center_crop") -> RealSet:
    """Load every image under ``path`` (recursively, sorted) as RGB for ``--real-dir``.

    Unreadable, corrupt or too small (:func:`too_small`) files are excluded, listed in ``RealSet.excluded`` as
    (path, reason) and logged; they never abort the load. ``policy`` applies when
    ``size`` is given: 'center_crop' (scale the short side, crop the centre),
    'resize' (squash to a square), 'none' (keep native size; then ``size`` must be None).
    """
    if policy not in RESIZE_POLICIES:
        raise ValueError(f"policy={policy!r}; accepted: {list(RESIZE_POLICIES)}")
    if policy == "none" and size is not None:
        raise ValueError(f"policy='none' keeps native sizes but size={size!r} was given; "
                         "pass size=None or policy in ['center_crop', 'resize']")
    if size is not None and size < 1:
        raise ValueError(f"size={size!r}; accepted: None or an int >= 1")
    root = Path(path)
    if not root.is_dir():
        raise NotADirectoryError(f"real image folder {str(root)!r} is not a directory")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    images: list[Image.Image] = []
    ids: list[str] = []
    rows: list[dict[str, Any]] = []
    excluded: list[tuple[str, str]] = []
    for file_path in files:
        try:
            rgb, info = _read_checked(file_path)
        except Exception as error:  # noqa: BLE001 - any decoder failure means "exclude"
            message = f"{type(error).__name__}: {error}"
            excluded.append((str(file_path), message))
            LOG.warning("excluding unreadable real image %s (%s)", file_path, message)
            continue
        small = too_small(rgb.size, size)
        if small:
            excluded.append((str(file_path), small))
            LOG.warning("excluding real image %s (%s)", file_path, small)
            continue
        fitted, upsampled = _fit(rgb, size, policy)
        digest = image_sha256(fitted)
        images.append(fitted)
        ids.append(digest)
        rows.append({
            "id": digest, "index": len(rows), "origin": "user_dir",
            "file": str(file_path.relative_to(root)), "policy": policy,
            "size": list(fitted.size), "upsampled": upsampled, **info,
        })
    if excluded:
        LOG.warning("excluded %d of %d image files under %s", len(excluded), len(files), root)
    if not images:
        LOG.warning("no readable images (%s) under %s", ", ".join(IMAGE_SUFFIXES), root)
    real_set = RealSet(images, ids, rows, excluded)
    if real_set.duplicates():
        LOG.warning("%d duplicate images under %s (kept; split() and partition() keep duplicates together)",
                    real_set.duplicates(), root)
    return real_set

