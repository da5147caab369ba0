"""Bragg intensities from a PDF G(r): solving nanocrystals from their PDF.

For r > 0 a crystal's G(r) is a sum of one sine per reflection (the
Fourier series of the pair density, spherically averaged)::

    G(r) = 8π / (N V <f>^2) Σ_h |F(h)|^2 sin(Q_h r) / Q_h

over one of each Friedel pair h with 0 < Q_h = 2π|d*_h| < Qmax (the
measurement's band limit), in the convention of
:mod:`diffpy_mlsolve.physics.pdf` (f = Z, N atoms in the cell of volume
V).  The instrument multiplies it by ``exp(−(Qdamp r)^2 / 2)`` and a
spherical particle of diameter D by its characteristic function γ0(r).
With the cell known, G is therefore linear in the |F(h)|^2, as a powder
pattern is: :func:`pdf_intensities` fits them by non-negative least
squares.  Reflections whose Q differ by less than ``resolution`` × π /
(the r extent of the signal) cannot be told apart in r: they share one
unknown (equipartition), like overlapped powder peaks.  Qdamp and D,
when not given, are chosen by the best Rw over a grid, D then refined
by a bounded one-dimensional search, both with groups half as wide
(:data:`ENVELOPE_RESOLUTION`).

The result is a :class:`~diffpy_mlsolve.phasing.Reflections` for
:func:`~diffpy_mlsolve.phasing.charge_flip`, and
:func:`equivalent_powder` renders it as the sharp powder pattern the
PXRD network takes: so one model and one phasing step serve powder and
PDF data (a design choice, see the README's model card).

On simulated crystals (NaCl, Qmax 25 Å^-1) the sum reproduces the kernel's
G(r) to Rw 0.013 with the exact |F|^2; the difference is the band-limited
self term near r = 0, hence the default ``rmin`` of 1.2 Å.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from diffpy_mlsolve.errors import PatternFormatError, PhysicsInputError

__all__ = [
    "PDFIntensities",
    "equivalent_powder",
    "number_density",
    "pdf_centring",
    "pdf_intensities",
    "sine_columns",
]

#: Qdamp values (Å^-1) tried when neither the argument nor the data give it.
QDAMPS = (0.0, 0.02, 0.04, 0.06)
#: Wavelength (Å) of :func:`equivalent_powder`'s pattern: an internal
#: representation of the extracted intensities, not a guess about data.
EQUIVALENT_WAVELENGTH = 1.5406
#: Group width (as ``resolution``) of the fit that chooses Qdamp and the
#: diameter: the first 15 cubic test structures as 3 nm particles
#: fitted 28.4-30.2 Å at 0.5 (the Laves phases 25-26.5 Å), 29.3-30.2 Å
#: at 0.25.
ENVELOPE_RESOLUTION = 0.25
#: :func:`pdf_centring` takes a centring whose extinctions raise the
#: fit's Rw by at most this factor.  The first 15 cubic test structures
#: as 2, 3 and 5 nm particles: true F and I centrings 1.02-1.28 (the
#: groups left out had fitted noise), absent ones 2.1-48, the
#: pseudo-I of CsCl-type cells of two heavy atoms 1.07-1.45 (taken).
CENTRING_RW_RATIO = 1.5
#: Rw of the intensity fit above which the cell is not that of the data.
MAX_CELL_RW = 0.2
#: Resolution (Å) and blurring B (Å^2) of :meth:`PDFIntensities.for_phasing`.
PHASING_DMIN = 0.7
PHASING_BLUR = 1.5
# r step of the fit (Å): finer than needed to sample sin(Qmax r)
_FIT_STEP_PER_PERIOD = 6


@dataclass(frozen=True, eq=False)
class PDFIntensities:
    """What :func:`pdf_intensities` found.

    Attributes
    ----------
    reflections : Reflections
        |F(h)|^2 on a relative scale (|F|^2 / (N <f>^2)), groups of
        reflections indistinguishable in r, ``rwp`` the fit's Rw; the
        powder-only fields (tth, fwhm, eta, wavelength) are NaN.
    diameter : float or None
        Particle diameter (Å) of the best fit; None when bulk fits best.
    qdamp, qmax : float
        Qdamp used (fitted unless given) and the data's Qmax (Å^-1).
    rw : float
        sqrt(Σ (Gobs − Gcalc)^2 / Σ Gobs^2) over the fit range.
    curves : dict
        r, gobs, gcalc over the fit range.
    """

    reflections: object
    diameter: float | None
    qdamp: float
    qmax: float
    rw: float
    curves: dict = field(default_factory=dict, repr=False)

    def for_phasing(
        self, dmin: float = PHASING_DMIN, blur: float = PHASING_BLUR
    ):
        """The reflections as charge flipping takes them: d >= ``dmin``
        (Å) only, and |F|^2 multiplied by exp(−blur d*^2 / 2), a
        temperature factor B = ``blur`` Å^2 that widens the point atoms
        of the PDF convention (f = Z) to what a grid of about 0.2 Å
        samples; both chosen on NaCl, CaF2 and SrTiO3 particles of
        2-3 nm."""
        from dataclasses import replace

        refl = self.reflections
        keep = refl.dstar <= 1 / float(dmin)
        f2 = refl.f2 * np.exp(-float(blur) * refl.dstar**2 / 2)
        return replace(
            refl,
            f2=np.where(keep, f2, np.nan),
            group=np.where(keep, refl.group, -1),
        )

    def __repr__(self) -> str:
        d = "bulk" if self.diameter is None else f"{self.diameter:.1f} Å"
        return (
            f"PDFIntensities({self.reflections.ngroups} groups, "
            f"diameter {d}, qdamp {self.qdamp:.3f}, Rw {self.rw:.4f})"
        )


def _extent(r, g, rmin):
    """The largest r (Å) where G still carries signal: the RMS of G over
    a 2 Å window above a tenth of its RMS over the first 10 Å."""
    sel = r >= rmin
    r, g = r[sel], g[sel]
    ref = np.sqrt(np.mean(g[r < rmin + 10] ** 2))
    win = max(1, int(round(2.0 / max(np.median(np.diff(r)), 1e-6))))
    power = np.convolve(g**2, np.ones(win) / win, mode="same")
    alive = np.flatnonzero(np.sqrt(power) > 0.1 * ref)
    return float(r[alive[-1]]) if alive.size else float(r[-1])


def _envelope(r, qdamp, diameter):
    """exp(−(Qdamp r)^2 / 2), times the sphere's γ0(r) for a particle
    (:func:`~diffpy_mlsolve.physics.pdf.sphere_envelope`)."""
    env = np.exp(-0.5 * (qdamp * r) ** 2)
    if diameter is not None:
        import torch

        from diffpy_mlsolve.physics.pdf import sphere_envelope

        r_t = torch.as_tensor(r, dtype=torch.float64)
        env = env * sphere_envelope(r_t, float(diameter)).numpy()
    return env


def _bins(q, width):
    """Groups of sorted ``q`` no wider than ``width`` (a new group starts
    where q passes its group's first member by more than width), so a
    dense run of shells cannot chain into one wide group."""
    group = np.empty(len(q), int)
    current, first = -1, -np.inf
    for i, value in enumerate(q):
        if value - first > width:
            current, first = current + 1, value
        group[i] = current
    return group


def sine_columns(r, q, group) -> np.ndarray:
    """(R, G) Σ sin(Q r) / Q over each group's members: the G(r) of
    unit |F|^2 per member (up to 8π / (N V <f>^2))."""
    r, q = np.asarray(r, float), np.asarray(q, float)
    out = np.zeros((r.size, int(group.max()) + 1))
    for start in range(0, q.size, 512):
        sl = slice(start, start + 512)
        cols = np.sin(np.outer(r, q[sl])) / q[sl]
        np.add.at(out.T, group[sl], cols.T)
    return out


def pdf_centring(reflections) -> str | None:
    """The lattice centring a G(r) shows, or None.

    For each centring (F, I, C, A, B; on hexagonal axes R only) the
    |F|^2 are refitted (as :func:`pdf_intensities` does, with its Qdamp
    and particle envelope and groups of :data:`ENVELOPE_RESOLUTION`)
    without the groups whose members it all forbids; the first whose Rw
    stays within :data:`CENTRING_RW_RATIO` of the fit with all of them
    is taken.  One that forbids no whole group cannot be told from P.  A
    G(r) merges reflections close in Q, so the extinction test on
    isolated groups that powder intensities get
    (:func:`~diffpy_mlsolve.phasing.find_centring`) rarely sees any; the
    fit does.  A strong pseudo-centring (a CsCl-type cell of two heavy
    atoms) is taken as a centring, as from powder data.

    Parameters
    ----------
    reflections : Reflections
        From :func:`pdf_intensities` (its curves keep the G(r) and the
        envelope).
    """
    from scipy.optimize import nnls

    from diffpy_mlsolve.phasing import (
        CENTRING_CONDITIONS,
        _allowed,
        _hexagonal_axes,
    )

    curves = reflections.curves
    r = np.asarray(curves["x"], float)
    g = np.asarray(curves["yobs"], float)
    env = np.asarray(curves["envelope"], float)
    gnorm = float(g @ g) or 1.0
    width = ENVELOPE_RESOLUTION * math.pi / max(_extent(r, g, r[0]), 5.0)

    q = 2 * math.pi * np.asarray(reflections.dstar, float)
    order = np.argsort(q, kind="stable")
    group = np.empty(len(q), int)
    group[order] = _bins(q[order], width)
    a = sine_columns(r, q, group) * env[:, None]
    a /= np.maximum(np.linalg.norm(a, axis=0), 1e-30)

    def rw(columns):
        coef, _ = nnls(a[:, columns], g, maxiter=50 * a.shape[1])
        return float(np.sqrt(np.sum((g - a[:, columns] @ coef) ** 2) / gnorm))

    every = rw(np.ones(a.shape[1], bool))
    hkl = np.asarray(reflections.hkl)
    if _hexagonal_axes(reflections.lattice):
        names = ["R"]
    else:
        names = [c for c in CENTRING_CONDITIONS if c != "R"]
    for name in names:
        allowed = np.zeros(a.shape[1], bool)
        np.logical_or.at(
            allowed, group, _allowed(hkl, CENTRING_CONDITIONS[name])
        )
        # only groups it wholly forbids test a centring: a G(r) cannot
        # tell reflections of one |Q| apart (a cubic cell's C)
        if allowed.all():
            continue
        if rw(allowed) <= CENTRING_RW_RATIO * every:
            return name
    return None


def number_density(gr) -> float | None:
    """Atoms per Å^3 from the slope of G(r) = −4π ρ0 r below the first
    peak (where a particle's envelope is still about 1); None when the
    data start too late or show no such line.  It assumes G(r) on the
    absolute scale PDFgetX3 gives."""
    r = np.asarray(gr.x, float)
    g = np.asarray(gr.intensity, float)
    rising = np.flatnonzero((r > 0.8) & (g > 0))
    if not rising.size:
        return None
    top = 0.85 * r[rising[0]]
    sel = (r >= 0.3) & (r <= top)
    if sel.sum() < 5:
        return None
    slope = float(r[sel] @ g[sel]) / float(r[sel] @ r[sel])
    return -slope / (4 * math.pi) if slope < 0 else None


def _check_diameter(diameter, lat, what="diameter"):
    if diameter is None:
        return None
    d = float(diameter)
    longest = float(max(lat[:3]))
    if not (math.isfinite(d) and d >= longest):
        raise PhysicsInputError(
            f"{what}={diameter} Å is smaller than the longest cell edge "
            f"({longest:.3f} Å): such a particle holds no whole cell. "
            f"Please give {what} in Å (not nm), at least the cell edge, or "
            f"{what}=None to fit it."
        )
    return d


def pdf_intensities(
    gr,
    lattice,
    *,
    qmax: float | None = None,
    qdamp: float | None = None,
    diameter: float | None = None,
    rmin: float = 1.2,
    resolution: float = 0.5,
) -> PDFIntensities:
    """|F(h)|^2 of every reflection below Qmax from a G(r) and its cell.

    Parameters
    ----------
    gr : Pattern
        G(r) (xtype "r", Å^-2), e.g. ``load_pattern("particle.gr")``.
    lattice : (a, b, c, alpha, beta, gamma)
        The cell (Å, degrees).
    qmax : float, optional
        Qmax of the data (Å^-1); default ``gr.metadata["qmax"]``.
    qdamp : float, optional
        Instrument Qdamp (Å^-1); default ``gr.metadata["qdamp"]``, else
        the best of :data:`QDAMPS`.
    diameter : float, optional
        Particle diameter (Å), fixed; default: fitted (bulk included).
    rmin : float
        Lower end of the fit range (Å).
    resolution : float
        Reflections closer in Q than ``resolution`` × π / (the r extent
        of the signal) form one group (Qdamp and the diameter are fitted
        with at most :data:`ENVELOPE_RESOLUTION`).

    Returns
    -------
    PDFIntensities

    Raises
    ------
    PatternFormatError
        If ``gr`` is not a PDF or holds too few points above ``rmin``.
    PhysicsInputError
        Without Qmax (argument or metadata), or for a diameter smaller
        than the cell.
    """
    import torch
    from scipy.optimize import minimize_scalar, nnls

    from diffpy_mlsolve.phasing import (
        Reflections,
        _isolated_groups,
        _lattice6,
    )
    from diffpy_mlsolve.physics.reflections import reflections_within
    from diffpy_mlsolve.refine.pdf import _meta, _qmax
    from diffpy_mlsolve.structures import cell_volume

    if gr.xtype != "r":
        raise PatternFormatError(
            f"pdf_intensities needs a PDF G(r) (xtype 'r'), got xtype "
            f"{gr.xtype!r}; for a powder pattern use "
            "phasing.extract_intensities."
        )
    lat = _lattice6(lattice)
    qmax = _qmax(gr, qmax)
    if qdamp is None:
        qdamp = _meta(gr, "qdamp")
    diameter = _check_diameter(diameter, lat)
    r_all = np.asarray(gr.x, float)
    g_all = np.asarray(gr.intensity, float)
    step = math.pi / qmax / _FIT_STEP_PER_PERIOD
    r = np.arange(max(rmin, r_all[0]), r_all[-1] + 1e-9, step)
    if r.size < 20:
        raise PatternFormatError(
            f"The G(r) covers r = {r_all[0]:g}-{r_all[-1]:g} Å: too little "
            f"above rmin = {rmin:g} Å to extract intensities from. Please "
            "give G(r) to 10 Å or more."
        )
    g = np.interp(r, r_all, g_all)
    extent = _extent(r, g, r[0])

    cell = torch.as_tensor(lat, dtype=torch.float64)[None]
    hkl_t, dstar_t, mask_t = reflections_within(cell, qmax / (2 * math.pi))
    inside = mask_t[0].numpy() & (dstar_t[0].numpy() > 0)
    hkl = hkl_t.numpy()[inside]
    dstar = dstar_t[0].numpy()[inside]
    order = np.lexsort((hkl[:, 2], hkl[:, 1], hkl[:, 0], dstar))
    hkl, dstar = hkl[order], dstar[order]
    if hkl.shape[0] < 3:
        raise PhysicsInputError(
            f"The cell {tuple(lat)} has {hkl.shape[0]} reflections below "
            f"Qmax = {qmax:g} Å^-1; please check the cell and Qmax."
        )
    q = 2 * math.pi * dstar
    gnorm = float(np.sum(g**2)) or 1.0

    def design(res):
        """(group, columns scaled to unit norm, their norms)."""
        group = _bins(q, res * math.pi / max(extent, 5.0))
        basis = sine_columns(r, q, group)
        norm = np.linalg.norm(basis, axis=0)
        norm[norm == 0] = 1.0
        return group, basis / norm, norm

    def trial(basis, qd, d):
        env = _envelope(r, qd, d)
        coef, _ = nnls(basis * env[:, None], g, maxiter=50 * basis.shape[1])
        gcalc = (basis * env[:, None]) @ coef
        return float(np.sqrt(np.sum((g - gcalc) ** 2) / gnorm)), coef

    longest = float(max(lat[:3]))
    qd_best, d_best = qdamp, diameter
    if qdamp is None or diameter is None:
        # the envelope from finer groups: equal shares over the wider
        # ones bend it (Laves phases at 3 nm fitted 25-26 Å)
        _, basis, _ = design(min(resolution, ENVELOPE_RESOLUTION))
        qdamps = [float(qdamp)] if qdamp is not None else list(QDAMPS)
        if diameter is not None:
            sizes = [diameter]
        else:  # bulk and spheres from the cell edge to well past the signal
            lo = max(longest, 0.7 * extent)
            sizes = [None] + list(np.geomspace(lo, max(3 * extent, lo), 9))
        scores = {
            (qd, d): trial(basis, qd, d)[0] for qd in qdamps for d in sizes
        }
        qd_best, d_best = min(scores, key=scores.get)
        if diameter is None and d_best is not None:
            i = sizes.index(d_best)
            lo_d = sizes[i - 1] if i > 1 else longest
            hi_d = sizes[i + 1] if i + 1 < len(sizes) else 1.5 * d_best
            opt = minimize_scalar(
                lambda d: trial(basis, qd_best, d)[0],
                bounds=(lo_d, hi_d),
                method="bounded",
                options={"xatol": 0.05},
            )
            if opt.fun < scores[(qd_best, d_best)]:
                d_best = float(opt.x)
    group, basis, norm = design(resolution)
    tol = resolution * math.pi / max(extent, 5.0)
    rw, coef = trial(basis, qd_best, d_best)
    env = _envelope(r, qd_best, d_best)
    gcalc = (basis * env[:, None]) @ coef
    # per-member |F|^2 / (N <f>^2): undo the column norm and the 8π/V
    volume = float(cell_volume(lat))
    f2 = (coef / norm)[group] * volume / (8 * math.pi)
    isolated = _isolated_groups(group, q, 2 * tol)
    nan = np.full(len(hkl), np.nan)
    refl = Reflections(
        hkl=hkl.astype(int),
        dstar=dstar,
        f2=f2,
        group=group,
        tth=nan,
        isolated=isolated,
        rwp=rw,
        fwhm=math.nan,
        eta=math.nan,
        lattice=lat,
        wavelength=math.nan,
        dstar_max=float(dstar.max()),
        curves={
            "r": r,
            "x": r,
            "yobs": g,
            "ycalc": gcalc,
            "weights": np.ones_like(r),
            "envelope": env,  # Qdamp and particle (sitesearch.PDFScorer)
        },
    )
    return PDFIntensities(
        reflections=refl,
        diameter=d_best,
        qdamp=qd_best,
        qmax=qmax,
        rw=rw,
        curves={"r": r, "gobs": g, "gcalc": gcalc},
    )


def equivalent_powder(
    fit: PDFIntensities,
    *,
    wavelength: float = EQUIVALENT_WAVELENGTH,
    tth_range: tuple[float, float] = (5.0, 150.0),
    fwhm: float = 0.1,
    npoints: int = 4000,
):
    """The sharp powder pattern of the intensities ``fit`` extracted.

    What the PXRD network takes as input: each group's |F|^2 rendered as
    pseudo-Voigt peaks with Lorentz-polarisation and multiplicity at
    ``wavelength`` (:func:`~diffpy_mlsolve.phasing.extract_intensities`'s
    forward model), scaled to a maximum of 1.

    Returns
    -------
    Pattern
        xtype "tth" with ``wavelength``; metadata says it was derived
        from a PDF.
    """
    import torch

    from diffpy_mlsolve.pattern import Pattern
    from diffpy_mlsolve.phasing import _design

    refl = fit.reflections
    lo, hi = (float(v) for v in tth_range)
    top = 2 * math.sin(math.radians(hi) / 2) / wavelength
    keep = refl.observed & (refl.dstar <= top)
    group = refl.group[keep]
    ids, inverse = np.unique(group, return_inverse=True)
    step = (hi - lo) / (npoints - 1)
    a = _design(
        refl.dstar[keep],
        inverse,
        len(ids),
        (lo, step, int(npoints)),
        [(wavelength, 1.0)],
        fwhm,
        0.5,
        torch.float64,
    )
    per_group = np.zeros(len(ids))
    per_group[inverse] = refl.f2[keep]
    y = a @ per_group
    y = y / max(float(y.max()), 1e-30)
    return Pattern.from_arrays(
        lo + step * np.arange(int(npoints)),
        y,
        xtype="tth",
        wavelength=wavelength,
        metadata={
            "derived_from": "PDF G(r) (pdf_intensities)",
            "diameter": fit.diameter,
            "qdamp": fit.qdamp,
        },
    )
