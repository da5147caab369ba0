"""What the network sees of a pattern: one place, used by training and by
the solver alike.

A measured powder pattern (any xtype the wavelength can turn into Q) is
1. put on Q (Å^-1);
2. freed of a smooth background (clipped Chebyshev, see
   :mod:`diffpy_mlsolve.background`);
3. averaged into the bins of the model's fixed Q grid (so narrow peaks
   keep their area whatever the step), with a mask of the bins the
   measurement covers;
4. scaled so that its strongest covered bin is 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from diffpy_mlsolve.background import chebyshev_background_fit
from diffpy_mlsolve.errors import PatternFormatError

__all__ = ["QGrid", "DEFAULT_QGRID", "pattern_to_input", "bin_average"]


@dataclass(frozen=True)
class QGrid:
    """The model's fixed, uniform Q grid (bin centres, Å^-1).

    The default spans 0.3-12.3 Å^-1 in 2400 bins of 0.005 Å^-1: lab Cu Kα
    reaches Q = 7.9 at 2θ = 150°, Mo Kα and synchrotron data the rest.
    """

    qmin: float = 0.3
    qmax: float = 12.3
    npoints: int = 2400

    @property
    def step(self) -> float:
        return (self.qmax - self.qmin) / self.npoints

    @property
    def centres(self) -> np.ndarray:
        return self.qmin + self.step * (np.arange(self.npoints) + 0.5)

    @property
    def edges(self) -> np.ndarray:
        return self.qmin + self.step * np.arange(self.npoints + 1)


DEFAULT_QGRID = QGrid()


def bin_average(q: np.ndarray, y: np.ndarray, grid: QGrid):
    """Average (q, y) samples into the grid's bins.

    Bins holding no sample but inside the measured range take the
    linear interpolation at their centre.

    Returns
    -------
    values, mask : ndarray (npoints,)
        Bin values and True where the measurement covers the bin.
    """
    edges = grid.edges
    idx = np.searchsorted(edges, q, side="right") - 1
    inside = (idx >= 0) & (idx < grid.npoints)
    sums = np.bincount(idx[inside], y[inside], minlength=grid.npoints)
    counts = np.bincount(idx[inside], minlength=grid.npoints)
    centres = grid.centres
    mask = (centres >= q[0]) & (centres <= q[-1])
    values = np.interp(centres, q, y)
    has = counts > 0
    values[has] = sums[has] / counts[has]
    mask |= has
    return np.where(mask, values, 0.0), mask


def pattern_to_input(pattern, grid: QGrid = DEFAULT_QGRID, background=True):
    """Model input of a powder pattern: (values, mask) on ``grid``.

    Parameters
    ----------
    pattern : Pattern
        A powder pattern in 2θ (with a wavelength), Q or d.
    grid : QGrid
    background : bool
        Subtract a clipped-Chebyshev background first.

    Raises
    ------
    PatternFormatError
        If the pattern is a PDF, or covers none of the grid.
    WavelengthError
        If a 2θ pattern has no wavelength.
    """
    if pattern.xtype == "r":
        raise PatternFormatError(
            "This is a PDF G(r), not a powder pattern: the PXRD model "
            "cannot use it."
        )
    pat = pattern.on_q()
    q, y = pat.x, pat.intensity
    if background:
        y = y - chebyshev_background_fit(q, y)
    values, mask = bin_average(q, y, grid)
    if not mask.any():
        raise PatternFormatError(
            f"The pattern covers Q = {q[0]:.2f}-{q[-1]:.2f} Å^-1, outside "
            f"the model's grid {grid.qmin}-{grid.qmax} Å^-1."
        )
    top = values[mask].max()
    if not top > 0:
        raise PatternFormatError(
            "The pattern has no intensity above its background: no peaks "
            "to solve from."
        )
    return (values / top).astype(np.float32), mask
