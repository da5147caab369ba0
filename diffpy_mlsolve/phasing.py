"""Intensities from a powder pattern, and charge flipping.

The data-driven step that can repair a poor density:

1. :func:`extract_intensities` (Pawley-like, linear).  With the cell
   known, each reflection is a peak of known shape at a known 2θ, so the
   pattern is linear in the |F(h)|^2: the design-matrix column of a
   reflection is :func:`~diffpy_mlsolve.physics.powder.powder_pattern`
   with a unit |F|^2 (Lorentz-polarisation, the Friedel factor 2 and
   the Kα2 line included, exactly as in
   :func:`~diffpy_mlsolve.simulate.simulate_pxrd`).  Reflections whose
   peaks lie closer than ``overlap`` × FWHM cannot be told apart: they
   form a group with one unknown, the |F|^2 of each member
   (equipartition), which is exact for symmetry-equivalent reflections.
   Non-negative least squares gives the group intensities, with a
   Chebyshev background fitted alongside (unbounded, projected out).
   The peak width, Lorentzian fraction, zero shift and size and strain
   broadening are searched on grids around the data's strongest-peak
   width, then refined by Nelder-Mead on the Rwp.
2. :func:`charge_flip` (Oszlányi & Sütő, Acta Cryst. A60, 134 (2004)).
   From random phases, or the phases of a starting density, iterate:
   ρ → flip every ρ < δ → G = FFT → |G(h)| := |F_obs(h)| keeping the
   phase on observed h, G(h) kept on unobserved h inside the resolution
   sphere (F(000) included), zero beyond → ρ, with δ a multiple of
   σ(ρ).  Options: shell-normalised (E-like) amplitudes, re-dividing
   overlapped intensities from the current map (Superflip's powder
   mode), and the π/2 phase shift of weak reflections; all off by
   default, as they did worse on the textbook tests.  The best map
   (lowest R of |G| against |F_obs|) is polished for a few cycles with
   F(000) free and returned in e/Å^3 when
   the electron count is given.

Conventions follow DESIGN.md: F(h) = Σ f exp(+2πi h·x),
ρ(x) = (1/V) Σ F(h) exp(−2πi h·x).  Internally the maps use numpy's
rfftn: A = rfftn(ρ) holds A(h) = (N^3/V) conj(F(h)), and
ρ = irfftn(A) reproduces the DESIGN sum.  Charge flipping has no fixed
origin: the map may be shifted (and, for polar groups, inverted)
relative to the truth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from diffpy_mlsolve.errors import (
    PatternFormatError,
    PhysicsInputError,
    WavelengthError,
)

__all__ = [
    "Reflections",
    "extract_intensities",
    "group_profiles",
    "charge_flip",
]

# widths (× the data's strongest-peak FWHM) tried by extract_intensities;
# a Kα2 shoulder inflates the measured width, hence mostly below 1
_WIDTH_FACTORS = (0.45, 0.6, 0.75, 0.9, 1.1)
_ETAS = (0.0, 0.25, 0.5, 0.75, 1.0)
# the profile terms extract_intensities searches when not given: zero
# shift (deg), crystallite size (Å, Lorentzian 1/cos θ) and microstrain
# (Gaussian tan θ); None is "not present"
_SHAPE_GRIDS = {
    "zero_shift": (-0.06, -0.04, -0.02, 0.0, 0.02, 0.04, 0.06),
    "crystallite_size": (None, 3000.0, 1000.0, 500.0, 250.0, 120.0, 60.0),
    "strain": (None, 2.5e-4, 5e-4, 1e-3, 2e-3, 3e-3),
}
# distinct peaks at most in the part of the pattern the profile is
# searched on
_SEARCH_PEAKS = 120
# groups rendered per powder_pattern call (bounds memory)
_GROUP_CHUNK = 256


@dataclass(frozen=True, eq=False)
class Reflections:
    """|F(h)|^2 extracted from a powder pattern, one of each Friedel pair.

    Attributes
    ----------
    hkl : ndarray (H, 3) int
        Every reflection ``reflections_within`` lists up to ``dstar_max``
        (symmetry-equivalent ones separately).
    dstar : ndarray (H,)
        |d*| = 1/d (Å^-1).
    f2 : ndarray (H,)
        |F(h)|^2 estimates on the pattern's (arbitrary) scale; within a
        group each member carries the group's mean; NaN where the
        reflection is not observed (outside the measured 2θ range).
    group : ndarray (H,) int
        Overlap group of each reflection, -1 where not observed.
    tth : ndarray (H,)
        2θ (deg) of the main line (NaN where it cannot diffract).
    isolated : ndarray (G,) bool
        Groups whose peak is at least two FWHM from every other group's.
    rwp : float
        Weighted-profile R of the fit.
    fwhm, eta : float
        The profile used.
    shape : dict
        The other profile terms used, given or found: zero_shift (deg),
        crystallite_size (Å), strain.
    lattice : ndarray (6,)
    wavelength : float
        The main (Kα1) wavelength (Å).
    dstar_max : float
        The resolution limit of the listed reflections (Å^-1).
    curves : dict
        x (2θ), yobs, ycalc, background of the fit; the fit's weights and
        the radiation lines ((wavelength, weight) pairs), from which
        :func:`group_profiles` renders the fitted profile again.
    """

    hkl: np.ndarray
    dstar: np.ndarray
    f2: np.ndarray
    group: np.ndarray
    tth: np.ndarray
    isolated: np.ndarray
    rwp: float
    fwhm: float
    eta: float
    lattice: np.ndarray
    wavelength: float
    dstar_max: float
    curves: dict = field(default_factory=dict, repr=False)
    shape: dict = field(default_factory=dict)

    @property
    def observed(self) -> np.ndarray:
        """(H,) bool: reflections with an extracted intensity."""
        return self.group >= 0

    @property
    def ngroups(self) -> int:
        return int(self.group.max()) + 1 if self.group.size else 0

    def group_sums(self) -> np.ndarray:
        """(G,) summed |F|^2 of each group (what the data determine)."""
        out = np.zeros(self.ngroups)
        obs = self.observed
        np.add.at(out, self.group[obs], self.f2[obs])
        return out

    def __repr__(self) -> str:
        return (
            f"Reflections({int(self.observed.sum())} observed of "
            f"{len(self.hkl)}, {self.ngroups} groups, d_min="
            f"{1 / self.dstar_max:.3f} Å, Rwp={self.rwp:.4f})"
        )


# ---------------------------------------------------------- extraction
def _lattice6(lattice) -> np.ndarray:
    if hasattr(lattice, "abc") and hasattr(lattice, "angles"):
        lat = np.array([*lattice.abc, *lattice.angles], float)
    else:
        lat = np.asarray(getattr(lattice, "lattice", lattice), float)
    if lat.shape != (6,) or not np.all(np.isfinite(lat)):
        raise PhysicsInputError(
            "lattice must be (a, b, c, alpha, beta, gamma) in Å and "
            f"degrees, got {lattice!r}."
        )
    if np.any(lat[:3] <= 0) or np.any(lat[3:] <= 0) or np.any(lat[3:] >= 180):
        raise PhysicsInputError(
            f"lattice {tuple(lat)} has non-positive lengths or angles "
            "outside (0, 180) degrees."
        )
    return lat


def _radiation_lines(pattern):
    from diffpy_mlsolve.radiation import radiation_of

    return radiation_of(pattern).lines


def _check_pattern(pattern):
    if pattern.xtype == "r":
        raise PatternFormatError(
            "A PDF G(r) holds no Bragg intensities to extract; please "
            "give a powder pattern on 2θ, Q or d."
        )
    if pattern.wavelength is None:
        raise WavelengthError(
            "Intensity extraction needs the pattern's wavelength (it is "
            "never assumed). Please load the pattern with wavelength=... "
            "or use pattern.with_wavelength(...)."
        )
    return pattern.on_tth()


def _chebyshev(x, order):
    t = 2 * (x - x[0]) / (x[-1] - x[0]) - 1
    return np.polynomial.chebyshev.chebvander(t, max(order, 1) - 1)


def _groups(tth, tol):
    """Single-linkage groups of sorted peak positions closer than tol."""
    order = np.argsort(tth, kind="stable")
    gap = np.diff(tth[order]) > tol
    ids = np.concatenate([[0], np.cumsum(gap)])
    group = np.empty(len(tth), int)
    group[order] = ids
    return group


def _isolated_groups(group, position, gap):
    """(G,) bool: groups whose position (the largest of its members') is
    more than ``gap`` from every other group's."""
    ngroups = int(group.max()) + 1
    centre = np.zeros(ngroups)
    np.maximum.at(centre, group, position)
    gaps = np.diff(np.sort(centre))
    near = np.minimum(
        np.concatenate([[np.inf], gaps]), np.concatenate([gaps, [np.inf]])
    )
    isolated = np.empty(ngroups, bool)
    isolated[np.argsort(centre, kind="stable")] = near > gap
    return isolated


def _design(dstar, group, ngroups, grid, lines, fwhm, eta, dtype, shape=None):
    """(P, G) pattern of each group with unit |F|^2 per member;
    ``shape``: zero_shift (deg), crystallite_size (Å) and strain of the
    profile, where known."""
    from diffpy_mlsolve.physics.powder import powder_pattern

    x0, step, npts = grid
    members = [np.flatnonzero(group == g) for g in range(ngroups)]
    cols = []
    for start in range(0, ngroups, _GROUP_CHUNK):
        sub = members[start : start + _GROUP_CHUNK]
        kmax = max(len(m) for m in sub)
        ds = np.ones((len(sub), kmax))
        mask = np.zeros((len(sub), kmax), bool)
        for i, m in enumerate(sub):
            ds[i, : len(m)] = dstar[m]
            mask[i, : len(m)] = True
        ds_t = torch.as_tensor(ds, dtype=dtype)
        ones = torch.ones(len(sub), dtype=dtype)
        extra = {
            k: None if v is None else v * ones
            for k, v in (shape or {}).items()
        }
        y = powder_pattern(
            torch.ones_like(ds_t),
            ds_t,
            torch.as_tensor(mask),
            (x0, step, npts),
            [(lam * ones, w) for lam, w in lines],
            fwhm=fwhm * ones,
            eta=eta * ones,
            **extra,
        )
        cols.append(y.detach().numpy().T)
    return np.concatenate(cols, 1)


def _fit(a, y, w, basis):
    """NNLS for the columns of ``a`` with the background ``basis``
    (unbounded) projected out; returns (coef, bkg_coef, ycalc)."""
    from scipy.optimize import nnls

    sw = np.sqrt(w)
    aw = a * sw[:, None]
    yw = y * sw
    bw = basis * sw[:, None]
    q, _ = np.linalg.qr(bw)

    def perp(v):
        return v - q @ (q.T @ v)

    norm = np.linalg.norm(aw, axis=0)
    norm[norm == 0] = 1.0
    ap = perp(aw / norm)
    yp = perp(yw)
    coef, _ = nnls(ap, yp, maxiter=50 * ap.shape[1])
    coef = coef / norm
    bcoef, *_ = np.linalg.lstsq(bw, yw - aw @ coef, rcond=None)
    return coef, bcoef, a @ coef + basis @ bcoef


def _fit_quick(a, y, w, basis) -> np.ndarray:
    """ycalc of the least-squares fit without the positivity, from the
    normal equations, sparse in the peak columns: what the profile
    search compares (Ca2N's 685 groups: 0.05 s against NNLS's 2.2 s in
    one run)."""
    from scipy import sparse

    sw = np.sqrt(w)
    aw = sparse.csc_matrix(a * sw[:, None])
    bw = basis * sw[:, None]
    yw = y * sw
    ata = (aw.T @ aw).toarray()
    atb = np.asarray(aw.T @ bw)
    m = np.block([[ata, atb], [atb.T, bw.T @ bw]])
    rhs = np.concatenate([aw.T @ yw, bw.T @ yw])
    scale = np.sqrt(np.maximum(np.diag(m), 1e-300))
    m = m / scale[:, None] / scale[None, :]
    m[np.diag_indices_from(m)] += 1e-10  # absent or collinear groups
    coef = np.linalg.solve(m, rhs / scale) / scale
    g = a.shape[1]
    return a @ coef[:g] + basis @ coef[g:]


def _render_grid(x):
    """((x0, step, npts), uniform): the grid peaks are rendered on; a
    non-uniform 2θ is rendered on a uniform grid and interpolated."""
    step = float(np.median(np.diff(x)))
    npts = int(round((x[-1] - x[0]) / step)) + 1
    uniform = npts == x.size and np.allclose(
        x, x[0] + step * np.arange(x.size), atol=1e-3 * step
    )
    if not uniform:
        npts = int(min(max(x.size, 1000), 40000))
        step = (x[-1] - x[0]) / (npts - 1)
    return (float(x[0]), step, npts), uniform


def group_profiles(reflections: Reflections) -> np.ndarray:
    """(P, G) the pattern of each overlap group with unit |F|^2 per
    member, on ``reflections.curves["x"]``, with the profile the
    extraction found: ``yobs ≈ group_profiles(r) @ mean |F|^2 of each
    group + background``."""
    curves = reflections.curves
    if "x" not in curves or "lines" not in curves:
        raise PhysicsInputError(
            "These reflections carry no fitted powder profile (they were "
            "not extracted from a powder pattern by extract_intensities)."
        )
    x = np.asarray(curves["x"], float)
    grid, uniform = _render_grid(x)
    obs = reflections.observed
    shape = {k: v for k, v in reflections.shape.items() if v is not None}
    a = _design(
        reflections.dstar[obs],
        reflections.group[obs],
        reflections.ngroups,
        grid if not uniform else (grid[0], grid[1], x.size),
        curves["lines"],
        reflections.fwhm,
        reflections.eta,
        torch.float64,
        shape,
    )
    if not uniform:
        xg = grid[0] + grid[1] * np.arange(grid[2])
        a = np.stack([np.interp(x, xg, col) for col in a.T], 1)
    return a


def extract_intensities(
    pattern,
    lattice,
    *,
    dmin: float | None = None,
    fwhm: float | None = None,
    eta: float | None = None,
    background_order: int = 8,
    overlap: float = 0.25,
    shape: dict | None = None,
) -> Reflections:
    """|F(h)|^2 of every reflection from a powder pattern and its cell.

    Parameters
    ----------
    pattern : Pattern
        A powder pattern on 2θ, Q or d with its wavelength; a Kα1/Kα2
        source (``metadata["source_name"]`` such as "CuKa") is modelled
        with both lines.
    lattice : (a, b, c, alpha, beta, gamma), Density, CrystalArrays or
        pymatgen Lattice
        The cell the pattern is indexed in (the conventional cell).
    dmin : float, optional
        Use only reflections with d >= dmin (Å) and the pattern up to
        their 2θ; default: the whole pattern.
    fwhm, eta : float, optional
        Peak FWHM (deg 2θ) and Lorentzian fraction; by default the pair
        with the best Rwp around the data's strongest-peak width.
    background_order : int
        Chebyshev terms of the background.
    overlap : float
        Peaks closer than this × FWHM form one group (one unknown,
        equipartition).
    shape : dict, optional
        Profile terms known from the instrument and sample: zero_shift
        (deg 2θ), crystallite_size (Å), strain (ε); a key given (None:
        absent) is not searched.  The others are found with the FWHM and
        η: grids (zero shift ±0.06°, size 60-3000 Å, strain 2.5e-4-3e-3),
        then Nelder-Mead, on the pattern down to d = 1 Å (at most 120
        peaks), then again on the whole pattern.

    Returns
    -------
    Reflections

    Raises
    ------
    PatternFormatError
        For a PDF (xtype "r"), or when no reflection lies in the range.
    WavelengthError
        For a pattern without a wavelength.
    """
    from diffpy_mlsolve.physics.reflections import reflections_within
    from diffpy_mlsolve.rfactor import estimate_fwhm, rwp

    pat = _check_pattern(pattern)
    lat = _lattice6(lattice)
    lines = _radiation_lines(pat)
    lam1 = float(pat.wavelength)
    x, y = np.asarray(pat.x, float), np.asarray(pat.intensity, float)
    if dmin is not None:
        arg = lam1 / (2 * float(dmin))
        if arg < 1:
            keep = x <= math.degrees(2 * math.asin(arg))
            x, y = x[keep], y[keep]
    if x.size < 20:
        raise PatternFormatError(
            "Too few pattern points to extract intensities from "
            f"({x.size}); please give the measured 2θ range."
        )
    sigma = None if pat.sigma is None else np.asarray(pat.sigma, float)
    if sigma is not None and dmin is not None:
        sigma = sigma[: x.size]
    if sigma is not None:
        w = 1 / np.maximum(sigma, 1e-12) ** 2
    else:  # Poisson-like, floored at the background level
        floor = max(float(np.median(np.abs(y))), 0.01 * np.abs(y).max())
        w = 1 / np.maximum(np.abs(y), max(floor, 1e-12))
    grid, uniform = _render_grid(x)
    step = grid[1]
    xg = x[0] + step * np.arange(grid[2])

    est = estimate_fwhm(x, y)
    reach = 3 * max(est, fwhm or 0.0)
    top = min(x[-1] + reach, 179.0)
    dstar_max = min(2 * math.sin(math.radians(top) / 2) / lam1, 2 / lam1)
    if dmin is not None:
        dstar_max = min(dstar_max, 1 / float(dmin))
    cell = torch.as_tensor(lat, dtype=torch.float64)[None]
    hkl_t, dstar_t, mask_t = reflections_within(cell, dstar_max)
    hkl = hkl_t.numpy()
    dstar = dstar_t[0].numpy()
    inside = mask_t[0].numpy()
    hkl, dstar = hkl[inside], dstar[inside]
    order = np.lexsort((hkl[:, 2], hkl[:, 1], hkl[:, 0], dstar))
    hkl, dstar = hkl[order], dstar[order]
    arg = lam1 * dstar / 2
    tth = np.full(dstar.shape, np.nan)
    ok = arg < 1
    tth[ok] = np.degrees(2 * np.arcsin(arg[ok]))
    basis = _chebyshev(x, background_order)

    def trial(width, mix, prof, xmax=None, quick=True):
        """(Rwp, fit) of the Le Bail-like fit with this profile, on the
        pattern up to ``xmax`` (deg 2θ) or all of it; ``quick``: the
        Rwp only, without the positivity (the fit is then None)."""
        n = x.size if xmax is None else int(np.searchsorted(x, xmax))
        n = max(n, min(x.size, 20))
        lo, hi = x[0], x[n - 1]
        obs = ok & (tth >= lo - 2 * width) & (tth <= hi + 2 * width)
        if not obs.any():
            raise PatternFormatError(
                f"No reflection of the cell {tuple(lat)} falls in the "
                f"pattern's range {x[0]:g}-{x[-1]:g} deg 2θ."
            )
        idx = np.flatnonzero(obs)
        tol = max(overlap * width, 0.5 * step)
        grp = _groups(tth[idx], tol)
        ngroups = int(grp.max()) + 1
        a = _design(
            dstar[idx],
            grp,
            ngroups,
            grid if not uniform else (grid[0], grid[1], n),
            lines,
            width,
            mix,
            torch.float64,
            prof,
        )
        if not uniform:
            a = np.stack([np.interp(x, xg, col) for col in a.T], 1)[:n]
        if quick:
            return (
                rwp(y[:n], _fit_quick(a, y[:n], w[:n], basis[:n]), w[:n]),
                None,
            )
        coef, bcoef, ycalc = _fit(a, y[:n], w[:n], basis[:n])
        return rwp(y[:n], ycalc, w[:n]), dict(
            idx=idx,
            grp=grp,
            coef=coef,
            ycalc=ycalc,
            bkg=basis[:n] @ bcoef,
            fwhm=width,
            eta=mix,
            shape=dict(prof),
        )

    # the profile is searched on the pattern down to d = 1 Å (where the
    # peaks stand clear of the noise) and over at most _SEARCH_PEAKS
    # distinct peaks (a trial's cost grows with the groups); then the
    # broadening, η, width and zero shift again on the whole pattern
    # (terms that fit the low angles can misfit the high ones: CaF2's
    # Rwp went 0.03 -> 0.09 without this)
    arg = lam1 / 2.0
    xfit = math.degrees(2 * math.asin(arg)) if arg < 1 else math.inf
    peaks = np.unique(np.round(tth[ok & (tth >= x[0])], 2))
    if peaks.size > _SEARCH_PEAKS:
        xfit = min(xfit, float(peaks[_SEARCH_PEAKS]))
    if np.searchsorted(x, xfit) < 0.3 * x.size:
        xfit = float(x[int(0.3 * x.size)])
    if xfit >= x[-1]:
        xfit = None
    prof = {k: v for k, v in (shape or {}).items() if v is not None}
    free = [k for k in _SHAPE_GRIDS if k not in (shape or {})]
    state = {
        "fwhm": fwhm if fwhm is not None else est * 0.75,
        "eta": eta if eta is not None else _ETAS[len(_ETAS) // 2],
        "prof": prof,
    }
    region = [xfit]  # the pattern's end for the trials (None: all)
    best = [trial(state["fwhm"], state["eta"], prof, xfit)[0]]  # Rwp

    def consider(width=None, mix=None, **change):
        p = dict(state["prof"], **change)
        p = {k: v for k, v in p.items() if v is not None}
        width = state["fwhm"] if width is None else width
        mix = state["eta"] if mix is None else mix
        r = trial(width, mix, p, region[0])[0]
        if r < best[0]:
            best[0] = r
            state.update(fwhm=width, eta=mix, prof=p)
        return r

    def widths():
        if fwhm is None:
            for f in _WIDTH_FACTORS:
                consider(width=est * f)

    def mixes():
        if eta is None:
            for e in _ETAS:
                consider(mix=e)

    widths()
    mixes()
    if "zero_shift" in free:  # coarse to fine around the best
        for z in _SHAPE_GRIDS["zero_shift"]:
            consider(zero_shift=z)
        for d in (0.01, 0.005, 0.0025):
            z0 = state["prof"].get("zero_shift", 0.0)
            for z in (z0 - d, z0 + d):
                consider(zero_shift=z)

    def broadening():
        for key in ("crystallite_size", "strain"):
            if key in free:
                for v in _SHAPE_GRIDS[key]:
                    consider(**{key: v})

    def finer_widths():
        if fwhm is None:
            wd0 = state["fwhm"]
            for f in (0.9, 1.1):
                consider(width=wd0 * f)

    def polish(maxfev):
        """Nelder-Mead from the best so far over the free terms: the
        grids above only bracket them (noise-free Al2O3: Rwp 0.10 on
        the grids, 0.0002 at the true profile)."""
        from scipy.optimize import minimize

        keys, x0, steps = [], [], []
        if fwhm is None:
            keys.append("fwhm")
            x0.append(math.log(state["fwhm"]))
            steps.append(0.15)
        if eta is None:
            keys.append("eta")
            x0.append(state["eta"])
            steps.append(0.15)
        prof0 = state["prof"]
        for key, to, step in (
            ("zero_shift", lambda v: v, 0.01),
            ("crystallite_size", lambda v: 100.0 / v, 0.1),
            ("strain", lambda v: 1e3 * v, 0.3),
        ):
            if key in free:
                keys.append(key)
                x0.append(to(prof0[key]) if key in prof0 else 0.0)
                steps.append(step)
        if not keys:
            return

        def unpack(v):
            out = dict(zip(keys, v))
            width = math.exp(out["fwhm"]) if "fwhm" in out else None
            mix = min(max(out["eta"], 0.0), 1.0) if "eta" in out else None
            change = {}
            if "zero_shift" in out:
                change["zero_shift"] = float(out["zero_shift"])
            if "crystallite_size" in out:
                inv = abs(out["crystallite_size"])
                change["crystallite_size"] = (
                    100.0 / inv if inv > 1e-3 else None
                )
            if "strain" in out:
                eps = abs(out["strain"]) * 1e-3
                change["strain"] = eps if eps > 1e-6 else None
            return width, mix, change

        def objective(v):  # every free term is set: state-independent
            width, mix, change = unpack(v)
            return consider(width=width, mix=mix, **change)

        x0 = np.asarray(x0, float)
        simplex = np.vstack([x0] + [x0 + d for d in np.diag(steps)])
        minimize(
            objective,
            x0,
            method="Nelder-Mead",
            options=dict(
                initial_simplex=simplex,
                maxfev=maxfev,
                xatol=1e-4,
                fatol=1e-5,
            ),
        )

    broadening()
    widths()
    mixes()
    finer_widths()
    polish(60)
    if region[0] is not None:  # again on the whole pattern
        region[0] = None
        best[0] = trial(state["fwhm"], state["eta"], state["prof"])[0]
        broadening()
        polish(40)
    r, fit = trial(state["fwhm"], state["eta"], state["prof"], quick=False)
    idx, grp = fit["idx"], fit["grp"]
    group = np.full(len(hkl), -1)
    group[idx] = grp
    f2 = np.full(len(hkl), np.nan)
    f2[idx] = fit["coef"][grp]
    # a group is isolated when no other group's peak is within 2 FWHM
    isolated = _isolated_groups(grp, tth[idx], 2 * fit["fwhm"])
    return Reflections(
        hkl=hkl.astype(int),
        dstar=dstar,
        f2=f2,
        group=group,
        tth=tth,
        isolated=isolated,
        rwp=float(r),
        fwhm=float(fit["fwhm"]),
        eta=float(fit["eta"]),
        lattice=lat,
        wavelength=lam1,
        dstar_max=float(dstar_max),
        curves={
            "x": x,
            "yobs": y,
            "ycalc": fit["ycalc"],
            "background": fit["bkg"],
            "weights": w,
            "lines": lines,
        },
        shape=fit["shape"],
    )


# ------------------------------------------------------ lattice centring
#: The integral reflection conditions of the lattice centrings, tried
#: from the highest order down (F implies C, A and B): hkl is allowed
#: when h·v is a multiple of m for every (v, m).  "R" is the obverse
#: rhombohedral lattice on hexagonal axes (-h + k + l = 3n).
CENTRING_CONDITIONS = {
    "F": (((1, 1, 0), 2), ((0, 1, 1), 2)),
    "I": (((1, 1, 1), 2),),
    "C": (((1, 1, 0), 2),),
    "A": (((0, 1, 1), 2),),
    "B": (((1, 0, 1), 2),),
    "R": (((-1, 1, 1), 3),),
}
_REVERSE_R = (((1, -1, 1), 3),)


def _allowed(hkl, conditions) -> np.ndarray:
    """(H,) bool: the reflections that meet every (v, m) condition."""
    hkl = np.asarray(hkl, int).reshape(-1, 3)
    ok = np.ones(len(hkl), bool)
    for v, m in conditions:
        ok &= (hkl @ np.asarray(v)) % m == 0
    return ok


#: A centring is taken when this quantile of the normalised intensities
#: of the isolated groups it forbids ...
CENTRING_QUANTILE = 0.75
#: ... is below this (on realistic Cu Kα patterns: 0.0001-0.008 for the
#: true centrings of NaCl, CaF2, ZnS, W, Al2O3 and Bi2Se3; 0.087 for I
#: in NaCl, 0.12 in rutile (Ti pseudo-I), 0.28 in SrTiO3; on the test
#: split's patterns, with size and strain broadening, 0.0007-0.084 for
#: the true ones and 0.039-0.042 for DyIn's and CeHg's pseudo-I).
CENTRING_THRESHOLD = 0.04
#: ... and at least this many isolated groups are forbidden by it.
CENTRING_MIN_GROUPS = 3


def _hexagonal_axes(lattice) -> bool:
    a, b, _, alpha, beta, gamma = np.asarray(lattice, float)
    return (
        abs(a - b) < 1e-3 * a
        and abs(alpha - 90) < 0.1
        and abs(beta - 90) < 0.1
        and abs(gamma - 120) < 0.1
    )


def _forbidden(hkl, centring):
    """(H,) bool: reflections the centring extinguishes.  For "R" a
    reflection counts only when neither the obverse nor the reverse
    setting allows it (a powder pattern does not tell them apart)."""
    allowed = _allowed(hkl, CENTRING_CONDITIONS[centring])
    if centring == "R":
        allowed |= _allowed(hkl, _REVERSE_R)
    return ~allowed


def _centring_ratios(refl: Reflections, name: str) -> np.ndarray:
    """:func:`extinction_ratios` of the centring ``name``'s extinctions."""
    return extinction_ratios(refl, lambda hkl: _forbidden(hkl, name))


def extinction_ratios(refl: Reflections, forbidden) -> np.ndarray:
    """Normalised intensity (mean |F|^2 per member over that of the
    allowed isolated groups of its |d*| shell) of each isolated group
    whose members ``forbidden`` ((H, 3) hkl -> (H,) bool: a centring's or
    a space group's extinctions) all forbids; empty when there are too
    few groups to judge."""
    obs = refl.observed & np.isfinite(refl.f2)
    ng = refl.ngroups
    # (groups cut off at the high-angle end leave ``isolated`` longer)
    if ng == 0 or refl.isolated is None or len(refl.isolated) < ng:
        return np.zeros(0)
    g = refl.group[obs]
    count = np.bincount(g, minlength=ng)
    per_member = refl.group_sums() / np.maximum(count, 1)
    dstar = np.zeros(ng)
    np.maximum.at(dstar, g, refl.dstar[obs])
    isolated = np.asarray(refl.isolated, bool)[:ng] & (count > 0)
    all_forbidden = np.ones(ng, bool)
    np.logical_and.at(all_forbidden, g, forbidden(refl.hkl[obs]))
    test = isolated & all_forbidden
    ref = isolated & ~all_forbidden
    if test.sum() < CENTRING_MIN_GROUPS or ref.sum() < 3:
        return np.zeros(0)
    edges = np.quantile(dstar[ref], np.linspace(0, 1, 6))
    shell = np.clip(np.searchsorted(edges, dstar, "right") - 1, 0, 4)
    ratios = []
    for i in np.flatnonzero(test):
        mates = ref & (shell == shell[i])
        mean = per_member[mates].mean() if mates.any() else 0.0
        # no allowed group to compare with: counts as observed
        ratios.append(per_member[i] / mean if mean > 0 else 1.0)
    return np.array(ratios)


def find_centring(reflections: Reflections) -> str | None:
    """The lattice centring the extracted intensities show, or None.

    For each centring (F, I, C, A, B; on hexagonal axes R only) the isolated
    groups whose members it all forbids are compared with the allowed
    isolated groups of the same |d*| shell (mean |F|^2 per member): a
    centring is taken when at least :data:`CENTRING_QUANTILE` of the
    forbidden ones are below :data:`CENTRING_THRESHOLD` (with at least
    :data:`CENTRING_MIN_GROUPS` of them).  Overlapped groups are left
    out: a neighbour's tail makes a forbidden group look observed.

    Intensities cannot tell a centring from a strong pseudo-centring: a
    light-atom one (rutile's Ti is body-centred, its O is not) is not
    taken, but a CsCl-type cell of two heavy atoms, (ΔZ/ΣZ)^2 ≈ 0.02
    (DyIn), is taken as I.  On the realistic patterns of the first 15
    cubic and 15 trigonal test structures: R found for 9 of 11
    R-centred cells (none of 4 P), F for 3 of 6 F cells, I for 0 of 1,
    and I for 1 of 8 P cubic cells (DyIn).

    Reflections fitted to a G(r) are tested by the fit instead
    (:func:`~diffpy_mlsolve.pdf_intensities.pdf_centring`).
    """
    refl = reflections
    if "envelope" in refl.curves:  # fitted to a G(r): tested by the fit
        from diffpy_mlsolve.pdf_intensities import pdf_centring

        return pdf_centring(refl)
    # on hexagonal axes the lattice is P or R; F, I, C, A and B would
    # be confounded there with R's extinctions
    if _hexagonal_axes(refl.lattice):
        names = ["R"]
    else:
        names = [c for c in CENTRING_CONDITIONS if c != "R"]
    for name in names:
        ratios = _centring_ratios(refl, name)
        if ratios.size and (
            np.quantile(ratios, CENTRING_QUANTILE) < CENTRING_THRESHOLD
        ):
            return name
    return None


def check_centring(centring: str, lattice=None) -> None:
    """Raise a PhysicsInputError unless ``centring`` is one of
    :data:`CENTRING_CONDITIONS` (and, for "R" with a ``lattice``, the
    cell is on hexagonal axes)."""
    if centring not in CENTRING_CONDITIONS:
        raise PhysicsInputError(
            f"Unknown centring {centring!r}; please use one of "
            f"{tuple(CENTRING_CONDITIONS)}, or None."
        )
    if centring == "R" and lattice is not None:
        if not _hexagonal_axes(lattice):
            raise PhysicsInputError(
                "The R centring is defined on hexagonal axes (a = b, "
                "alpha = beta = 90°, gamma = 120°); the cell "
                f"{tuple(np.round(np.asarray(lattice, float), 4))} is "
                "not. Please give the hexagonal cell, or no centring."
            )


def centred(reflections: Reflections, centring: str | None) -> Reflections:
    """The reflections with ``centring``'s extinctions imposed: each
    forbidden reflection gets |F|^2 = 0 and its group's sum is shared
    among the allowed members (a group wholly forbidden is set to 0); a
    forbidden member of a group with allowed ones is moved to a group of
    its own (not isolated), which keeps it at 0 when groups are
    re-divided (``charge_flip(repartition=True)``).
    For "R" the obverse setting is taken (the reverse is the same
    crystal turned 180° about c).  None: unchanged."""
    if centring is None:
        return reflections
    refl = reflections
    check_centring(centring, refl.lattice)
    allowed = _allowed(refl.hkl, CENTRING_CONDITIONS[centring])
    obs = refl.observed & np.isfinite(refl.f2)
    ng = refl.ngroups
    sums = refl.group_sums()
    n_allowed = np.zeros(ng)
    np.add.at(n_allowed, refl.group[obs], allowed[obs])
    f2 = np.array(refl.f2, float)
    share = sums / np.maximum(n_allowed, 1)
    f2[obs] = np.where(allowed[obs], share[refl.group[obs]], 0.0)
    # a forbidden member of a mixed group becomes a group of its own, so
    # that re-dividing a group by the map cannot give it a share again
    group = np.array(refl.group)
    mixed = n_allowed[np.maximum(group, 0)] > 0
    move = np.flatnonzero(obs & ~allowed & mixed)
    group[move] = ng + np.arange(move.size)
    isolated = np.zeros(ng + move.size, bool)
    iso = np.asarray(refl.isolated, bool)[:ng]
    isolated[: iso.size] = iso
    return replace(refl, f2=f2, group=group, isolated=isolated)


# ------------------------------------------------------- charge flipping
def _half_positions(hkl, n):
    """Flat indices into an rfftn array (n, n, n//2+1) of h and -h.

    Returns (pos, sign, ref): the flat index, +1 where the position holds
    h (value conj F(h) · N^3/V), -1 where it holds -h (value F(h) · ...),
    and the reflection each position belongs to.
    """
    m = n // 2 + 1
    pos, sign, ref = [], [], []
    for s in (1, -1):
        hh = s * hkl
        sel = np.flatnonzero(hh[:, 2] >= 0)
        idx = np.mod(hh[sel], n)
        pos.append((idx[:, 0] * n + idx[:, 1]) * m + idx[:, 2])
        sign.append(np.full(sel.size, s))
        ref.append(sel)
    return np.concatenate(pos), np.concatenate(sign), np.concatenate(ref)


def _shell_norm(dstar, f2, nbins=12):
    """<|F|^2> as a smooth function of |d*|^2 (for E-like amplitudes)."""
    s2 = dstar**2
    ok = np.isfinite(f2) & (f2 > 0)
    if ok.sum() < 4:
        return np.ones_like(dstar)
    edges = np.quantile(s2[ok], np.linspace(0, 1, nbins + 1))
    centre, mean = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = ok & (s2 >= lo) & (s2 <= hi)
        if sel.sum():
            centre.append(s2[sel].mean())
            mean.append(f2[sel].mean())
    centre, mean = np.array(centre), np.maximum(np.array(mean), 1e-30)
    if len(centre) < 2:
        return np.full_like(dstar, mean[0])
    logm = np.interp(s2, centre, np.log(mean))
    return np.exp(logm)


def _start_phases(start, hkl, lattice, volume):
    """Phases (radians, of F(h)) of a start Density at ``hkl``."""
    from diffpy_mlsolve.physics.density import structure_factors_from_density

    vals = np.array(start.values, float)
    n = vals.shape[0]
    keep = np.all(np.abs(hkl) < n / 2, axis=1)
    phases = np.zeros(len(hkl))
    rho = torch.as_tensor(vals, dtype=torch.float64)[None]
    vol = torch.tensor([float(volume)], dtype=torch.float64)
    fh = structure_factors_from_density(
        rho, vol, torch.as_tensor(hkl[keep], dtype=torch.long)
    )[0].numpy()
    phases[keep] = np.angle(fh)
    return phases, keep


def charge_flip(
    reflections: Reflections,
    lattice,
    grid: int,
    *,
    start=None,
    iterations: int = 300,
    delta: float | None = None,
    seed: int = 0,
    electrons: float | None = None,
    normalize: bool = False,
    repartition: bool = False,
    polish: int = 30,
    weak: float = 0.0,
    symmetry=None,
):
    """Charge flipping from extracted intensities to a density.

    Parameters
    ----------
    reflections : Reflections
        From :func:`extract_intensities` (or any with hkl, dstar, f2 and
        group; NaN |F|^2 = not observed).
    lattice : (a, b, c, alpha, beta, gamma), Density, CrystalArrays or
        pymatgen Lattice
        The cell (that of ``reflections``).
    grid : int
        Points per cell edge N; reflections beyond the grid's band
        limit (``dstar_cutoff``) are left out.
    start : Density, optional
        A density (any grid) whose phases start the iteration; where it
        does not resolve a reflection, and without it, phases are random
        (seeded).
    iterations : int
        Flip cycles.
    delta : float, optional
        The flipping threshold δ as a multiple of σ(ρ) of the current
        map (recomputed every cycle); default 0.8 (1.1 with
        ``normalize``), the best on textbook cubic structures.
    seed : int
        Seed of the random phases.
    electrons : float, optional
        Electrons in the cell: F(000), which puts the returned density
        in e/Å^3.  Without it the map's scale is that of the |F|^2.
    normalize : bool
        Iterate on shell-normalised amplitudes (E-like, sharper atoms);
        off by default: worse on the textbook tests.
    repartition : bool
        Re-divide each overlap group's intensity among its members by
        the current map's |G|^2 every 10 cycles (after a third of them);
        off by default: it lost CaF2 and SrTiO3 in the tests.
    weak : float
        Fraction of the present (non-zero) reflections, the weakest,
        whose phase
        is shifted by π/2 (modulus kept) instead of taking |F_obs|.
    polish : int
        Cycles on the un-normalised amplitudes after the best map.
    symmetry : MapSymmetry or (rotations, translations), optional
        Operations (in the map's frame, origin at 0) the map is averaged
        over every cycle (:func:`diffpy_mlsolve.mapsymmetry.average`):
        flipping constrained to a space group, e.g. one found in a P1
        flipped map and moved to its origin by
        :func:`~diffpy_mlsolve.mapsymmetry.symmetrize`.  ``grid`` must
        then be a multiple of 12.

    Returns
    -------
    Density
        metadata: {"phasing": "charge flipping", "r_flip": best R,
        "iterations": cycles run, "seed", "delta", "start"}.
    """
    from diffpy_mlsolve.density import Density
    from diffpy_mlsolve.physics.density import dstar_cutoff
    from diffpy_mlsolve.structures import cell_volume

    lat = _lattice6(lattice)
    n = int(grid)
    if n < 8:
        raise PhysicsInputError(f"grid must be >= 8 points, got {grid}.")
    if int(iterations) < 1:
        raise PhysicsInputError(f"iterations must be >= 1, got {iterations}.")
    volume = float(cell_volume(lat))
    cut = float(dstar_cutoff(lat, n)[0])
    hkl = np.asarray(reflections.hkl, int)
    dstar = np.asarray(reflections.dstar, float)
    f2 = np.asarray(reflections.f2, float)
    group = np.asarray(reflections.group, int)
    limit = min(cut, float(np.max(dstar)) + 1e-9)
    inside = (dstar <= limit) & np.all(np.abs(hkl) <= (n - 1) // 2, axis=1)
    hkl, dstar, f2, group = (
        hkl[inside],
        dstar[inside],
        f2[inside],
        group[inside],
    )
    obs = np.isfinite(f2) & (group >= 0)
    if obs.sum() < 3:
        raise PhysicsInputError(
            f"Only {int(obs.sum())} observed reflections lie within the "
            f"{n}^3 grid's band limit; please use a finer grid."
        )
    f2 = np.where(obs, np.maximum(np.nan_to_num(f2), 0.0), 0.0)
    norm = _shell_norm(dstar, np.where(obs, f2, np.nan)) if normalize else 1.0
    norm = np.ones_like(dstar) * norm
    scale = n**3 / volume
    # groups for repartitioning: only groups with several members
    ids = np.where(obs, group, -1)
    uniq, ginv = np.unique(ids[obs], return_inverse=True)
    gsum = np.zeros(len(uniq))
    np.add.at(gsum, ginv, f2[obs])
    gsize = np.bincount(ginv, minlength=len(uniq))
    shared = obs.copy()
    shared[obs] = gsize[ginv] > 1
    obs_idx = np.flatnonzero(obs)

    pos, sign, ref = _half_positions(hkl, n)
    m = n // 2 + 1
    keep = np.zeros(n * n * m, bool)
    keep[pos] = True
    keep[0] = True  # F(000) evolves freely
    pos_obs = obs[ref]
    p_obs, s_obs, r_obs = pos[pos_obs], sign[pos_obs], ref[pos_obs]
    # the weakest observed reflections get their phase shifted by π/2
    # instead of the modulus set (Oszlányi & Sütő, Acta Cryst. A61, 147
    # (2005)): keeps the iteration out of the 'one heavy atom' trap
    # (among the non-zero ones: absences stay zero by themselves)
    present = obs & (f2 > 1e-6 * f2.max())
    rank = np.argsort(np.argsort(np.where(present, f2 / norm, np.inf)))
    is_weak = present & (rank < weak * present.sum())
    w_obs = is_weak[r_obs]
    shift = np.exp(-1j * s_obs[w_obs] * math.pi / 2)

    rng = np.random.default_rng(seed)
    phases = rng.uniform(-math.pi, math.pi, len(hkl))
    if start is not None:
        ph, known = _start_phases(start, hkl, lat, volume)
        phases = np.where(known, ph, phases)
    if delta is None:
        delta = 1.1 if normalize else 0.8
    ops = None
    if symmetry is not None:
        from diffpy_mlsolve.mapsymmetry import symmetry_ops

        ops = symmetry_ops(symmetry)
    sym_average = _sym_average(ops, n)

    def run(amp_ref, phase0, cycles, k, part):
        """The flip loop; amp_ref (H,) target |F| (any scale)."""
        amp_ref = amp_ref.copy()
        a = np.zeros(n * n * m, complex)
        # A(h) = scale · conj F(h) at +h, scale · F(h) at -h
        a[p_obs] = scale * amp_ref[r_obs] * np.exp(-1j * s_obs * phase0[r_obs])
        rho = sym_average(
            np.fft.irfftn(a.reshape(n, n, m), s=(n, n, n), axes=(0, 1, 2))
        )
        best = (np.inf, rho, 0)
        target = scale * amp_ref[r_obs]
        den = float(target.sum())
        for it in range(cycles):
            sig = float(rho.std())
            flipped = np.where(rho < k * sig, -rho, rho)
            g = np.fft.rfftn(flipped).ravel()
            gabs = np.abs(g[p_obs])
            r = float(np.abs(gabs - target).sum() / den)
            if part and shared.any() and it >= cycles // 3 and it % 10 == 0:
                amp_ref, target = _repartition(
                    amp_ref,
                    g,
                    pos,
                    ref,
                    obs_idx,
                    shared,
                    ginv,
                    gsum,
                    norm,
                    scale,
                    r_obs,
                    p_obs,
                )
                den = float(target.sum())
            g = np.where(keep, g, 0)
            safe = np.where(gabs > 0, gabs, 1.0)
            unit = np.where(gabs > 0, g[p_obs] / safe, 1.0)
            new = target * unit
            if k > 0 and w_obs.any():  # weak: |G| kept, phase + π/2
                new[w_obs] = g[p_obs][w_obs] * shift
            g[p_obs] = new
            rho = sym_average(
                np.fft.irfftn(g.reshape(n, n, m), s=(n, n, n), axes=(0, 1, 2))
            )
            if r < best[0]:
                best = (r, rho, it + 1)
        return best, amp_ref

    amp = np.sqrt(f2 / norm)
    (r_best, rho_best, it_best), amp_final = run(
        amp, phases, int(iterations), float(delta), repartition
    )
    # phases of the best map, then polish on the un-normalised |F|
    g = np.fft.rfftn(rho_best).ravel()
    ph_best = np.zeros(len(hkl))
    ph_best[r_obs] = -s_obs * np.angle(g[p_obs])
    f2_final = amp_final**2 * norm
    r_pol = None
    if polish and polish > 0:
        (r_pol, rho_pol, _), _ = run(
            np.sqrt(f2_final), ph_best, int(polish), 0.0, False
        )
        rho_best = rho_pol
    # the map from |F_obs| with the final phases, the unobserved F(h)
    # inside the sphere as flipping left them, and the F(000) it carries
    g = np.fft.rfftn(rho_best).ravel()
    final = np.where(keep, g, 0)
    unit = g[p_obs] / np.maximum(np.abs(g[p_obs]), 1e-300)
    final[p_obs] = scale * np.sqrt(f2_final[r_obs]) * unit
    f000 = float(g[0].real)
    rho = sym_average(
        np.fft.irfftn(final.reshape(n, n, m), s=(n, n, n), axes=(0, 1, 2))
    )
    if electrons is not None:  # F(000) := electrons, scale to match
        if f000 <= 0:  # no usable F(000): put the map's minimum at 0
            rho = rho - rho.min()
        rho = rho * (float(electrons) / volume / max(rho.mean(), 1e-30))
    return Density(
        rho,
        lat,
        resolution=float(1 / limit),
        label="charge flipping",
        metadata={
            "phasing": "charge flipping",
            "r_flip": float(r_best),
            "r_polish": None if r_pol is None else float(r_pol),
            "iterations": int(iterations),
            "best_iteration": int(it_best),
            "seed": int(seed),
            "delta": float(delta),
            "start": None if start is None else str(start.label or "map"),
            "symmetry": None if symmetry is None else len(ops[0]),
        },
    )


def _sym_average(ops, n):
    """ρ → ρ averaged over the operations ``ops`` (identity if None)."""
    if ops is None:
        return lambda rho: rho
    from diffpy_mlsolve.mapsymmetry import averager, symmetry_grid

    if n % 12:
        raise PhysicsInputError(
            f"Flipping with symmetry needs a grid of a multiple of 12 (the "
            f"space-group translations on grid points); got {n}, please use "
            f"{symmetry_grid(n)}."
        )
    return averager(*ops, n)


def _repartition(
    amp_ref,
    g,
    pos,
    ref,
    obs_idx,
    shared,
    ginv,
    gsum,
    norm,
    scale,
    r_obs,
    p_obs,
):
    """Re-divide group intensities by the current |G|^2 of each member."""
    gabs2 = np.zeros(len(amp_ref))
    gabs2[ref] = np.abs(g[pos]) ** 2  # |G(h)| = |G(-h)|: either will do
    cur = gabs2[obs_idx] / scale**2 * norm[obs_idx]
    tot = np.zeros(len(gsum))
    np.add.at(tot, ginv, cur)
    share = np.where(tot[ginv] > 0, cur / np.where(tot > 0, tot, 1)[ginv], 0)
    new_f2 = gsum[ginv] * share
    amp = amp_ref.copy()
    sel = shared[obs_idx]
    amp[obs_idx[sel]] = np.sqrt(new_f2[sel] / norm[obs_idx[sel]])
    target = scale * amp[r_obs]
    return amp, target
