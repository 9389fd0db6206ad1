"""Range checks of the numeric options, before any work starts.

Every bad value is an :class:`~quantfake.errors.OptionError` naming the flag, the value and what is accepted
(pytest shows it as a usage error). Zero never stands for "the default": ``--steps 0`` or ``--size 0`` is refused,
not read as "the generator's own". The accepted ranges come from what the code downstream needs: a cell scores at
least one fake, one evaluated real and one calibration real; diffusers needs sizes that its VAE and denoiser can
tile and img2img strengths in (0, 1] that leave at least one denoising step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from quantfake.errors import OptionError
from quantfake.generators import GENERATORS, GeneratorSpec
from quantfake.profiles import vae_factor

if TYPE_CHECKING:
    from quantfake.options import BenchOptions

#: A 95 % percentile interval needs at least one resample in each 2.5 % tail: 40 resamples.
MIN_BOOTSTRAP = 40

@dataclass(frozen=True)
class NumericRule:
    """One numeric option: its flag, its type and its accepted range (``None``: unbounded on that side)."""

    key: str  # BenchOptions field
    flag: str
    cast: type
    minimum: float | None = None
    maximum: float | None = None
    why: str = ""
    open_minimum: bool = False  # the minimum itself is refused


    @property
    def kind(self) -> str:
        return "an integer" if self.cast is int else "a number"

    def accepted(self) -> str:
        low = f"({self.minimum:g}" if self.open_minimum else f"[{self.minimum:g}"
        if self.minimum is not None and self.maximum is not None:
            return f"{self.kind} in {low}, {self.maximum:g}]"
        if self.minimum is not None:
            return f"{self.kind} {'>' if self.open_minimum else '>='} {self.minimum:g}"
        return self.kind

    def check(self, value: Any) -> None:
        if value is None:
            return
        low_ok = self.minimum is None or value > self.minimum or (value == self.minimum and not self.open_minimum)
        high_ok = self.maximum is None or value <= self.maximum
        if not (low_ok and high_ok) or (isinstance(value, float) and not math.isfinite(value)):
            raise OptionError(f"{self.flag} {value!r}: accepted {self.accepted()}" + (f" ({self.why})" if self.why else ""))


#: The simple ranges; size, strength and --n-boot have rules that depend on other options (below).
NUMERIC_RULES: tuple[NumericRule, ...] = (
    NumericRule("n_images", "--n-images", int, 1, why="every cell scores or compares fakes"),
    NumericRule("n_real", "--n-real", int, 1, why="detection metrics need evaluated reals"),
    NumericRule("n_calibration", "--n-calibration", int, 1, why="the calibrated threshold is set on held-out reals"),
    NumericRule("n_train", "n_train", int, 0, why="tiny training images per generator and mode (no flag)"),
    NumericRule("steps", "--steps", int, 1, why="denoising steps; leave it out for the generator's default"),
    NumericRule("img2img_steps", "--img2img-steps", int, 1, why="img2img denoising steps"),
    NumericRule("size", "--size", int, 1, why="image side in pixels; leave it out for the default"),
    NumericRule("guidance", "--guidance", float, 0.0, why="classifier-free guidance scale"),
    NumericRule("strength", "--strength", float, 0.0, 1.0, why="img2img strength; 0 leaves no denoising step",
                open_minimum=True),
    NumericRule("batch_size", "--gen-batch-size", int, 1, why="images per generation batch"),
    NumericRule("n_boot", "--n-boot", int, 0, why=f"0 for no CIs, else >= {MIN_BOOTSTRAP} resamples"),
    NumericRule("seed", "--seed", int, 0),
)
RULES_BY_KEY: dict[str, NumericRule] = {r.key: r for r in NUMERIC_RULES}


def parse_number(raw: Any, key: str) -> int | float | None:
    """A command-line string as the rule's type (``None`` when not given); not a number names the flag."""
    if raw is None or raw == "":
        return None
    rule = RULES_BY_KEY[key]
    try:
        return rule.cast(raw)
    except (TypeError, ValueError):
        raise OptionError(f"{rule.flag} {raw!r} is not {rule.kind}; accepted: {rule.accepted()}") from None


def size_multiple(generator: GeneratorSpec, profile: str) -> int:
    """The pixel multiple a generator's pipeline accepts: VAE factor x the denoiser's patch (SD3) or packing
    (Flux) of 2, and 8 for the SD / SDXL pipelines, which check ``height % 8`` themselves."""
    vae = vae_factor(profile)
    latent = 2 if generator.family in ("sd3", "flux") else 1
    pipeline = 8 if generator.family in ("sd", "sdxl") else 1
    return math.lcm(pipeline, vae * latent)


def img2img_denoising_steps(steps: int, strength: float) -> int:
    """Steps an img2img call runs: diffusers' SD pipelines keep ``int(steps x strength)`` (the fewest of all)."""
    return min(int(steps * strength), steps)


def validate_options(o: BenchOptions) -> None:
    """Raise :class:`OptionError` for the first option out of range (simple ranges, then the joint ones)."""
    for rule in NUMERIC_RULES:
        rule.check(getattr(o, rule.key))
    _check_each(o, _size_problem)
    if "img2img" in o.modes or o.profile == "tiny":  # the tiny detectors train on img2img fakes too
        _check_each(o, _strength_problem)
    if 0 < o.n_boot < MIN_BOOTSTRAP:
        raise OptionError(f"--n-boot {o.n_boot}: accepted 0 (no CIs; the gate then checks tolerances only) or "
                          f">= {MIN_BOOTSTRAP} (each 2.5 % tail of a 95 % interval needs a resample)")
    if o.n_boot == 0 and o.update_baselines:
        raise OptionError("--n-boot 0 with --update-baselines: baselines need standard errors for the statistical "
                          f"gate; use --n-boot >= {MIN_BOOTSTRAP} (the profile default is fine)")


def _check_each(o: BenchOptions, problem: Callable[[BenchOptions, GeneratorSpec], str | None]) -> None:
    for generator in o.generators:
        message = problem(o, GENERATORS[generator])
        if message:
            raise OptionError(message)


def _size_problem(o: BenchOptions, spec: GeneratorSpec) -> str | None:
    if o.size is None:
        return None
    multiple = size_multiple(spec, o.profile)
    if o.size % multiple:
        near = sorted({o.size // multiple * multiple, (o.size // multiple + 1) * multiple} - {0})
        return (f"--size {o.size}: {spec.id} ({o.profile} profile) accepts a positive multiple of {multiple} "
                f"(its VAE and denoiser tile the image), e.g. {' or '.join(map(str, near))}")
    return None


def _strength_problem(o: BenchOptions, spec: GeneratorSpec) -> str | None:
    steps = o.img2img_steps or o.steps or spec.default_steps
    if img2img_denoising_steps(steps, o.strength) < 1:
        return (f"--strength {o.strength} with {steps} img2img steps ({spec.id}) runs int({steps} x {o.strength}) = 0 "
                f"denoising steps; accepted: strength x steps >= 1 (raise --strength or --img2img-steps)")
    return None


def check_budget(value: str | float) -> float:
    """``value`` as a positive number of GiB, or a clear error naming the bad value."""
    try:
        gib = float(value)
    except (TypeError, ValueError):
        gib = float("nan")
    if not gib > 0:
        raise ValueError(f"--vram-budget {value!r}: expected a positive number of GiB, e.g. 24")
    return gib
