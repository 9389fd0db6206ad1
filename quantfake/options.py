"""Bench options: one frozen dataclass built from the command line (pytest or ``quantfake run``).

Comma-separated id lists are validated against the registries; an unknown id is a usage error that lists the
valid ones. Profile-dependent defaults (image size, steps, sample counts) are resolved here, once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from quantfake.cpu_affinity import AFFINITY_CHOICES
from quantfake.detector_precisions import DETECTOR_PRECISIONS
from quantfake.detectors.registry import DETECTORS, REPRESENTATIONS, parse_weights_choices
from quantfake.errors import UnknownIdError
from quantfake.generators import GENERATORS, MODES
from quantfake.grids import GridSpec, get_grid, resolve_grid
from quantfake.option_specs import DEFAULT_BASELINES_DIR, DEFAULT_HISTORY_DIR
from quantfake.perturbations import PERTURBATIONS
from quantfake.precisions import DEFAULT_PRECISIONS, PRECISIONS
from quantfake.profiles import PROFILE_DEFAULTS, PROFILES
from quantfake.validation import check_budget, parse_number, validate_options

_TINY = PROFILE_DEFAULTS["tiny"]  # BenchOptions' defaults are the tiny profile's


def parse_ids(value: str | None, kind: str, valid: dict | tuple, default: tuple[str, ...]) -> tuple[str, ...]:
    """``"sd3,flux"`` -> ``("sd3", "flux")``; empty -> ``default``; ``all`` -> every id; unknown ids raise."""
    if not value:
        return default
    if value.strip() == "all":
        return tuple(valid)
    ids = tuple(v.strip() for v in value.split(",") if v.strip())
    for v in ids:
        if v not in valid:
            raise UnknownIdError(kind, v, valid)
    return ids


@dataclass(frozen=True)
class BenchOptions:
    """Everything a bench session was asked to do (recorded in every run record)."""

    profile: str = "tiny"
    grid: str = "full"  # quantfake.grids: full (product), ci (covering subset), quick
    generators: tuple[str, ...] = tuple(GENERATORS)
    precisions: tuple[str, ...] = DEFAULT_PRECISIONS
    modes: tuple[str, ...] = MODES
    detectors: tuple[str, ...] = tuple(DETECTORS)
    perturbations: tuple[str, ...] = ("none",)
    detector_precisions: tuple[str, ...] = ()
    representations: tuple[str, ...] = ("rgb",)  # detector inputs; non-RGB ones apply to the detectors accepting them
    n_images: int = _TINY["n_images"]
    n_real: int = _TINY["n_real"]
    n_calibration: int = _TINY["n_calibration"]
    n_train: int = _TINY["n_train"]
    steps: int | None = _TINY["steps"]
    size: int | None = _TINY["size"]
    guidance: float | None = None
    strength: float = 0.6
    batch_size: int = _TINY["batch_size"]
    n_boot: int = _TINY["n_boot"]
    seed: int = 0
    device: str | None = None
    cpu_affinity: str = "auto"  # pytest -n N workers, generate ranks: each on its own cores (quantfake.cpu_affinity)
    vram_budget_gib: float | None = None  # --vram-budget: run each cell within this many GiB (quantfake.memory_fit)
    compile: bool = False
    quantize_text_encoders: bool = False
    trust_checkpoints: bool = False
    detector_weights: dict[str, str] = field(default_factory=dict)  # detector id -> weights choice (pretrained)
    repair: bool = True  # regenerate store entries that fail verification (--no-repair: the cell errors instead)
    match_format: bool = False
    store: Path = Path(".quantfake")
    model_root: Path | None = None
    weights_dir: Path | None = None
    gguf_dir: Path | None = None  # the user's <generator>.gguf files (precision ``gguf``)
    real_dir: Path | None = None
    inception_weights: Path | None = None
    prompts: tuple[str, ...] | None = None  # --prompts FILE, one prompt a line; None: the built-in 16
    img2img_prompts: tuple[str, ...] | None = None  # a preset's img2img prompts (default: ``prompts``)
    img2img_steps: int | None = None  # img2img denoising steps (default: ``steps``)
    first_seed: int = 0  # image i of a set uses seed first_seed + i (+ seed x 1,000,000)
    preset: str | None = None
    history: Path = Path(DEFAULT_HISTORY_DIR)
    baselines_dir: Path = Path(DEFAULT_BASELINES_DIR)
    update_baselines: bool = False
    report: bool = True

    def as_record(self) -> dict[str, Any]:
        """JSON-able view for run records."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


