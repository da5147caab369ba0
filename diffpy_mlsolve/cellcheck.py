"""Is the given cell consistent with the pattern?

Before solving, the strongest peaks of the pattern
(:func:`diffpy_mlsolve.indexing.find_pattern_peaks`) must sit where the
cell has reflections: any lattice of that cell, primitive, so centring
extinctions never reject a right cell.  A peak more than its own
uncertainty (at least 0.6 FWHM) from every reflection is unindexed; when
more than ``max_unindexed`` of the strongest peaks are, the cell is wrong
for these data (or the wavelength is) and the solver says so instead of
returning structures that cannot fit.
"""

from __future__ import annotations

import math

import numpy as np

from diffpy_mlsolve.errors import StructureError

__all__ = ["reflection_q", "unindexed_peaks", "check_cell"]


def reflection_q(lattice, qmax: float) -> np.ndarray:
    """Distinct Q = 2π/d (Å^-1) of a primitive lattice up to ``qmax``."""
    from diffpy_mlsolve.symmetry import _matrix

    real = _matrix(lattice)
    recip = 2 * math.pi * np.linalg.inv(real).T  # rows: a*, b*, c*
    # |h| <= Q |a| / 2π for any reflection within Q
    hmax = [
        int(math.ceil(qmax * np.linalg.norm(real[i]) / (2 * math.pi))) + 1
        for i in range(3)
    ]
    rng = [np.arange(-m, m + 1) for m in hmax]
    hkl = np.stack(np.meshgrid(*rng, indexing="ij"), -1).reshape(-1, 3)
    q = np.linalg.norm(hkl @ recip, axis=1)
    q = q[(q > 0) & (q <= qmax)]
    return np.unique(np.round(q, 6))


def _q_of(peaks, pattern):
    """Peak Q (Å^-1) and a tolerance per peak."""
    q = 2 * math.pi / peaks.d
    sig_q = q * peaks.d_sigma / peaks.d
    if peaks.xtype == "tth":
        lam = pattern.wavelength
        theta = np.radians(peaks.position) / 2
        fwhm_q = (
            (4 * math.pi / lam) * np.cos(theta) * np.radians(peaks.fwhm) / 2
        )
    elif peaks.xtype == "q":
        fwhm_q = np.full_like(q, peaks.fwhm)
    else:  # d
        fwhm_q = q * peaks.fwhm / peaks.d
    return q, np.maximum(3 * sig_q, 0.6 * fwhm_q)


def _lines(pattern, q_calc, lam=None):
    """Calculated Q with the Kα2 copies a doublet source adds (as a
    pattern on the Kα1 wavelength shows them)."""
    from diffpy_mlsolve.radiation import radiation_of

    if pattern.xtype != "tth":
        return q_calc
    rad = radiation_of(pattern)
    if rad.wavelength2 is None:
        return q_calc
    both = np.concatenate([q_calc, q_calc * rad.wavelength2 / rad.wavelength])
    return np.unique(both)


def _count_bad(calc, q, tol):
    idx = np.clip(np.searchsorted(calc, q), 1, len(calc) - 1)
    near = np.minimum(np.abs(calc[idx] - q), np.abs(calc[idx - 1] - q))
    return near > tol


def unindexed_peaks(
    pattern, lattice, *, top: int = 15, max_zero_shift: float = 0.15
):
    """The strongest peaks (up to ``top``) the cell cannot index.

    For a 2θ pattern a zero shift up to ``max_zero_shift`` degrees is
    allowed (the one that indexes most peaks).

    Returns
    -------
    (unindexed, checked) : (list of float, int)
        Positions on the pattern's own axis of the unindexed peaks, and
        how many peaks were checked.
    """
    from diffpy_mlsolve.indexing import find_pattern_peaks

    peaks = find_pattern_peaks(pattern)
    order = np.argsort(-peaks.intensity)[:top]
    q, tol = _q_of(peaks, pattern)
    q, tol, pos = q[order], tol[order], peaks.position[order]
    calc = reflection_q(lattice, float(q.max() + tol.max()) * 1.05)
    calc = _lines(pattern, calc)
    bad = _count_bad(calc, q, tol)
    if pattern.xtype == "tth" and bad.any():
        lam = pattern.wavelength
        for zero in np.arange(-max_zero_shift, max_zero_shift + 1e-9, 0.005):
            tth = np.radians(pos - zero)
            shifted = 4 * math.pi * np.sin(tth / 2) / lam
            trial = _count_bad(calc, shifted, tol)
            if trial.sum() < bad.sum():
                bad = trial
    return [float(p) for p in pos[bad]], int(len(q))


def check_cell(
    pattern, lattice, *, top: int = 15, max_unindexed: float = 0.2
) -> None:
    """Raise if the cell leaves too many strong peaks unindexed.

    Raises
    ------
    StructureError
        Naming the unindexed peaks and what to check.
    """
    bad, checked = unindexed_peaks(pattern, lattice, top=top)
    if checked and len(bad) > max_unindexed * checked:
        units = {"tth": "2θ = {:.3f}°", "q": "Q = {:.4f} Å^-1"}
        fmt = units.get(pattern.xtype, "d = {:.4f} Å")
        where = ", ".join(fmt.format(p) for p in sorted(bad)[:6])
        cell = ", ".join(f"{v:g}" for v in lattice)
        raise StructureError(
            f"The cell ({cell}) has no reflection near {len(bad)} of the "
            f"{checked} strongest peaks ({where}). Please check the cell "
            "and the wavelength, or leave the cell out to index the "
            "pattern."
        )
