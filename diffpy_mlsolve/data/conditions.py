"""Randomised, realistic measurement conditions for training patterns.

:func:`sample_conditions` draws what a user's instrument could have
given: the wavelength (Cu, Co, Mo, Ag Kα, with or without Kα2, or a
synchrotron line of 0.2-1.0 Å), the 2θ range and step, the peak shape,
crystallite size down to 3 nm, microstrain, a smooth background, Poisson
noise from 1e3 to 1e6 counts at the strongest point, a zero shift and
preferred orientation.  ``mode="noiseless"`` gives the clean sticks-like
patterns of the reference protocol instead.  Everything comes from the
numpy Generator passed in, so a seed fixes it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from diffpy_mlsolve.radiation import SOURCES, Radiation

__all__ = ["Conditions", "sample_conditions", "CONDITION_MODES"]

CONDITION_MODES = ("realistic", "noiseless")

# (source, probability) of the laboratory and synchrotron choices
_LAB = [
    ("CuKa", 0.40),
    ("CuKa1", 0.10),
    ("CoKa", 0.08),
    ("MoKa", 0.12),
    ("MoKa1", 0.03),
    ("AgKa", 0.04),
]
_SYNCHROTRON = 0.23  # the rest: one line, 0.2-1.0 Å
_MAX_POINTS = 30_000


@dataclass(frozen=True)
class Conditions:
    """One simulated measurement: the keyword arguments of
    :func:`diffpy_mlsolve.simulate_pxrd` plus the seed of its noise."""

    wavelength: Radiation
    tth_range: tuple[float, float]
    npoints: int
    fwhm: float
    eta: float
    crystallite_size: float | None
    strain: float | None
    zero_shift: float
    preferred_orientation: tuple | None
    background: tuple[float, ...] | None
    counts: float | None
    seed: int

    def simulate_kwargs(self) -> dict:
        out = asdict(self)
        out["wavelength"] = self.wavelength
        return out


def _wavelength(rng) -> Radiation:
    u = rng.random()
    acc = 0.0
    for name, p in _LAB:
        acc += p
        if u < acc:
            return SOURCES[name]
    return Radiation(round(float(rng.uniform(0.2, 1.0)), 5), name="sync")


def sample_conditions(rng: np.random.Generator, mode="realistic"):
    """Draw one set of measurement conditions.

    Parameters
    ----------
    rng : numpy Generator
    mode : {"realistic", "noiseless"}
        "noiseless": Mo Kα1, 2θ 2-120° (Q up to 15.3 Å^-1) in 0.01°
        steps, narrow Gaussian peaks (0.03°), nothing else.
    """
    seed = int(rng.integers(2**31))
    if mode == "noiseless":
        return Conditions(
            SOURCES["MoKa1"],
            (2.0, 120.0),
            11801,
            0.03,
            0.0,
            None,
            None,
            0.0,
            None,
            None,
            None,
            seed,
        )
    if mode != "realistic":
        raise ValueError(f"mode must be one of {CONDITION_MODES}")
    rad = _wavelength(rng)
    sync = rad.name == "sync"
    start = float(rng.uniform(2, 8) if sync else rng.uniform(5, 15))
    stop = float(rng.uniform(35, 60) if sync else rng.uniform(70, 150))
    # keep the measured range within what the wavelength reaches
    stop = min(
        stop,
        2
        * math.degrees(
            math.asin(min(1.0, rad.wavelength * 15 / (4 * math.pi)))
        ),
    )
    step = float(rng.uniform(0.002, 0.01) if sync else rng.uniform(0.01, 0.03))
    npoints = int(min(_MAX_POINTS, round((stop - start) / step) + 1))
    fwhm = float(rng.uniform(0.005, 0.04) if sync else rng.uniform(0.04, 0.2))
    eta = float(rng.uniform(0.0, 0.8))
    size = float(math.exp(rng.uniform(math.log(30), math.log(2000))))
    size = size if rng.random() < 0.5 else None
    strain = float(rng.uniform(0, 2e-3)) if rng.random() < 0.3 else None
    zero = float(rng.normal(0, 0.02))
    po = None
    if rng.random() < 0.2:
        direction = tuple(int(v) for v in rng.integers(0, 2, 3))
        if any(direction):
            po = (direction, float(rng.uniform(0.7, 1.3)))
    c0 = float(rng.uniform(0.0, 0.3))
    coeffs = [c0] + [float(rng.normal(0, 0.04)) for _ in range(3)]
    coeffs[0] += sum(abs(c) for c in coeffs[1:])  # stays >= 0 on [-1, 1]
    counts = float(10 ** rng.uniform(3, 6))
    return Conditions(
        rad,
        (start, stop),
        npoints,
        fwhm,
        eta,
        size,
        strain,
        zero,
        po,
        tuple(coeffs),
        counts,
        seed,
    )