def build_options(raw: dict[str, Any]) -> BenchOptions:
    """Validate raw string options (as the command line gives them) into :class:`BenchOptions`.

    Ids are checked against the registries, numbers against :mod:`quantfake.validation`'s ranges; the first bad
    value raises (:class:`UnknownIdError` / :class:`~quantfake.errors.OptionError`) before any work starts.
    """
    from quantfake.presets import apply_preset

    raw, preset = apply_preset(raw)
    profile = raw.get("profile") or "tiny"
    if profile not in PROFILES:
        raise UnknownIdError("profile", profile, PROFILES)
    d = PROFILE_DEFAULTS[profile]
    grid = get_grid(resolve_grid(raw.get("grid"), raw, bool(raw.get("keyword_selected"))))
    axis = _axis_defaults(grid)

    def num(key: str) -> Any:
        v = parse_number(raw.get(key), key)
        return d.get(key) if v is None else v

    def path(key: str, default: Path | None = None) -> Path | None:
        v = raw.get(key)
        return Path(v) if v else default

    options = BenchOptions(
        profile=profile,
        grid=grid.id,
        generators=parse_ids(raw.get("generators"), "generator", GENERATORS, axis["generators"]),
        precisions=parse_ids(raw.get("precisions"), "precision", PRECISIONS, axis["precisions"]),
        modes=parse_ids(raw.get("modes"), "mode", MODES, axis["modes"]),
        detectors=parse_ids(raw.get("detectors"), "detector", DETECTORS, axis["detectors"]),
        perturbations=parse_ids(raw.get("perturbations"), "perturbation", PERTURBATIONS, axis["perturbations"]),
        detector_precisions=parse_ids(raw.get("detector_precisions"), "detector precision",
                                      DETECTOR_PRECISIONS, axis["detector_precisions"]),
        representations=parse_ids(raw.get("representations"), "representation", REPRESENTATIONS,
                                  axis["representations"]),
        n_images=num("n_images"), n_real=num("n_real"), n_calibration=num("n_calibration"),
        n_train=num("n_train"), steps=num("steps"), size=num("size"),
        guidance=parse_number(raw.get("guidance"), "guidance"),
        strength=_given(parse_number(raw.get("strength"), "strength"), 0.6), batch_size=num("batch_size"),
        n_boot=num("n_boot"), seed=_given(parse_number(raw.get("seed"), "seed"), 0), device=raw.get("device") or None,
        cpu_affinity=_choice(raw.get("cpu_affinity"), "cpu affinity", AFFINITY_CHOICES, "auto"),
        compile=bool(raw.get("compile")), vram_budget_gib=_vram_budget(raw.get("vram_budget")),
        quantize_text_encoders=bool(raw.get("quantize_text_encoders")),
        trust_checkpoints=bool(raw.get("trust_checkpoints")), repair=not raw.get("no_repair"),
        match_format=bool(raw.get("match_format")), detector_weights=parse_weights_choices(raw.get("detector_weights")),
        store=path("store", None) or _default_store(),
        model_root=path("model_root"), weights_dir=path("weights_dir"), real_dir=path("real_dir"),
        gguf_dir=_existing_dir(raw.get("gguf_dir"), "--gguf-dir"),
        inception_weights=path("inception_weights"),
        prompts=_prompts(raw.get("prompts")) or (preset.prompts if preset else None),
        img2img_prompts=preset.img2img_prompts if preset and not raw.get("prompts") else None,
        img2img_steps=parse_number(raw.get("img2img_steps"), "img2img_steps"),
        first_seed=preset.first_seed if preset else 0, preset=preset.id if preset else None,
        history=path("history", Path(DEFAULT_HISTORY_DIR)), baselines_dir=path("baselines_dir", Path(DEFAULT_BASELINES_DIR)),
        update_baselines=bool(raw.get("update_baselines")), report=not raw.get("no_report"),
    )
    validate_options(options)
    return options


def _choice(value: str | None, what: str, accepted: tuple[str, ...], default: str) -> str:
    """``value`` when it is one of ``accepted``, ``default`` when not given; anything else is an unknown id."""
    if not value:
        return default
    if value not in accepted:
        raise UnknownIdError(what, value, accepted)
    return value


def _given(value: Any, default: Any) -> Any:
    """``value`` unless the option was not given (``None``); 0 is a value, never "the default"."""
    return default if value is None else value


#: Axis defaults of a ``full`` grid with no ids given (the registry's core set).
FULL_DEFAULTS: dict[str, tuple[str, ...]] = {
    "generators": tuple(GENERATORS), "precisions": DEFAULT_PRECISIONS, "modes": MODES,
    "detectors": tuple(DETECTORS), "perturbations": ("none",), "detector_precisions": (),
    "representations": ("rgb",),
}
#: Every id of every axis: what a covering grid covers.
ALL_IDS: dict[str, tuple[str, ...]] = {
    "generators": tuple(GENERATORS), "precisions": tuple(PRECISIONS), "modes": MODES, "detectors": tuple(DETECTORS),
    "perturbations": tuple(PERTURBATIONS), "detector_precisions": tuple(DETECTOR_PRECISIONS),
    "representations": tuple(REPRESENTATIONS),
}


def _axis_defaults(grid: GridSpec) -> dict[str, tuple[str, ...]]:
    """Per-axis defaults: the grid's own ids, else every id (covering grids) or the core set (full grids)."""
    base = ALL_IDS if grid.covering else FULL_DEFAULTS
    return {a: getattr(grid, a) or base[a] for a in base}


def _vram_budget(value: str | None) -> float | None:
    return None if value in (None, "") else check_budget(value)


def _existing_dir(value: str | None, flag: str) -> Path | None:
    if not value:
        return None
    if not Path(value).is_dir():
        raise ValueError(f"{flag} {value!r}: not a folder (expected a folder of <generator>.gguf files)")
    return Path(value)


def _prompts(value: str | None) -> tuple[str, ...] | None:
    if not value:
        return None
    from quantfake.prompts import read_prompts

    return read_prompts(value)


def _default_store() -> Path:
    from quantfake.store import default_store_root

    return default_store_root()
