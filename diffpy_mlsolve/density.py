"""The :class:`Density` result type: a unit-cell electron density."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Density"]


@dataclass(frozen=True)
class Density:
    """Electron density on an N×N×N fractional grid of one cell.

    Attributes
    ----------
    values : ndarray (N, N, N)
        ρ in e/Å^3 at fractional points (i, j, k) / N, axes along a, b, c.
    lattice : ndarray (6,)
        a, b, c (Å), alpha, beta, gamma (degrees) of the cell (the
        conventional standard cell unless made otherwise).
    resolution : float or None
        d_min (Å) of the band limit: no Fourier component finer than this
        is present.
    smoothing : float
        Extra isotropic B (Å^2) added to every atom to damp truncation
        ripples (0 for none).
    label : str
        What the density is of.
    metadata : dict
        Anything else (space group, settings).
    """

    values: np.ndarray
    lattice: np.ndarray
    resolution: float | None = None
    smoothing: float = 0.0
    label: str = ""
    metadata: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        vals = np.array(self.values, dtype=float)
        vals.setflags(write=False)
        lat = np.array(self.lattice, dtype=float)
        lat.setflags(write=False)
        object.__setattr__(self, "values", vals)
        object.__setattr__(self, "lattice", lat)

    @property
    def grid(self) -> tuple[int, int, int]:
        return tuple(self.values.shape)

    @property
    def volume(self) -> float:
        """Cell volume (Å^3)."""
        from diffpy_mlsolve.structures import cell_volume

        return float(cell_volume(self.lattice))

    @property
    def electrons(self) -> float:
        """∫ρ dV over the cell (electrons)."""
        return float(self.values.mean() * self.volume)

    def __repr__(self) -> str:
        n = "x".join(map(str, self.grid))
        res = f", d_min={self.resolution:.3f} Å" if self.resolution else ""
        return (
            f"Density({self.label or 'cell'}, grid {n}, "
            f"{self.electrons:.1f} e{res})"
        )
