"""A quick profile R factor of a structure against a measured pattern.

For ranking candidates before (or without) a refinement: the structure's
pattern is simulated on the data's 2θ grid with the data's own peak width
(estimated from its strongest peak) and wavelength (Kα2 included for a
doublet source), then a scale and a Chebyshev background are fitted by
linear least squares; the result is Rwp with weights 1/σ^2 (σ from the
pattern, else Poisson-like sqrt(max(y, 1)) on the data's scale).  Lattice,
zero shift and profile are not refined: that is the refiners' job.
"""

from __future__ import annotations

import numpy as np

from diffpy_mlsolve.errors import PatternFormatError
from diffpy_mlsolve.radiation import radiation_of

__all__ = ["estimate_fwhm", "pattern_rfactor", "rwp"]


def rwp(yobs, ycalc, weights=None) -> float:
    """Weighted-profile R factor sqrt(Σ w (yo − yc)^2 / Σ w yo^2)."""
    yo = np.asarray(yobs, float)
    yc = np.asarray(ycalc, float)
    w = np.ones_like(yo) if weights is None else np.asarray(weights, float)
    den = float(np.sum(w * yo**2))
    return float(np.sqrt(np.sum(w * (yo - yc) ** 2) / den)) if den else 1.0


def estimate_fwhm(x, y) -> float:
    """FWHM (units of x) of the strongest peak above a low-percentile
    baseline, from linear interpolation of the half-maximum crossings."""
    x = np.asarray(x, float)
    y = np.asarray(y, float) - np.percentile(y, 10)
    i = int(np.argmax(y))
    half = y[i] / 2
    lo = i
    while lo > 0 and y[lo] > half:
        lo -= 1
    hi = i
    while hi < len(y) - 1 and y[hi] > half:
        hi += 1

    def cross(a, b):
        if y[a] == y[b]:
            return x[a]
        return x[a] + (half - y[a]) * (x[b] - x[a]) / (y[b] - y[a])

    width = cross(hi - 1, hi) - cross(lo, lo + 1)
    step = float(np.median(np.diff(x)))
    return float(max(width, 2 * step))


def _design(x, sim, order):
    t = (2 * (x - x[0]) / (x[-1] - x[0])) - 1
    cols = [sim] + [
        np.polynomial.chebyshev.chebval(t, np.eye(order)[k])
        for k in range(order)
    ]
    return np.stack(cols, 1)


def pattern_rfactor(
    structure,
    pattern,
    *,
    fwhm: float | None = None,
    eta=(0.0, 0.5, 1.0),
    background_order: int = 6,
    return_curves: bool = False,
):
    """Rwp of ``structure``'s simulated pattern against ``pattern``.

    Parameters
    ----------
    structure : structure or CIF path
    pattern : Pattern
        A powder pattern in 2θ, Q or d with its wavelength.
    fwhm : float, optional
        Peak width (degrees 2θ); default: the best of 0.6-1.25 times the
        data's strongest-peak width (a Kα2 shoulder widens that).
    eta : float or sequence of float
        Lorentzian fraction of the simulated peaks; with several, the
        best fitting is used.
    background_order : int
        Chebyshev terms of the fitted background.
    return_curves : bool
        Also return a dict of the curves (x in 2θ, yobs, ycalc) and the
        profile used (fwhm, eta), e.g. to score variants of one structure
        with that profile fixed.

    Raises
    ------
    PatternFormatError
        For a PDF (xtype "r").
    WavelengthError
        For a Q or d pattern without a wavelength.
    """
    from diffpy_mlsolve.simulate import simulate_pxrd

    if pattern.xtype == "r":
        raise PatternFormatError(
            "A PDF G(r) has no powder profile R factor; please refine it "
            "with the 'pdf' refiner."
        )
    pat = pattern.on_tth()
    x, y = pat.x, pat.intensity
    if fwhm is None:
        widths = estimate_fwhm(x, y) * np.array([0.6, 0.8, 1.0, 1.25])
    else:
        widths = [float(fwhm)]
    source = radiation_of(pat)
    npts = int(min(max(len(x), 1000), 20000))
    if pat.sigma is not None:
        w = 1 / np.maximum(pat.sigma, 1e-12) ** 2
    else:  # Poisson-like, floored at the background level
        floor = max(float(np.median(np.abs(y))), 0.01 * np.abs(y).max())
        w = 1 / np.maximum(np.abs(y), max(floor, 1e-12))

    def trial(e, width):
        sim = simulate_pxrd(
            structure,
            wavelength=source,
            tth_range=(float(x[0]), float(x[-1])),
            npoints=npts,
            fwhm=float(width),
            eta=float(e),
        )
        ycalc = _fit(
            x, y, np.interp(x, sim.x, sim.intensity), w, background_order
        )
        return rwp(y, ycalc, w), ycalc, width, e

    # the width at the middle eta, then eta at that width
    etas = list(np.atleast_1d(eta))
    mid = etas[len(etas) // 2]
    best = min((trial(mid, wd) for wd in widths), key=lambda t: t[0])
    for e in etas:
        if e != mid:
            best = min(best, trial(e, best[2]), key=lambda t: t[0])
    r, ycalc, width, e = best
    if return_curves:
        return r, {"x": x, "yobs": y, "ycalc": ycalc, "fwhm": width, "eta": e}
    return r


def _fit(x, y, ysim, w, order):
    """Scale (>= 0) and background by weighted linear least squares."""
    a = _design(x, ysim, order)
    sw = np.sqrt(w)
    coef, *_ = np.linalg.lstsq(a * sw[:, None], y * sw, rcond=None)
    if coef[0] < 0:  # no negative scale: background only
        coef = np.zeros(a.shape[1])
        coef[1:], *_ = np.linalg.lstsq(
            a[:, 1:] * sw[:, None], y * sw, rcond=None
        )
    return a @ coef
