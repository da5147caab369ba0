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

__all__ = ["estimate_fwhm", "pattern_rfactor", "pdf_rfactor", "rwp"]


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
    **pdf_options,
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

    A PDF G(r) (xtype "r") is scored by :func:`pdf_rfactor` instead,
    with ``pdf_options`` (qmax, qdamp, diameter, rmin).

    Raises
    ------
    WavelengthError
        For a Q or d pattern without a wavelength.
    """
    from diffpy_mlsolve.simulate import simulate_pxrd

    if pattern.xtype == "r":
        return pdf_rfactor(
            structure, pattern, return_curves=return_curves, **pdf_options
        )
    if pdf_options:
        raise TypeError(
            f"{sorted(pdf_options)} apply to a PDF G(r) only, and this "
            f"pattern has xtype {pattern.xtype!r}."
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
        return r, {
            "x": x,
            "yobs": y,
            "ycalc": ycalc,
            "fwhm": width,
            "eta": e,
            "profile": {"fwhm": width, "eta": e},
        }
    return r


#: Biso values (Å^2) :func:`pdf_rfactor` tries by default.
PDF_BISOS = (0.3, 0.6, 1.0, 1.6)


def pdf_rfactor(
    structure,
    gr,
    *,
    qmax: float | None = None,
    qdamp=None,
    diameter=None,
    biso=None,
    rmin: float = 1.2,
    return_curves: bool = False,
):
    """Rw of ``structure``'s G(r) against a measured G(r).

    G(r) of the structure (one Biso for every atom) comes from
    :func:`~diffpy_mlsolve.simulate.simulate_pdf` on the data's grid
    with the data's Qmax; the Qdamp envelope, a spherical-particle
    envelope and a scale (linear least squares) are then fitted:
    Rw = sqrt(Σ (Gobs − Gcalc)^2 / Σ Gobs^2) over r >= ``rmin``.

    Parameters
    ----------
    structure : structure or CIF path
    gr : Pattern
        G(r), xtype "r".
    qmax : float, optional
        Default ``gr.metadata["qmax"]``.
    qdamp : float or sequence, optional
        Qdamp (Å^-1), or values to try; default: the metadata's, else
        :data:`diffpy_mlsolve.pdf_intensities.QDAMPS`.
    diameter : float, sequence or None
        Particle diameter (Å), or values to try (None meaning bulk);
        default: bulk and a bounded search from the cell edge to 100 nm.
    biso : float or sequence, optional
        Biso (Å^2) of every atom, or values to try; default
        :data:`PDF_BISOS` (the sites' own Biso are a guess for a
        structure from a density, and G(r)'s peak widths depend on it).
    return_curves : bool
        Also return r, yobs, ycalc and the profile (qdamp, diameter,
        biso).
    """
    from scipy.optimize import minimize_scalar

    from diffpy_mlsolve.pdf_intensities import QDAMPS, _envelope
    from diffpy_mlsolve.refine.pdf import _meta, _qmax
    from diffpy_mlsolve.simulate import simulate_pdf
    from diffpy_mlsolve.structures import as_crystal

    if gr.xtype != "r":
        raise PatternFormatError(
            f"pdf_rfactor needs a PDF G(r) (xtype 'r'), got {gr.xtype!r}; "
            "use pattern_rfactor for a powder pattern."
        )
    qmax = _qmax(gr, qmax)
    r_all = np.asarray(gr.x, float)
    sel = r_all >= rmin
    r, gobs = r_all[sel], np.asarray(gr.intensity, float)[sel]
    if r.size < 10:
        raise PatternFormatError(
            f"The G(r) has {r.size} points above rmin = {rmin:g} Å; please "
            "give G(r) over a wider r range."
        )
    crystal = as_crystal(structure, standardize=False)
    step = float(np.median(np.diff(r)))
    den = float(np.sum(gobs**2)) or 1.0
    bisos = PDF_BISOS if biso is None else np.atleast_1d(biso)
    g0 = {}
    for b in bisos:
        sim = simulate_pdf(
            crystal,
            rmin=float(r[0]),
            rmax=float(r[-1]),
            rstep=step,
            qmax=qmax,
            biso=float(b),
        )
        g0[float(b)] = np.interp(r, sim.x, sim.intensity)

    def score(qd, d, b):
        gc = g0[b] * _envelope(r, qd, d)
        s = max(float(gc @ gobs) / max(float(gc @ gc), 1e-30), 0.0)
        return float(np.sqrt(np.sum((gobs - s * gc) ** 2) / den)), s * gc

    if qdamp is None:
        qdamp = _meta(gr, "qdamp")
    qdamps = [None] if qdamp is None else list(np.atleast_1d(qdamp))
    qdamps = list(QDAMPS) if qdamps == [None] else [float(q) for q in qdamps]
    longest = float(max(crystal.lattice[:3]))
    search = diameter is None
    sizes = [None] if diameter is None else list(np.atleast_1d(diameter))
    sizes = [None if d is None else float(d) for d in sizes]
    best = (np.inf, None, None, None)
    for b in g0:
        for qd in qdamps:
            for d in sizes:
                rw = score(qd, d, b)[0]
                best = min(best, (rw, qd, d, b), key=lambda t: t[0])
            if search:  # a bounded search for the diameter
                opt = minimize_scalar(
                    lambda d: score(qd, d, b)[0],
                    bounds=(longest, 1000.0),
                    method="bounded",
                    options={"xatol": 0.1},
                )
                if opt.fun < best[0]:
                    best = (float(opt.fun), qd, float(opt.x), b)
    rw, qd, d, b = best
    if return_curves:
        gcalc = score(qd, d, b)[1]
        return rw, {
            "x": r,
            "yobs": gobs,
            "ycalc": gcalc,
            "profile": {"qdamp": qd, "diameter": d, "biso": b},
        }
    return rw


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
