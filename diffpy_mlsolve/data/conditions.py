"""Randomised, realistic measurement conditions for training patterns.

:func:`sample_conditions` draws what a user's instrument could have
given: the wavelength (Cu, Co, Mo, Ag Kα, with or without Kα2, or a
synchrotron line of 0.2-1.0 Å), the 2θ range and step, the peak shape,
crystallite size down to 3 nm, microstrain, a smooth background, Poisson
noise from 1e3 to 1e6 counts at the strongest point, a zero shift and
preferred orientation.  ``mode="noiseless"`` gives the clean sticks-like
patterns of the reference protocol instead.  :func:`sample_pdf_conditions`
draws a total-scattering measurement of a nanocrystal instead (the
``"nanopdf"`` mode of :class:`~diffpy_mlsolve.data.examples.ExampleSpec`):
particle diameter, Qmax, Qdamp, Qbroad, r range and noise.  Everything
comes from the numpy Generator passed in, so a seed fixes it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from diffpy_mlsolve.radiation import SOURCES, Radiation

__all__ = [
    "CONDITION_MODES",
    "Conditions",
    "PDFConditions",
    "sample_conditions",
    "sample_pdf_conditions",
]

CONDITION_MODES = ("realistic", "noiseless", "nanopdf")

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
        raise ValueError(
            f"mode must be 'realistic' or 'noiseless' (for 'nanopdf' use "
            f"sample_pdf_conditions); got {mode!r}"
        )
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


@dataclass(frozen=True)
class PDFConditions:
    """One simulated total-scattering measurement of a nanocrystal: the
    keyword arguments of :func:`diffpy_mlsolve.simulate_pdf`, the noise
    and its seed.

    Attributes
    ----------
    diameter : float or None
        Spherical particle diameter (Å); None for a bulk crystal.
    qmax, qdamp, qbroad : float
        Å^-1.
    rmax : float
        G(r) is given on 0-``rmax`` Å in 0.01 Å steps.
    noise : float
        Gaussian noise, σ as a fraction of max |G|.
    seed : int
    """

    diameter: float | None
    qmax: float
    qdamp: float
    qbroad: float
    rmax: float
    noise: float
    seed: int

    def simulate_kwargs(self) -> dict:
        return {
            "rmax": self.rmax,
            "qmax": self.qmax,
            "qdamp": self.qdamp,
            "qbroad": self.qbroad,
            "diameter": self.diameter,
            "rstep": 0.01,
        }

    def noisy(self, gr):
        """``gr`` with this measurement's noise added (xtype "r", the
        Qmax in its metadata, as a reduced file's header gives it)."""
        from diffpy_mlsolve.pattern import Pattern

        g = np.asarray(gr.intensity, float)
        rng = np.random.default_rng(self.seed)
        g = g + rng.normal(0.0, self.noise * np.abs(g).max(), g.size)
        return Pattern.from_arrays(
            gr.x, g, xtype="r", metadata={"qmax": self.qmax}
        )


#: Share of bulk crystals among :func:`sample_pdf_conditions`' draws.
BULK_FRACTION = 0.15


def sample_pdf_conditions(
    rng: np.random.Generator, min_diameter: float = 0.0
) -> PDFConditions:
    """Draw one nanocrystal PDF measurement.

    Spherical particles of 1.5-10 nm (log-uniform; bulk with probability
    :data:`BULK_FRACTION`), Qmax 15-30 Å^-1, Qdamp 0.01-0.06 Å^-1 and
    Qbroad 0-0.02 Å^-1 as instruments give them, G(r) to 15-30 Å,
    Gaussian noise of 0.2-2 % of max |G|.

    Parameters
    ----------
    rng : numpy Generator
    min_diameter : float
        Smallest diameter (Å) drawn: a particle holds at least one cell
        (pass the longest cell edge).
    """
    seed = int(rng.integers(2**31))
    bulk = rng.random() < BULK_FRACTION
    d = float(math.exp(rng.uniform(math.log(15.0), math.log(100.0))))
    return PDFConditions(
        diameter=None if bulk else max(d, float(min_diameter)),
        qmax=float(rng.uniform(15.0, 30.0)),
        qdamp=float(rng.uniform(0.01, 0.06)),
        qbroad=float(rng.uniform(0.0, 0.02)),
        rmax=float(rng.uniform(15.0, 30.0)),
        noise=float(rng.uniform(0.002, 0.02)),
        seed=seed,
    )
